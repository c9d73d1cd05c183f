"""End-to-end flows through the running stack: the admin API (REST through Envoy) drives what agents
see on /v1/mcp — approvals with the official ``mcp`` client, policy promotion, dry-run and rollback,
revocation, settings, and the approval webhook."""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Callable, Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import TYPE_CHECKING, Any

import grpc
import httpx2
import pytest
from mcp import ClientSession, MCPError
from mcp.client.streamable_http import streamable_http_client

from authz.admin.webhook import verify_signature
from authz.policy import default_policy_source
from tests.integration.conftest import rpc_error
from tests.sqlite_raw import raw_sqlite

if TYPE_CHECKING:
    from tests.integration.admin_support import AdminGateway

pytest_plugins = ["tests.integration.admin_support"]

IBAN = "DE89370400440532013000"
BIG = {"amount": 25000, "iban": IBAN}
MAINTENANCE = (
    "package tessera\n\nimport rego.v1\n\n"
    'default decision := {"allow": false, "reason": "maintenance: listing only"}\n\n'
    'decision := {"allow": true, "reason": "listing"} if input.tool == "list_invoices"\n'
)


def _tenant(gw: AdminGateway, name: str) -> None:
    assert gw.rest("TenantService/CreateTenant", {"tenant": name}).http == 200
    promoted = gw.rest("PolicyService/PromotePolicy", {"tenant": name, "source": default_policy_source()})
    assert promoted.http == 200 and promoted.message.policy.version == 1


def _token(gw: AdminGateway, tenant: str, agent: str = "agent-1") -> str:
    minted = gw.rest("TokenService/MintToken", {"tenant": tenant, "agent": agent, "ttl_seconds": 3600})
    assert minted.http == 200, minted.raw
    return minted.message.token


def _ready(gw: AdminGateway, token: str) -> str:
    """Wait until the check service knows the token's (new) tenant; returns the token."""
    _eventually(
        lambda: "error" not in gw.gateway.call("read_invoice", {"invoice_id": "INV-1001"}, token=token).json()
    )
    return token


def _eventually(check: Callable[[], bool], timeout: float = 10.0) -> None:
    deadline = time.monotonic() + timeout
    while not check():
        assert time.monotonic() < deadline, "the running stack did not pick up the change"
        time.sleep(0.1)


def _mcp_error(raised: BaseException) -> MCPError:
    if isinstance(raised, MCPError):
        return raised
    assert isinstance(raised, BaseExceptionGroup), repr(raised)
    matched, _ = raised.split(MCPError)
    assert matched is not None, repr(raised)
    while isinstance(matched, BaseExceptionGroup):
        matched = matched.exceptions[0]
    return matched


async def _mcp_call(gw: AdminGateway, token: str, tool: str, arguments: dict, approval_id: str | None = None):
    """One tool call with the official MCP client; returns the result or the MCPError raised."""
    headers = {"Authorization": f"Bearer {token}"}
    if approval_id:
        headers["X-Approval-Id"] = approval_id
    try:
        async with (
            httpx2.AsyncClient(headers=headers, timeout=10) as http,
            streamable_http_client(f"{gw.url}/v1/mcp", http_client=http) as streams,
            ClientSession(streams[0], streams[1]) as session,
        ):
            await session.initialize()
            return await session.call_tool(tool, arguments)
    except BaseException as raised:  # the SDK raises from inside its task group
        if isinstance(raised, (KeyboardInterrupt, SystemExit)):
            raise
        return _mcp_error(raised)


def _text(result: Any) -> str:
    return "".join(block.text for block in result.content if hasattr(block, "text"))


@pytest.fixture(scope="module")
def approvals_tenant(admin_gateway: AdminGateway) -> dict[str, str]:
    _tenant(admin_gateway, "approvals")
    return {
        "operator": admin_gateway.new_key("operator", "approvals", "alice"),
        "viewer": admin_gateway.new_key("viewer", "approvals", "bob"),
        "token": _ready(admin_gateway, _token(admin_gateway, "approvals")),
    }


