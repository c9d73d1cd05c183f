"""The values the check pipeline takes and returns. No I/O, no gRPC."""

from __future__ import annotations

import os
import time
from collections.abc import Mapping
from dataclasses import dataclass, field, replace
from enum import IntEnum, StrEnum
from typing import Any


class Outcome(StrEnum):
    ALLOW = "allow"
    DENY = "deny"
    ESCALATE = "escalate"


class Check(StrEnum):
    """Which check decided. ``protocol`` is decided by the wire layer before the pipeline runs."""

    CAPABILITY = "capability"
    INTENT = "intent"
    PROVENANCE = "provenance"
    POLICY = "policy"
    BUDGET = "budget"
    UNAVAILABLE = "unavailable"
    APPROVAL = "approval"
    PROTOCOL = "protocol"


class Code(IntEnum):
    """JSON-RPC error codes of the agent-facing contract (ARCHITECTURE §2)."""

    CAPABILITY = -32010
    INTENT = -32011
    POLICY = -32012
    BUDGET = -32013
    PROVENANCE = -32014
    UNAVAILABLE = -32018
    APPROVAL = -32019
    PARSE_ERROR = -32700
    INVALID_REQUEST = -32600
    INVALID_PARAMS = -32602


CODE_OF_CHECK: Mapping[Check, Code] = {
    Check.CAPABILITY: Code.CAPABILITY,
    Check.INTENT: Code.INTENT,
    Check.PROVENANCE: Code.PROVENANCE,
    Check.POLICY: Code.POLICY,
    Check.BUDGET: Code.BUDGET,
    Check.UNAVAILABLE: Code.UNAVAILABLE,
    Check.APPROVAL: Code.APPROVAL,
}


def new_decision_id() -> str:
    """Time-ordered, unique id: 12 hex digits of milliseconds, then 16 random hex digits."""
    return f"{time.time_ns() // 1_000_000:012x}{os.urandom(8).hex()}"


@dataclass(frozen=True, slots=True)
class CheckInput:
    """One call to authorize, as the wire layer parsed it from Envoy's CheckRequest.

    ``tool`` is set for ``tools/call`` (MCP) and for ``/v1/tool-call``; such calls run the whole
    pipeline. Any other MCP message (``rpc_method`` set, ``tool`` None) needs a valid token only.
    ``deadline`` is a ``time.monotonic()`` instant after which the answer must be a deny.
    """

    transport: str  # "mcp" | "tool-call"
    http_method: str
    path: str
    source_ip: str
    token: str | None
    rpc_method: str | None = None
    tool: str | None = None
    arguments: Mapping[str, Any] = field(default_factory=dict)
    intent_prompt: str | None = None
    approval_id: str | None = None
    provenance: Any = None  # raw presented entries, validated by the provenance stage
    pinned_tenant: str | None = None  # from Envoy route context_extensions
    deadline: float | None = None
    #: The MCP tool server the request goes to, when one listener fronts several (``/v1/mcp/<server>``,
    #: Envoy route context_extensions); None for the default endpoint.
    server: str | None = None
    #: What a ``prompts/get``, ``resources/read``, ``resources/(un)subscribe`` or ``completion/complete``
    #: names: ``item_kind`` is ``prompt``, ``resource`` or ``resource_template`` (the list phase's
    #: ``input.kind``) and ``item`` the prompt's name or the resource's URI (template). Such a request is
    #: decided like the list entry of that item (:mod:`authz.check.listing`); None for other messages.
    item_kind: str | None = None
    item: str | None = None

    @property
    def full_pipeline(self) -> bool:
        return self.tool is not None


@dataclass(frozen=True, slots=True)
class Decision:
    """The pipeline's answer. A denial is this value, never an exception.

    ``data`` is the JSON-RPC ``error.data`` extras (scope/limit/resets_at for budget, approval_id for
    approvals, retry_after_ms for unavailable); ``check``/``reason``/``decision_id`` are always added by
    the wire layer. The remaining fields feed the audit chain and the ``x-tessera-*`` headers.
    """

    decision_id: str
    outcome: Outcome
    check: Check | None = None
    reason: str = ""
    data: Mapping[str, Any] = field(default_factory=dict)
    tenant: str | None = None
    agent: str | None = None
    token_id: str | None = None
    jti: str | None = None
    tool: str | None = None
    rpc_method: str | None = None
    arguments_sha256: str | None = None
    argument_keys: tuple[str, ...] = ()
    prompt_sha256: str | None = None
    policy_version: int | None = None
    policy_hash: str | None = None
    approval_id: str | None = None
    latency_us: int = 0
    #: The OpenTelemetry trace this decision was made in (32 hex digits), when tracing is on.
    trace_id: str | None = None
    #: What the intent extractor matched (lexicon and catalog words, never the prompt) and whether it
    #: understood the prompt at all; empty / None when no intent was extracted.
    intent_terms: tuple[str, ...] = ()
    intent_determined: bool | None = None
    #: The memory writers whose entries were presented with the call (ARCHITECTURE §8), in order;
    #: ``(hmac)`` stands for entries under the deprecated HMAC scheme.
    memory_writers: tuple[str, ...] = ()
    #: The MCP tool server the call went to (:attr:`CheckInput.server`), None for the default endpoint.
    server: str | None = None
    #: The prompt or resource a get/read named (:attr:`CheckInput.item`), None for other messages.
    item: str | None = None

    @property
    def allowed(self) -> bool:
        return self.outcome is Outcome.ALLOW

    @property
    def code(self) -> int | None:
        """The JSON-RPC error code, None for an allow."""
        if self.outcome is Outcome.ALLOW:
            return None
        if self.outcome is Outcome.ESCALATE:
            return int(Code.APPROVAL)
        if self.check in CODE_OF_CHECK:
            return int(CODE_OF_CHECK[self.check])
        return int(self.data.get("code", Code.INVALID_REQUEST))


#: Retry hint sent with every -32018 denial.
RETRY_AFTER_MS = 1000


def unavailable(decision: Decision | None, reason: str) -> Decision:
    """A -32018 deny: fail closed. From ``decision`` (keeping what it knew for the audit) or from scratch."""
    data = {"retry_after_ms": RETRY_AFTER_MS}
    if decision is None:
        return Decision(new_decision_id(), Outcome.DENY, Check.UNAVAILABLE, reason, data)
    return replace(decision, outcome=Outcome.DENY, check=Check.UNAVAILABLE, reason=reason, data=data)
