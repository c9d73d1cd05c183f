"""The approval quorum rule both stores apply inside their decision transaction (ARCHITECTURE §7).

A quorum counts people, not keys: each recorded decision names the principal of the deciding admin key
(older decisions without one count as their operator), a principal decides an approval at most once,
and ``quorum`` distinct approving principals approve it; one rejection decides it.
"""

from __future__ import annotations

from typing import Any

from authz.errors import FailedPrecondition
from authz.storage.models import Approval


def _decider(decision: dict[str, Any]) -> str:
    return str(decision.get("principal") or decision["operator"])


def approving_principals(approval: Approval) -> set[str]:
    """The distinct principals who approved ``approval`` (what its quorum counts)."""
    return {_decider(d) for d in approval.decisions if d.get("verdict") == "approve"}


def add_decision(
    approval: Approval, operator: str, principal: str | None, verdict: str, note: str, now: float
) -> tuple[list[dict[str, Any]], str]:
    """The decisions and status after one more verdict (the stores' shared rule; they check that the
    approval is pending). FailedPrecondition when that principal (or operator) has decided already."""
    if verdict not in ("approve", "reject"):
        raise FailedPrecondition(f"verdict must be 'approve' or 'reject', not {verdict!r}")
    decider = principal or operator
    if any(_decider(d) == decider or d["operator"] == operator for d in approval.decisions):
        raise FailedPrecondition(
            f"{'principal' if principal else 'operator'} {decider!r} has already decided approval "
            f"{approval.approval_id!r}"
        )
    decision: dict[str, Any] = {"operator": operator, "verdict": verdict, "note": note, "at": now}
    if principal:
        decision["principal"] = principal
    decisions = [*approval.decisions, decision]
    if verdict == "reject":
        return decisions, "rejected"
    approved = {_decider(d) for d in decisions if d["verdict"] == "approve"}
    return decisions, "approved" if len(approved) >= approval.quorum else "pending"
