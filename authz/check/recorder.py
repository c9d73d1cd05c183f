"""Where decisions go once made: the audit chain (authz.audit) implements this Protocol."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Protocol

from authz.check.models import Decision


class DecisionRecorder(Protocol):
    async def record(self, decisions: Sequence[Decision]) -> Sequence[tuple[str, int, str]] | None:
        """Durably record the decisions; return only once they are committed. Raise if they are not.
        Returns where each event landed, ``(tenant, seq, hash)`` in order (None: a recorder without a
        chain); signed receipts carry the allow's place."""

    def defer(self, decisions: Sequence[Decision]) -> None:
        """Decisions answered (denied) although :meth:`record` failed: keep them to write once the store
        is back, or record the gap. Never raises, never waits."""


class DiscardingRecorder:
    """Records nothing. Only for benchmarks that isolate the pipeline; never the default."""

    async def record(self, decisions: Sequence[Decision]) -> None:
        return None

    def defer(self, decisions: Sequence[Decision]) -> None:
        return None
