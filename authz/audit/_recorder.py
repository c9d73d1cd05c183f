"""The check path's :class:`~authz.check.DecisionRecorder`: decisions → audit chain, with group commit."""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable, Coroutine, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, TypeVar

from authz.audit._events import chain_tenant, event_from_decision, outage_event, vouched_event_from_decision
from authz.errors import ConfigError, StorageError, StoreUnavailable
from authz.storage.protocols import AuditStore

if TYPE_CHECKING:
    from authz.check.models import Decision

log = logging.getLogger("tessera.audit")

T = TypeVar("T")

#: Upper bound of events per transaction; one record() call is never split across transactions.
DEFAULT_MAX_BATCH = 1024
#: Events of decisions answered during a store outage kept in memory for writing later; beyond this,
#: only their count per tenant is kept (and written as one outage event per tenant).
DEFAULT_MAX_BACKLOG = 10_000


def _now_ms() -> int:
    return time.time_ns() // 1_000_000


@dataclass
class RecorderStats:
    """Counters for metrics and tests."""

    transactions: int = 0
    events: int = 0
    failed_transactions: int = 0
    largest_batch: int = 0
    #: Decisions answered without their event being committed (the store was down): kept in the backlog
    #: and written once the store is back, or, past the backlog's bound, counted into an outage event.
    unrecorded: int = 0
    backfilled: int = 0
    lost: int = 0


#: Where an event landed in its chain: ``(tenant, seq, hash)``.
Position = tuple[str, int, str]


class _Waiter:
    __slots__ = ("events", "future")

    def __init__(self, events: list[tuple[str, dict[str, Any]]], future: asyncio.Future[list[Position]]):
        self.events = events
        self.future = future


