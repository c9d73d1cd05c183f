# Tessera demo policy for the invoice tools of the demo MCP server.
#
# Contract: data.tessera.decision is one object
#   {allow: bool, escalate: bool?, reason: string?, requires_step_up: bool?, quorum: int >= 1?}
# and escalate: true means "a human must approve" (see authz.policy).
#
#   read_invoice, list_invoices    allowed
#   transfer_funds                 amount must be a positive number; up to 10000 allowed;
#                                  above 10000 escalates (two approvers above 100000) unless
#                                  input.approval.status == "approved"
#                                  with memory provenance presented, the iban must occur in the
#                                  content of a verified memory entry (the planted-IBAN defence; a
#                                  tenant makes provenance mandatory with provenance_required_tools)
#   delete_invoice                 denied
#   anything else                  denied (default deny)
#
# Phases: input.phase is "call" for a tool call and "list" when Tessera decides whether tools/list shows
# a tool to this caller (no arguments then). A tool is listed when the list phase allows or escalates:
# transfer_funds is listed (whether a call passes depends on its amount), delete_invoice is not (every
# call of it is denied).
package tessera

import rego.v1

transfer_threshold := 10000

# Above this amount an escalation needs two operators.
two_approver_threshold := 100000

read_only_tools := {"read_invoice", "list_invoices"}

default decision := {"allow": false, "reason": "tool is not permitted by the demo policy (default deny)"}

decision := {"allow": true, "reason": "read-only invoice tool"} if input.tool in read_only_tools

decision := {
	"allow": false,
	"reason": "delete_invoice is not permitted: invoices are retained for audit",
} if input.tool == "delete_invoice"

decision := transfer_decision if {
	input.tool == "transfer_funds"
	not listing
}

decision := {"allow": true, "reason": "transfer_funds is listed: each call is judged by its amount"} if {
	input.tool == "transfer_funds"
	listing
}

# Inputs recorded before phases existed have no input.phase: they are calls.
listing if input.phase == "list"

amount := input.arguments.amount

# A granted approval turns the escalation into an allow; the deny branches above it still win.
approved if input.approval.status == "approved"

transfer_decision := {"allow": false, "reason": "transfer_funds needs a numeric 'amount' argument"} if {
	not is_number(amount)
} else := {"allow": false, "reason": "transfer amount must be positive"} if {
	amount <= 0
} else := {"allow": false, "reason": "the transfer's iban does not come from a verified memory entry"} if {
	input.provenance.presented
	not iban_from_memory
} else := {"allow": true, "reason": sprintf("transfer of %v is within the %v limit", [amount, transfer_threshold])} if {
	amount <= transfer_threshold
} else := {"allow": true, "reason": sprintf("transfer of %v approved by an operator", [amount])} if {
	approved
} else := {
	"allow": false,
	"escalate": true,
	"quorum": approvers_needed,
	"reason": sprintf("transfer of %v exceeds the %v threshold and needs approval", [amount, transfer_threshold]),
}

approvers_needed := 2 if amount > two_approver_threshold
else := 1

# The IBAN was read from memory a registered writer signed (the agent presented that entry's content).
iban_from_memory if {
	some entry in input.provenance.entries
	entry.verified
	is_string(input.arguments.iban)
	contains(entry.content, input.arguments.iban)
}