# -- approvals ------------------------------------------------------------------------------------------
async def test_escalate_decide_resume_once(
    admin_gateway: AdminGateway, approvals_tenant: dict[str, str]
) -> None:
    gw, token = admin_gateway, approvals_tenant["token"]
    escalated = await _mcp_call(gw, token, "transfer_funds", BIG)
    assert isinstance(escalated, MCPError) and escalated.error.code == -32019
    approval_id = escalated.error.data["approval_id"]
    assert escalated.error.data["resume_header"] == "X-Approval-Id"

    listed = gw.rest(
        "ApprovalService/ListApprovals",
        {"tenant": "approvals", "status": "APPROVAL_STATUS_PENDING"},
        approvals_tenant["viewer"],
    )
    (pending,) = [a for a in listed.message.approvals if a.approval_id == approval_id]
    assert (pending.tool, pending.agent, pending.quorum) == ("transfer_funds", "agent-1", 1)

    # Still pending: resuming answers the same escalation.
    again = await _mcp_call(gw, token, "transfer_funds", BIG, approval_id)
    assert isinstance(again, MCPError) and again.error.code == -32019
    # A viewer cannot decide; the operator's identity comes from the key.
    decide = {
        "tenant": "approvals",
        "approval_id": approval_id,
        "verdict": "VERDICT_APPROVE",
        "note": "checked",
    }
    assert gw.rest("ApprovalService/DecideApproval", decide, approvals_tenant["viewer"]).http == 403
    decided = gw.rest("ApprovalService/DecideApproval", decide, approvals_tenant["operator"])
    assert decided.http == 200 and decided.raw["approval"]["status"] == "APPROVAL_STATUS_APPROVED"
    assert decided.raw["approval"]["decisions"][0]["operator"].startswith("alice (key ")

    # Another tool, other arguments or another agent cannot use the approval (and do not consume it).
    other_tool = await _mcp_call(gw, token, "read_invoice", {"invoice_id": "INV-1001"}, approval_id)
    assert isinstance(other_tool, MCPError) and other_tool.error.code == -32012
    other_args = await _mcp_call(gw, token, "transfer_funds", {**BIG, "amount": 25001}, approval_id)
    assert isinstance(other_args, MCPError) and other_args.error.code == -32012
    assert "different call" in other_args.error.data["reason"]
    other_agent = await _mcp_call(gw, _token(gw, "approvals", "agent-2"), "transfer_funds", BIG, approval_id)
    assert isinstance(other_agent, MCPError) and other_agent.error.code == -32012

    resumed = await _mcp_call(gw, token, "transfer_funds", BIG, approval_id)
    assert not isinstance(resumed, MCPError), resumed
    assert not resumed.is_error and "executed" in _text(resumed)
    second = await _mcp_call(gw, token, "transfer_funds", BIG, approval_id)
    assert isinstance(second, MCPError) and second.error.code == -32012
    assert "consumed" in second.error.data["reason"]
    got = gw.rest("ApprovalService/GetApproval", {"tenant": "approvals", "approval_id": approval_id})
    assert got.raw["approval"]["status"] == "APPROVAL_STATUS_CONSUMED"


async def test_rejected_and_expired_approvals_answer_policy_denials(
    admin_gateway: AdminGateway, approvals_tenant: dict[str, str]
) -> None:
    gw, token, operator = admin_gateway, approvals_tenant["token"], approvals_tenant["operator"]
    rejected = (await _mcp_call(gw, token, "transfer_funds", {**BIG, "amount": 20000})).error.data[
        "approval_id"
    ]
    decide = {"tenant": "approvals", "approval_id": rejected, "verdict": "VERDICT_REJECT", "note": "no"}
    assert gw.rest("ApprovalService/DecideApproval", decide, operator).http == 200
    after_reject = await _mcp_call(gw, token, "transfer_funds", {**BIG, "amount": 20000}, rejected)
    assert isinstance(after_reject, MCPError) and after_reject.error.code == -32012
    assert "rejected" in after_reject.error.data["reason"]

    expiring = (await _mcp_call(gw, token, "transfer_funds", {**BIG, "amount": 21000})).error.data[
        "approval_id"
    ]
    with raw_sqlite(gw.db_path) as conn:  # let the clock pass the approval's expiry
        conn.execute("UPDATE approvals SET expires_at = ? WHERE approval_id = ?", (time.time() - 1, expiring))
    late = {"tenant": "approvals", "approval_id": expiring, "verdict": "VERDICT_APPROVE"}
    refused = gw.rest("ApprovalService/DecideApproval", late, operator)
    assert (
        refused.http == 400
        and refused.code is grpc.StatusCode.FAILED_PRECONDITION
        and "expired" in refused.raw["message"]
    )
    after_expiry = await _mcp_call(gw, token, "transfer_funds", {**BIG, "amount": 21000}, expiring)
    assert isinstance(after_expiry, MCPError) and after_expiry.error.code == -32012
    assert "expired" in after_expiry.error.data["reason"]
    listed = gw.rest(
        "ApprovalService/ListApprovals", {"tenant": "approvals", "status": "APPROVAL_STATUS_EXPIRED"}
    )
    assert expiring in {a.approval_id for a in listed.message.approvals}


