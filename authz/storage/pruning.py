"""Scheduled pruning: budget counters and approvals of expired windows, so state stays bounded.

Every distinct token with a ``max_calls``/``max_cost`` caveat and every fixed budget window leaves a
counter row behind; every escalation leaves an approval. :class:`StatePruner` deletes what no call can
use any more (:meth:`~authz.storage.protocols.BudgetStore.prune_expired`) on an interval. It runs in the
admin service; several replicas pruning at once is harmless (the deletes are idempotent and skip rows a
reservation holds).
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable

from authz.storage.models import PruneResult
from authz.storage.protocols import BudgetStore

log = logging.getLogger("tessera.storage.pruning")


class StatePruner:
    """Calls ``store.prune_expired`` every ``interval_s``; a failed pass is logged and retried next time."""

    def __init__(
        self,
        store: BudgetStore,
        *,
        interval_s: float = 60.0,
        grace_s: float = 300.0,
        approval_retention_s: float = 86400.0,
        clock: Callable[[], float] = time.time,
    ):
        self._store = store
        self._interval_s = interval_s
        self._grace_s = grace_s
        self._approval_retention_s = approval_retention_s
        self._clock = clock
        self.passes = 0
        self.failures = 0
        self.total = PruneResult()

    async def prune_once(self) -> PruneResult:
        result = await self._store.prune_expired(
            self._clock(), grace_s=self._grace_s, approval_retention_s=self._approval_retention_s
        )
        self.passes += 1
        self.total = PruneResult(
            self.total.counters + result.counters, self.total.approvals + result.approvals
        )
        if result.counters or result.approvals:
            log.info("pruned %d budget counters and %d approvals", result.counters, result.approvals)
        return result

    async def run(self) -> None:
        while True:
            try:
                await self.prune_once()
            except asyncio.CancelledError:
                raise
            except Exception as exc:
                self.failures += 1
                log.warning("pruning expired state failed (retrying in %.0f s): %s", self._interval_s, exc)
            await asyncio.sleep(self._interval_s)
