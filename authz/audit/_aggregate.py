"""Repeated unauthenticated denials, aggregated per source and window in the ``_gateway`` chain.

Anyone who can reach Envoy can make Tessera deny a tokenless request; if every such denial were its own
audit event, the ``_gateway`` chain would be a storage lever for the whole network. So per (source
address, check, code) and window (60 s by default):

* the **first** denial is recorded like any decision (committed before it is answered), so the chain
  always holds the evidence of a source's first attempt and its full reason;
* the **following** ones in that window are only counted, and when the window closes one event records
  them: ``rpc_method`` ``"aggregate"``, ``data.count``, ``data.source_ip``, ``data.window_start``/
  ``window_end`` (RFC 3339), ``data.first_decision_id``/``last_decision_id``.

Closed windows are written with the next decision that passes through (whatever its source) and at
shutdown (:meth:`UnauthenticatedDenials.aclose`). At most ``max_sources`` windows are open; past that
the oldest is closed early. Only denials that belong to no tenant (the ``_gateway`` chain) and were
decided on the token or the request's form qualify; everything else is recorded one event per decision.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from authz.check.models import Check, Decision, Outcome, new_decision_id

log = logging.getLogger("tessera.audit")

_AGGREGATED_CHECKS = (Check.CAPABILITY, Check.PROTOCOL)


@dataclass(slots=True)
class _Window:
    first: Decision
    source: str
    started: float  # wall clock
    expires: float  # monotonic
    count: int = 0
    last_decision_id: str = ""


def _rfc3339(epoch: float) -> str:
    return datetime.fromtimestamp(epoch, UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")


class UnauthenticatedDenials:
    """Wraps a :class:`~authz.check.DecisionRecorder`; see the module docstring."""

    def __init__(
        self,
        recorder: Any,
        *,
        window_s: float = 60.0,
        max_sources: int = 10_000,
        clock: Callable[[], float] = time.monotonic,
        wall: Callable[[], float] = time.time,
    ):
        self._recorder = recorder
        self._window_s = window_s
        self._max_sources = max_sources
        self._clock = clock
        self._wall = wall
        self._windows: dict[tuple[str, str, int | None], _Window] = {}

    @staticmethod
    def qualifies(decisions: Sequence[Decision]) -> bool:
        return len(decisions) == 1 and (
            decisions[0].tenant is None
            and decisions[0].outcome is Outcome.DENY
            and decisions[0].check in _AGGREGATED_CHECKS
        )

    async def record(self, decisions: Sequence[Decision], source: str) -> list[tuple[str, int, str]]:
        """Record ``decisions`` (one request's), committed on return unless counted into a window;
        where their events landed (``(tenant, seq, hash)`` each; empty when counted into a window)."""
        now = self._clock()
        closed = self._close_due(now)
        if self.qualifies(decisions):
            decision = decisions[0]
            key = (source, str(decision.check), decision.code)
            window = self._windows.get(key)
            if window is not None and window.expires > now:
                window.count += 1
                window.last_decision_id = decision.decision_id
                if closed:
                    await self._write_closed(closed)
                return []
            if window is not None:  # expired but not yet at the front of the queue
                del self._windows[key]
                if window.count:
                    closed.append(self._summary(window))
            if len(self._windows) >= self._max_sources:
                oldest = next(iter(self._windows))
                early = self._windows.pop(oldest)
                if early.count:
                    closed.append(self._summary(early))
            self._windows[key] = _Window(decision, source, self._wall(), now + self._window_s)
        try:
            written = await self._recorder.record([*decisions, *closed])
        except Exception:
            self._defer(closed)  # the caller defers its own decisions; the summaries are ours
            raise
        return list(written or ())[: len(decisions)]

    def _close_due(self, now: float) -> list[Decision]:
        closed: list[Decision] = []
        while self._windows:
            key = next(iter(self._windows))
            window = self._windows[key]
            if window.expires > now:
                break
            del self._windows[key]
            if window.count:
                closed.append(self._summary(window))
        return closed

    async def _write_closed(self, closed: list[Decision]) -> None:
        try:
            await self._recorder.record(closed)
        except Exception as exc:  # the counted denials were answered already: keep them for later
            log.error("could not record %d aggregated denial events: %s", len(closed), exc)
            self._defer(closed)

    def _defer(self, closed: list[Decision]) -> None:
        defer = getattr(self._recorder, "defer", None)
        if closed and defer is not None:
            defer(closed)

    def _summary(self, window: _Window) -> Decision:
        first = window.first
        data: dict[str, Any] = {
            "count": window.count,
            "source_ip": window.source,
            "window_start": _rfc3339(window.started),
            "window_end": _rfc3339(self._wall()),
            "first_decision_id": first.decision_id,
            "last_decision_id": window.last_decision_id,
        }
        if first.check is Check.PROTOCOL:
            data["code"] = first.code
        return Decision(
            decision_id=new_decision_id(),
            outcome=Outcome.DENY,
            check=first.check,
            reason=f"{window.count} more denials from {window.source} like the first: {first.reason}",
            data=data,
            rpc_method="aggregate",
        )

    async def aclose(self) -> None:
        """Write every open window's count (call before the recorder is closed)."""
        closed = [self._summary(w) for w in self._windows.values() if w.count]
        self._windows.clear()
        if closed:
            await self._write_closed(closed)