class ChainRecorder:
    """Writes every decision to its tenant's audit chain before the decision may be answered.

    Group commit: ``record()`` queues its events and waits; one writer task drains the queue, writing
    everything queued so far in ONE ``append_events`` transaction and then resolving every waiter of that
    transaction. Calls that arrive in the same event-loop turn, or while a write is in progress, share
    the next transaction, so throughput grows with load while each caller still returns only after its
    events are committed. When a write fails, every ``record()`` waiting on it raises
    :class:`~authz.errors.StorageError` (the check service then denies); later calls try again.
    """

    def __init__(
        self,
        store: AuditStore,
        *,
        max_batch: int = DEFAULT_MAX_BATCH,
        clock_ms: Callable[[], int] = _now_ms,
        inline: bool | None = None,
        max_backlog: int = DEFAULT_MAX_BACKLOG,
    ):
        if max_batch < 1:
            raise ConfigError("the audit batch size must be at least 1")
        self._store = store
        self._max_batch = max_batch
        self._clock_ms = clock_ms
        self._queue: list[_Waiter] = []
        self._writer: asyncio.Task[None] | None = None
        self._closed = False
        # A store whose append completes without suspending (SQLite, written on the event-loop thread)
        # is written inline: under grpc.aio a suspended handler costs ~120 µs of scheduling, more than
        # the commit a batch would save. Stores doing network I/O (PostgreSQL) use group commit.
        # ``inline`` overrides the store's preference (tests exercise group commit on SQLite too).
        self._inline = bool(getattr(store, "appends_inline", False)) if inline is None else inline
        self.stats = RecorderStats()
        self._max_backlog = max_backlog
        self._backlog: list[tuple[str, dict[str, Any]]] = []
        self._lost: dict[str, list[int]] = {}  # tenant -> [count, first_ms, last_ms]

    def defer(self, decisions: Sequence[Decision]) -> None:
        """Keep the events of decisions that were answered although :meth:`record` failed (the check
        service denied them: the store is down). They are written, marked ``backfilled``, before the
        next events once the store is back; past the backlog's bound only a count per tenant is kept
        and written as an ``audit.outage`` event. Never raises, never waits."""
        if not decisions:
            return
        time_ms = self._clock_ms()
        self.stats.unrecorded += len(decisions)
        for d in decisions:
            tenant = chain_tenant(d)
            if len(self._backlog) < self._max_backlog:
                event = event_from_decision(d, time_ms=time_ms)
                event["tessera"]["backfilled"] = True
                self._backlog.append((tenant, event))
            else:
                lost = self._lost.setdefault(tenant, [0, time_ms, time_ms])
                lost[0] += 1
                lost[2] = time_ms
                self.stats.lost += 1
        log.error(
            "%d decisions answered without an audit event (the store is unavailable); %d kept for "
            "writing when it is back, %d counted as an outage",
            len(decisions),
            len(self._backlog),
            sum(count for count, _, _ in self._lost.values()),
        )

    @property
    def backlog(self) -> int:
        """Events waiting for the store (plus outage events still to write)."""
        return len(self._backlog) + len(self._lost)

    def _take_backlog(self) -> tuple[list[tuple[str, dict[str, Any]]], dict[str, list[int]]]:
        backlog, lost = self._backlog, self._lost
        self._backlog, self._lost = [], {}
        return backlog, lost

    def _restore_backlog(self, backlog: list[tuple[str, dict[str, Any]]], lost: dict[str, list[int]]) -> None:
        self._backlog[:0] = backlog
        for tenant, (count, first, last) in lost.items():
            mine = self._lost.setdefault(tenant, [0, first, last])
            mine[0] += count
            mine[1], mine[2] = min(mine[1], first), max(mine[2], last)

    def _with_backlog(
        self, events: list[tuple[str, dict[str, Any]]], backlog, lost
    ) -> list[tuple[str, dict[str, Any]]]:
        time_ms = self._clock_ms()
        gaps = [
            (tenant, outage_event(tenant, count, first, last, time_ms=time_ms))
            for tenant, (count, first, last) in sorted(lost.items())
        ]
        return [*backlog, *gaps, *events]

    async def flush_backlog(self) -> bool:
        """Write the backlog now (e.g. on shutdown); True when nothing is left waiting."""
        if not self._backlog and not self._lost:
            return True
        backlog, lost = self._take_backlog()
        try:
            await self._store.append_events(self._with_backlog([], backlog, lost))
        except Exception as exc:
            self._restore_backlog(backlog, lost)
            log.warning("audit backlog of %d events still waiting for the store: %s", len(backlog), exc)
            return False
        self._count_backfilled(backlog, lost)
        return True

    def _count_backfilled(self, backlog, lost) -> None:
        if backlog or lost:
            self.stats.backfilled += len(backlog)
            log.warning(
                "the store is back: wrote %d backfilled audit events and %d outage events",
                len(backlog),
                len(lost),
            )

    async def record(self, decisions: Sequence[Decision]) -> list[Position]:
        """Append the decisions' events; return once they are committed (with where each landed, in
        order: a signed receipt names its allow's place in the chain), raise if they are not."""
        if not decisions:
            return []
        if self._closed:
            raise StorageError("the audit recorder is closed")
        time_ms = self._clock_ms()
        events = [(chain_tenant(d), vouched_event_from_decision(d, time_ms=time_ms)) for d in decisions]
        if self._backlog or self._lost:
            return await self._record_with_backlog(events)
        if self._inline and not self._queue and (self._writer is None or self._writer.done()):
            return await self._write_inline(events)
        return await self._submit(events)

    async def _record_with_backlog(self, events: list[tuple[str, dict[str, Any]]]) -> list[Position]:
        # The backlog goes first, in the same transaction: the chain keeps the order decisions were
        # answered in, and a failure leaves the backlog intact for the next attempt.
        backlog, lost = self._take_backlog()
        try:
            written = await self._write_inline(self._with_backlog(events, backlog, lost))
        except BaseException:
            self._restore_backlog(backlog, lost)
            raise
        self._count_backfilled(backlog, lost)
        return written[len(written) - len(events) :]

    async def _write_inline(self, events: list[tuple[str, dict[str, Any]]]) -> list[Position]:
        try:
            written = await self._store.append_events(events)
        except Exception as exc:
            self.stats.failed_transactions += 1
            log.error("audit write of %d events failed: %s", len(events), exc)
            raise _failure(exc) from exc
        self.stats.transactions += 1
        self.stats.events += len(events)
        self.stats.largest_batch = max(self.stats.largest_batch, len(events))
        return list(written or ())

    async def record_events(self, events: Sequence[tuple[str, dict[str, Any]]]) -> None:
        """Append ready-made ``(tenant, event)`` pairs (e.g. :func:`admin_event`) through the same queue."""
        if not events:
            return
        if self._closed:
            raise StorageError("the audit recorder is closed")
        await self._submit(list(events))

    async def _submit(self, events: list[tuple[str, dict[str, Any]]]) -> list[Position]:
        loop = asyncio.get_running_loop()
        waiter = _Waiter(events, loop.create_future())
        self._queue.append(waiter)
        if self._writer is None or self._writer.done():
            self._writer = loop.create_task(self._drain(), name="audit-group-commit")
        # If this caller is cancelled its events may still be written; that is harmless (the decision
        # was never answered), whereas dropping them from a batch already sent is impossible.
        return await waiter.future

    async def _drain(self) -> None:
        # The task first runs after every callback already scheduled in this loop turn, so concurrent
        # record() calls of the same turn are in the queue by then.
        while self._queue:
            batch = self._take_batch()
            events = [event for waiter in batch for event in waiter.events]
            try:
                written = list(await self._store.append_events(events) or ())
            except BaseException as exc:
                self.stats.failed_transactions += 1
                log.error("audit write of %d events failed: %s", len(events), exc)
                for waiter in batch:
                    if not waiter.future.done():
                        waiter.future.set_exception(_failure(exc))
                if not isinstance(exc, Exception):  # cancelled or interpreter exit: fail the rest too
                    self._fail_queue(exc)
                    raise
                continue
            self.stats.transactions += 1
            self.stats.events += len(events)
            self.stats.largest_batch = max(self.stats.largest_batch, len(events))
            offset = 0
            for waiter in batch:
                if not waiter.future.done():
                    waiter.future.set_result(written[offset : offset + len(waiter.events)])
                offset += len(waiter.events)

    def _take_batch(self) -> list[_Waiter]:
        count, taken = 0, 0
        for waiter in self._queue:
            if taken and count + len(waiter.events) > self._max_batch:
                break
            count += len(waiter.events)
            taken += 1
        batch, self._queue = self._queue[:taken], self._queue[taken:]
        return batch

    def _fail_queue(self, exc: BaseException) -> None:
        queue, self._queue = self._queue, []
        for waiter in queue:
            if not waiter.future.done():
                waiter.future.set_exception(_failure(exc))

    async def aclose(self) -> None:
        """Refuse new records and wait until everything queued has been written (or has failed); then
        a last attempt at the backlog (what is still waiting is logged as lost)."""
        self._closed = True
        writer = self._writer
        if writer is not None and not writer.done():
            await asyncio.shield(writer)
        if not await self.flush_backlog():
            log.error("audit backlog lost at shutdown: %d events", self.backlog)