async def test_quorum_of_two_distinct_operators(
    admin_gateway: AdminGateway, approvals_tenant: dict[str, str]
) -> None:
    gw, token = admin_gateway, approvals_tenant["token"]
    huge = {**BIG, "amount": 150000}  # the demo policy asks two approvers above 100000
    approval_id = (await _mcp_call(gw, token, "transfer_funds", huge)).error.data["approval_id"]
    second_operator = gw.new_key("operator", "approvals", "carol")
    decide = {"tenant": "approvals", "approval_id": approval_id, "verdict": "VERDICT_APPROVE"}
    first = gw.rest("ApprovalService/DecideApproval", decide, approvals_tenant["operator"])
    assert (
        first.raw["approval"]["status"] == "APPROVAL_STATUS_PENDING"
        and first.raw["approval"]["approvals"] == 1
    )
    twice = gw.rest("ApprovalService/DecideApproval", decide, approvals_tenant["operator"])
    assert twice.http == 400  # the same operator again does not count
    still = await _mcp_call(gw, token, "transfer_funds", huge, approval_id)
    assert isinstance(still, MCPError) and still.error.code == -32019
    done = gw.rest("ApprovalService/DecideApproval", decide, second_operator)
    assert done.raw["approval"]["status"] == "APPROVAL_STATUS_APPROVED"


# -- policy lifecycle on the running stack --------------------------------------------------------------
def test_dry_run_then_promote_changes_decisions_and_rollback_restores_them(
    admin_gateway: AdminGateway,
) -> None:
    gw = admin_gateway
    _tenant(gw, "lifecycle")
    token = _token(gw, "lifecycle")
    agent = gw.gateway

    def read_allowed() -> bool:
        response = agent.call("read_invoice", {"invoice_id": "INV-1001"}, token=token)
        return "error" not in response.json()

    _eventually(read_allowed)  # the new tenant reached the check service
    assert rpc_error(agent.call("delete_invoice", {"invoice_id": "INV-1001"}, token=token))["code"] == -32012

    # Dry-run: a replay of the calls just audited says what the candidate would change.
    assert (
        gw.rest(
            "PolicyService/CreateDraft", {"tenant": "lifecycle", "name": "maintenance", "source": MAINTENANCE}
        ).http
        == 200
    )
    dry = gw.rest(
        "PolicyService/DryRunPolicy", {"tenant": "lifecycle", "draft": "maintenance", "replay_last": 10}
    )
    assert dry.http == 200 and dry.message.replayed and dry.message.evaluated >= 2
    assert dry.message.changes and dry.message.changed == len(dry.message.changes)
    for change in dry.message.changes:  # the reads would be denied; the delete was denied already
        # A read made while the new tenant's policy was still reaching the check service was recorded
        # as a deny at the time; the dry-run compares today's active policy with the candidate.
        assert change.input["tool"] == "read_invoice"
        assert (change.active_outcome, change.candidate_outcome) == (1, 2)  # allow → deny
        assert dict(change.input["arguments"]) == {"invoice_id": None}  # keys only, never values
    assert "allow" in {change.recorded_decision for change in dry.message.changes}

    promoted = gw.rest("PolicyService/PromotePolicy", {"tenant": "lifecycle", "draft": "maintenance"})
    assert promoted.http == 200 and promoted.message.policy.version == 2
    _eventually(lambda: not read_allowed())  # no restart: the check service reloads the new version
    denied = rpc_error(agent.call("read_invoice", {"invoice_id": "INV-1001"}, token=token))
    assert denied["code"] == -32012 and "maintenance" in denied["data"]["reason"]
    events = gw.rest(
        "AuditService/QueryAuditEvents", {"tenant": "lifecycle", "decision": "AUDIT_DECISION_DENY"}
    )
    assert events.message.events[-1].event["tessera"]["policy_version"] == 2

    rolled = gw.rest("PolicyService/RollbackPolicy", {"tenant": "lifecycle"})
    assert rolled.http == 200 and (rolled.message.policy.version, rolled.message.previous_version) == (1, 2)
    _eventually(read_allowed)
    history = gw.rest("PolicyService/ListPolicyHistory", {"tenant": "lifecycle"})
    assert [(v.version, v.active) for v in history.message.versions] == [(2, False), (1, True)]
    actions = [
        e.event["tessera"]["action"]
        for e in gw.rest(
            "AuditService/QueryAuditEvents", {"tenant": "lifecycle", "decision": "AUDIT_DECISION_ADMIN"}
        ).message.events
    ]
    assert actions == [
        "tenant.create",
        "policy.promote",
        "token.mint",
        "policy.draft.create",
        "policy.promote",
        "policy.rollback",
    ]
    assert gw.rest("AuditService/VerifyAuditChain", {"tenant": "lifecycle"}).message.ok


