"""The policy's answer as a value, and the strict reading of ``data.tessera.decision``."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from authz.policy._engine import EngineResult

__all__ = ["DECISION_KEYS", "OUTCOMES", "PolicyResult", "result_from_engine"]

#: The three answers a policy can give.
OUTCOMES = frozenset({"allow", "deny", "escalate"})
#: Every key a decision object may carry; anything else is rejected (a typo such as ``"allowed"`` or
#: ``"escalte"`` must not silently change what the policy meant).
DECISION_KEYS = ("allow", "escalate", "reason", "requires_step_up", "quorum")
#: Reasons longer than this are cut (they travel in JSON-RPC errors, headers and audit events).
MAX_REASON_CHARS = 1000

_DEFAULT_REASONS = {
    "allow": "allowed by policy",
    "deny": "denied by policy",
    "escalate": "policy requires human approval",
}


@dataclass(frozen=True, slots=True)
class PolicyResult:
    """What a policy decided for one call.

    ``outcome`` is ``"allow"``, ``"deny"`` or ``"escalate"``. ``reason`` is never empty (a default is
    filled in when the policy gives none). ``requires_step_up`` and ``quorum`` are passed through from
    the decision (``quorum`` is ``None`` when the policy did not set it: the approval default applies).
    ``error`` is True when the deny comes from a broken policy (evaluation error, undefined or badly
    shaped decision, unusable input) rather than from the policy's own logic; the pipeline still denies,
    but can report and alert on it differently.
    """

    outcome: str
    reason: str
    requires_step_up: bool = False
    quorum: int | None = None
    error: bool = False

    def __post_init__(self) -> None:
        if self.outcome not in OUTCOMES:
            raise ValueError(f"outcome must be one of {sorted(OUTCOMES)}, got {self.outcome!r}")
        if self.error and self.outcome != "deny":
            raise ValueError("an error result must be a deny")

    @property
    def allowed(self) -> bool:
        return self.outcome == "allow"

    @property
    def escalated(self) -> bool:
        return self.outcome == "escalate"

    @property
    def denied(self) -> bool:
        return self.outcome == "deny"

    @classmethod
    def deny(cls, reason: str, *, error: bool = False) -> PolicyResult:
        return cls("deny", reason, error=error)


def _json_type(value: Any) -> str:
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "boolean"
    if isinstance(value, int | float):
        return "number"
    if isinstance(value, str):
        return "string"
    if isinstance(value, list):
        return "array"
    if isinstance(value, dict):
        return "object"
    return type(value).__name__


def _broken(reason: str) -> PolicyResult:
    return PolicyResult("deny", reason, error=True)


def _wrong_type(key: str, expected: str, value: Any) -> PolicyResult:
    return _broken(
        f"policy decision has wrong type for '{key}': expected {expected}, got {_json_type(value)}"
    )


def result_from_engine(engine: EngineResult) -> PolicyResult:
    """Turn an engine result into a :class:`PolicyResult`; anything but one well-formed decision denies.

    Decision semantics (documented contract):

    ======  ========  =========
    allow   escalate  outcome
    ======  ========  =========
    true    absent/f  allow
    true    true      escalate
    false   true      escalate
    false   absent/f  deny
    ======  ========  =========

    ``escalate: true`` always means "a human must approve" whatever ``allow`` says: a policy that
    wants a hard deny says ``allow: false`` and leaves ``escalate`` unset. Whether an approval that was
    granted turns the escalation into an allow is the policy's business (``input.approval``).
    """
    if engine.kind == "undefined":
        return _broken("policy returned no decision (data.tessera.decision is undefined)")
    if engine.kind == "error":
        return _broken(engine.message or "policy evaluation failed")
    if len(engine.values) != 1:
        return _broken(
            f"policy returned {len(engine.values)} decisions "
            "(data.tessera.decision must have exactly one value)"
        )
    decision = engine.values[0]
    if not isinstance(decision, dict):
        return _broken(f"policy decision must be an object, got {_json_type(decision)}")
    unknown = sorted(set(decision) - set(DECISION_KEYS))
    if unknown:
        names = ", ".join(repr(k) for k in unknown)
        return _broken(f"policy decision has unknown key(s) {names} (allowed: {', '.join(DECISION_KEYS)})")
    if "allow" not in decision:
        return _broken("policy decision is missing the required key 'allow'")
    allow = decision["allow"]
    if not isinstance(allow, bool):
        return _wrong_type("allow", "boolean", allow)
    escalate = decision.get("escalate", False)
    if not isinstance(escalate, bool):
        return _wrong_type("escalate", "boolean", escalate)
    step_up = decision.get("requires_step_up", False)
    if not isinstance(step_up, bool):
        return _wrong_type("requires_step_up", "boolean", step_up)
    reason = decision.get("reason", "")
    if not isinstance(reason, str):
        return _wrong_type("reason", "string", reason)
    quorum: int | None = None
    if "quorum" in decision:
        raw = decision["quorum"]
        if isinstance(raw, bool) or not isinstance(raw, int | float):
            return _wrong_type("quorum", "integer", raw)
        if isinstance(raw, float) and not raw.is_integer():
            return _broken(f"policy decision has invalid 'quorum': expected an integer, got {raw}")
        if raw < 1:
            return _broken(f"policy decision has invalid 'quorum': must be at least 1, got {raw:g}")
        quorum = int(raw)
    outcome = "escalate" if escalate else ("allow" if allow else "deny")
    reason = reason.strip() or _DEFAULT_REASONS[outcome]
    if len(reason) > MAX_REASON_CHARS:
        reason = reason[: MAX_REASON_CHARS - 1] + "…"
    return PolicyResult(outcome, reason, requires_step_up=step_up, quorum=quorum)