def _failure(exc: BaseException) -> StorageError:
    """A fresh exception per waiter (one shared instance would collect every waiter's traceback)."""
    kind = StoreUnavailable if isinstance(exc, StoreUnavailable | asyncio.CancelledError) else StorageError
    error = kind(f"the audit chain write failed: {exc or type(exc).__name__}")
    error.__cause__ = exc
    return error


def make_recorder(config: Any, store: Any) -> ChainRecorder:
    """The recorder a check service uses (called by :mod:`authz.server.app`)."""
    if not callable(getattr(store, "append_events", None)):
        raise ConfigError(f"{type(store).__name__} does not implement the audit store")
    return ChainRecorder(store)


async def append_admin_event(
    store: AuditStore,
    tenant: str,
    actor: str,
    action: str,
    target: str,
    details: Any = None,
    *,
    time_ms: int | None = None,
) -> tuple[str, int, str]:
    """Audit one admin mutation in the tenant's chain (committed on return); ``(tenant, seq, hash)``."""
    from authz.audit._events import admin_event

    event = admin_event(
        tenant, actor, action, target, details, time_ms=_now_ms() if time_ms is None else time_ms
    )
    (written,) = await store.append_events([(tenant, event)])
    return written


async def audited_mutation(
    store: AuditStore,
    mutation: Callable[[], Coroutine[Any, Any, T]],
    tenant: str,
    actor: str,
    action: str,
    target: str | Callable[[T], str],
    details: Any = None,
) -> T:
    """Run a store mutation and audit it in ONE transaction (:meth:`AuditStore.run_audited`): when the
    event cannot be written, the change does not stand. ``target`` and ``details`` may be functions of
    the mutation's result (e.g. the version a promotion created)."""
    from authz.audit._events import admin_event

    time_ms = _now_ms()

    def events(result: T) -> list[tuple[str, dict[str, Any]]]:
        where = target(result) if callable(target) else target
        what = details(result) if callable(details) else details
        return [(tenant, admin_event(tenant, actor, action, where, what, time_ms=time_ms))]

    return await store.run_audited(mutation, events)
