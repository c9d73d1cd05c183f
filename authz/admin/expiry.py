"""Approval timeouts as events: an escalation nobody decided before ``expires_at`` is moved to
``expired`` and, in the same transaction, an ``approval.expired`` event (actor ``tessera``) is written to
its tenant's chain, where the SIEM sinks and notification routes see it (at-least-once, like every event).

Runs in the admin service (:class:`ApprovalExpiry`, every ``TESSERA_WEBHOOK_POLL_S``). Each approval
times out once across replicas (:meth:`~authz.storage.protocols.ApprovalStore.expire_approvals` is atomic).
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable
from typing import Any

from authz.audit import admin_event
from authz.storage import Approval, Store

log = logging.getLogger("tessera.admin")
SYSTEM_ACTOR = "tessera"


def _events(approvals: list[Approval]) -> list[tuple[str, dict[str, Any]]]:
    now_ms = int(time.time() * 1000)
    return [
        (
            a.tenant,
            admin_event(
                a.tenant,
                SYSTEM_ACTOR,
                "approval.expired",
                f"approval:{a.approval_id}",
                {
                    "approval_id": a.approval_id,
                    "agent": a.agent,
                    "tool": a.tool,
                    "decision_id": a.decision_id,
                    "expires_at": a.expires_at,
                    "approvals": sum(1 for d in a.decisions if d.get("verdict") == "approve"),
                    "quorum": a.quorum,
                },
                time_ms=now_ms,
            ),
        )
        for a in approvals
    ]


class ApprovalExpiry:
    """``sweep_once()`` records the approvals that timed out since the last sweep; ``run()`` loops."""

    def __init__(self, store: Store, *, interval_s: float = 2.0, clock: Callable[[], float] = time.time):
        self.store = store
        self.interval_s = interval_s
        self.clock = clock
        self.expired = 0

    async def sweep_once(self) -> list[Approval]:
        now = self.clock()
        # A read first: the write transaction (and its lock) only when something timed out.
        pending = await self.store.list_approvals(status="pending")
        if not any(a.expires_at <= now for a in pending):
            return []
        expired = await self.store.run_audited(lambda: self.store.expire_approvals(now), _events)
        self.expired += len(expired)
        return expired

    async def run(self) -> None:
        while True:
            try:
                await self.sweep_once()
            except Exception as exc:  # a store outage: the next sweep picks them up
                log.warning("recording approval timeouts failed: %s", exc)
            await asyncio.sleep(self.interval_s)