def test_revocation_and_settings_reach_the_check_service(admin_gateway: AdminGateway) -> None:
    gw = admin_gateway
    _tenant(gw, "reach")
    token = _ready(gw, _token(gw, "reach"))
    agent = gw.gateway
    read = {"invoice_id": "INV-1001"}

    settings = {
        "tenant": "reach",
        "settings": {
            "intent_mode": "INTENT_MODE_ENFORCE",
            "require_prompt": True,
            "catalog": {"tools": {"read_invoice": {"verbs": ["read", "show"], "keywords": ["invoice"]}}},
        },
        "update_mask": "intentMode,requirePrompt,catalog",
    }
    assert gw.rest("TenantService/UpdateTenantSettings", settings).http == 200
    _eventually(lambda: "error" in agent.call("read_invoice", read, token=token).json())
    assert rpc_error(agent.call("read_invoice", read, token=token))["code"] == -32011

    info = gw.rest("TokenService/InspectToken", {"token": token}).message
    assert (
        gw.rest("TokenService/RevokeToken", {"tenant": "reach", "jti": info.jti, "reason": "test"}).http
        == 200
    )
    _eventually(lambda: rpc_error(agent.call("read_invoice", read, token=token))["code"] == -32010)
    assert gw.rest("TokenService/InspectToken", {"token": token}).message.revoked


# -- the approval webhook -------------------------------------------------------------------------------
class Receiver:
    def __init__(self) -> None:
        self.received: list[tuple[dict[str, str], bytes]] = []
        outer = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                body = self.rfile.read(int(self.headers["content-length"]))
                outer.received.append(({k.lower(): v for k, v in self.headers.items()}, body))
                self.send_response(200)
                self.end_headers()

            def log_message(self, *args: Any) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}/tessera"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()


@pytest.fixture
def receiver() -> Iterator[Receiver]:
    r = Receiver()
    yield r
    r.server.shutdown()
    r.server.server_close()


async def test_pending_approvals_are_posted_to_the_webhook_signed(
    admin_gateway: AdminGateway, receiver: Receiver
) -> None:
    gw = admin_gateway
    _tenant(gw, "hooks")
    update = {
        "tenant": "hooks",
        "settings": {"approval_webhook_url": receiver.url},
        "update_mask": "approvalWebhookUrl",
    }
    assert gw.rest("TenantService/UpdateTenantSettings", update).http == 200
    secret = gw.rest("TenantService/GetWebhookSecret", {"tenant": "hooks"}).message

    escalated = await _mcp_call(gw, _ready(gw, _token(gw, "hooks")), "transfer_funds", BIG)
    approval_id = escalated.error.data["approval_id"]
    _eventually(lambda: bool(receiver.received), timeout=10)
    time.sleep(0.5)  # a few more polling rounds: a delivered approval is not posted again
    assert len(receiver.received) == 1
    headers, body = receiver.received[0]
    assert verify_signature(bytes.fromhex(secret.secret_hex), body, headers[secret.header])
    payload = json.loads(body)
    assert (payload["type"], payload["approval_id"], payload["tool"], payload["agent"]) == (
        "approval.pending",
        approval_id,
        "transfer_funds",
        "agent-1",
    )
    assert IBAN not in body.decode()  # argument values never leave (the reason is the policy's own text)
