"""Policy lifecycle logic: validation with diagnostics and dry-runs (ARCHITECTURE §6).

A dry-run evaluates a candidate policy and the tenant's active one on the same inputs and reports the
inputs whose outcome (allow / deny / escalate) would change. Inputs are given by the operator, or
rebuilt from the tenant's last audited tool calls (a replay).

Replay limitation: the audit chain keeps argument *keys* and a hash, never argument values, and it
keeps no intent, provenance or token caveats. A replayed input therefore carries the argument keys
with ``null`` values, ``intent: null``, no provenance and no caveats, and ``approval`` only as far as
the recorded outcome implies it (an allowed call that carried an approval id was approved, an escalated
one pending). Rules that read argument values see ``null``; compare the two policies on the rebuilt
input (what a dry-run reports), not with the decision recorded at the time.
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from authz.errors import CompileDiagnostic, InvalidArgument, PolicyCompileError
from authz.policy import CompiledPolicy, PolicyResult, compile_policy, policy_hash
from authz.storage.protocols import AuditRecord

#: Replay at most this many calls per dry-run.
MAX_REPLAY = 1000
DEFAULT_REPLAY = 100
#: A replay scans at most this many audit events per requested call (denials by earlier stages and
#: session-level calls are skipped, they never reached the policy).
_SCAN_FACTOR = 20
_SCAN_BATCH = 500
#: Checks whose decisions were made at, or after, the policy stage.
_POLICY_STAGE_CHECKS = (None, "policy", "approval", "budget")


@dataclass(frozen=True, slots=True)
class Validation:
    """The result of compiling a source without raising."""

    compiled: CompiledPolicy | None
    diagnostics: tuple[CompileDiagnostic, ...]
    content_hash: str

    @property
    def valid(self) -> bool:
        return self.compiled is not None


def validate_source(source: str, engine: str | None = None) -> Validation:
    """Compile ``source`` (on ``engine``, as the check services will); problems come back as
    diagnostics (an oversized source is one at 0:0)."""
    digest = policy_hash(source) if isinstance(source, str) else ""
    try:
        return Validation(compile_policy(source, engine=engine), (), digest)
    except PolicyCompileError as exc:
        diagnostics = tuple(exc.diagnostics) or (CompileDiagnostic(0, 0, exc.message),)
        return Validation(None, diagnostics, digest)
    except InvalidArgument as exc:
        return Validation(None, (CompileDiagnostic(0, 0, exc.message),), digest)


def compile_or_raise(source: str, engine: str | None = None) -> CompiledPolicy:
    """Compile ``source``; PolicyCompileError (with every diagnostic) when it does not compile."""
    result = validate_source(source, engine)
    if result.compiled is None:
        first = result.diagnostics[0]
        raise PolicyCompileError(f"the policy does not compile: {first}", list(result.diagnostics))
    return result.compiled


@dataclass(frozen=True, slots=True)
class DryRunItem:
    """One input evaluated by both policies."""

    index: int
    input: dict[str, Any]
    active: PolicyResult | None
    candidate: PolicyResult
    audit_seq: int = 0
    recorded_decision: str = ""
    decision_id: str = ""

    @property
    def changed(self) -> bool:
        """The outcomes differ (a tenant without an active policy denies every call)."""
        baseline = self.active.outcome if self.active is not None else "deny"
        return baseline != self.candidate.outcome


def _rfc3339(when: datetime) -> str:
    return when.astimezone(UTC).isoformat().replace("+00:00", "Z")


def complete_input(tenant: str, given: Mapping[str, Any], now: datetime | None = None) -> dict[str, Any]:
    """A policy input with every key of the contract, ``given`` winning over neutral defaults."""
    now = now or datetime.now(UTC)
    if not isinstance(given, Mapping):
        raise InvalidArgument("every dry-run input must be a JSON object")
    data: dict[str, Any] = {
        "tenant": tenant,
        "agent": "",
        "token": {"id": "", "jti": "", "caveats": []},
        "request": {"transport": "mcp", "method": "POST", "path": "/v1/mcp", "source_ip": ""},
        "tool": "",
        "arguments": {},
        "intent": None,
        "provenance": {"presented": False, "verified": False, "entries": []},
        "approval": None,
        "time": {"now": _rfc3339(now), "unix": int(now.timestamp())},
    }
    data.update(dict(given))
    return data


def replay_input(record: AuditRecord) -> tuple[dict[str, Any], str, str] | None:
    """``(input, recorded decision, decision id)`` rebuilt from one audited call, or None when the call
    never reached the policy stage (a denial by capability, intent or provenance, a session message)."""
    try:
        t = json.loads(record.event).get("tessera") or {}
    except (ValueError, AttributeError):
        return None
    decision = t.get("decision")
    if decision not in ("allow", "deny", "escalate") or not t.get("tool"):
        return None
    if t.get("check") not in _POLICY_STAGE_CHECKS:
        return None
    when = datetime.fromtimestamp(record.time_ms / 1000, UTC)
    mcp = bool(t.get("rpc_method"))
    approval = None
    if t.get("approval_id") and decision in ("allow", "escalate"):
        approval = {"id": t["approval_id"], "status": "approved" if decision == "allow" else "pending"}
    data = {
        "tenant": record.tenant,
        "agent": t.get("agent") or "",
        "token": {"id": t.get("token_id") or "", "jti": t.get("jti") or "", "caveats": []},
        "request": {
            "transport": "mcp" if mcp else "tool-call",
            "method": "POST",
            "path": "/v1/mcp" if mcp else "/v1/tool-call",
            "source_ip": "",
        },
        "tool": t["tool"],
        "arguments": {key: None for key in t.get("argument_keys") or ()},
        "intent": None,
        "provenance": {"presented": False, "verified": False, "entries": []},
        "approval": approval,
        "time": {"now": _rfc3339(when), "unix": int(when.timestamp())},
    }
    return data, decision, t.get("decision_id") or ""


async def replay_calls(
    store: Any, tenant: str, count: int
) -> list[tuple[AuditRecord, dict[str, Any], str, str]]:
    """The tenant's last ``count`` audited calls that reached the policy, oldest first, rebuilt."""
    found: list[tuple[AuditRecord, dict[str, Any], str, str]] = []
    before: int | None = None
    scanned = 0
    while len(found) < count and scanned < count * _SCAN_FACTOR:
        batch = await store.latest_events(tenant, _SCAN_BATCH, ("allow", "deny", "escalate"), before)
        if not batch:
            break
        scanned += len(batch)
        for record in batch:
            rebuilt = replay_input(record)
            if rebuilt is not None:
                found.append((record, *rebuilt))
                if len(found) == count:
                    break
        before = batch[-1].seq
    found.reverse()
    return found


def evaluate_all(
    candidate: CompiledPolicy,
    active: CompiledPolicy | None,
    inputs: Sequence[dict[str, Any]],
    replayed: Sequence[tuple[int, str, str]] | None = None,
) -> list[DryRunItem]:
    """Evaluate both policies on every input (blocking: run it in a worker thread for many inputs).

    ``replayed`` gives, per input, ``(audit seq, recorded decision, decision id)`` for a replay."""
    items = []
    for index, data in enumerate(inputs):
        seq, recorded, decision_id = replayed[index] if replayed is not None else (0, "", "")
        items.append(
            DryRunItem(
                index=index,
                input=data,
                active=active.evaluate(data) if active is not None else None,
                candidate=candidate.evaluate(data),
                audit_seq=seq,
                recorded_decision=recorded,
                decision_id=decision_id,
            )
        )
    return items


def replay_count(requested: int) -> int:
    if requested < 0:
        raise InvalidArgument("replay_last must not be negative")
    return min(requested or DEFAULT_REPLAY, MAX_REPLAY)
