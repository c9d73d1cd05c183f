"""The shared forwarder driver: cursor → batch → sink → acknowledgement, for any :class:`Sink`.

Guarantees (ARCHITECTURE §9, issue 18):

* **At-least-once, nothing skipped.** Events are read from the store (committed rows only) after the
  durable cursor of (tenant, sink); the cursor moves past a batch only once the sink acknowledged it, or
  in the same transaction that records the batch as a dead letter an operator can list and replay. A
  crash between the sink's acknowledgement and the cursor write resends that batch; receivers drop the
  duplicate by its chain hash.
* **One active instance per sink.** Each pass starts by taking or renewing the sink's lease; cursor writes
  are refused once the lease is lost, and a successor resumes from the cursor.
* **Never on the decision path.** The driver only reads the audit chain; it runs in the admin service
  process or its own ``tessera forward`` process. A slow or failing sink delays only itself.
"""

from __future__ import annotations

import asyncio
import logging
import os
import random
import socket
import time
import uuid
from collections import deque
from collections.abc import Awaitable, Callable, Sequence
from contextlib import aclosing, suppress
from dataclasses import dataclass
from typing import TypeVar

from authz.audit import audited_mutation
from authz.errors import FailedPrecondition, NotFound
from authz.forward._event import ForwardEvent, forward_event
from authz.forward._sink import Ack, Outcome, Reject, Retry, Sink
from authz.storage.models import DeadLetter
from authz.storage.protocols import Store

log = logging.getLogger("tessera.forward")
T = TypeVar("T")
#: The actor of the events the forwarder itself writes to a chain.
SYSTEM_ACTOR = "tessera"


@dataclass(frozen=True, slots=True)
class ForwarderSettings:
    """How one forwarder paces itself.

    ``batch_size`` events at most per request. A batch answered with :class:`Retry` is resent after
    ``uniform(0, min(backoff_cap_s, backoff_base_s * 2**(attempt-1)))`` seconds ("full jitter", so
    replicas and sinks recovering together do not resend in lockstep), never sooner than the receiver's
    ``Retry-After`` (itself capped at ``max_retry_after_s``); after ``max_attempts`` sends it becomes a
    dead letter. ``lease_ttl_s``: how long a crashed instance blocks its successor; the holder renews at
    least every third of it. ``poll_interval_s``: the pause once every tenant is caught up.
    ``tenants``: the chains this sink receives (None: every tenant, the gateway chain included).
    """

    batch_size: int = 500
    poll_interval_s: float = 1.0
    lease_ttl_s: float = 30.0
    backoff_base_s: float = 0.5
    backoff_cap_s: float = 60.0
    max_retry_after_s: float = 300.0
    max_attempts: int = 20
    tenants: tuple[str, ...] | None = None

    def __post_init__(self) -> None:
        if self.batch_size < 1 or self.max_attempts < 1:
            raise ValueError("batch_size and max_attempts must be at least 1")
        if self.lease_ttl_s <= 0 or self.poll_interval_s <= 0 or self.backoff_base_s < 0:
            raise ValueError("lease_ttl_s and poll_interval_s must be positive, backoff_base_s not negative")


class LeaseLost(Exception):
    """The instance no longer holds the sink's lease: stop sending, leave the cursor to the successor."""


class ChainGap(Exception):
    """The events read for a batch are not the contiguous run of seqs asked for (a missing or repeated
    seq): the store is damaged or inconsistent. Nothing is sent and the cursor stays where it is, so the
    gap is reported on every pass (log, ``last_error``) until an operator repairs it, never skipped."""


def default_holder() -> str:
    """A forwarder instance id unique across hosts and restarts (so a restarted process never mistakes
    its predecessor's lease for its own)."""
    return f"{socket.gethostname()}:{os.getpid()}:{uuid.uuid4().hex[:8]}"


class EventCache:
    """Decoded events shared by the forwarders of one process. The sinks read the same runs of the same
    chains at nearly the same time, so one store read and one JSON decode serve them all (committed
    events never change). Bounded: the oldest entries go first beyond ``max_events``."""

    def __init__(self, max_events: int = 50_000):
        self.max_events = max_events
        self._events: dict[str, dict[int, ForwardEvent]] = {}
        self._order: deque[tuple[str, int]] = deque()
        self.hits = 0
        self.misses = 0

    def run(self, tenant: str, first: int, last: int) -> list[ForwardEvent]:
        """The contiguous run ``first..`` (at most to ``last``) held, possibly empty."""
        held = self._events.get(tenant)
        out: list[ForwardEvent] = []
        if held:
            seq = first
            while seq <= last and (event := held.get(seq)) is not None:
                out.append(event)
                seq += 1
        if out:
            self.hits += 1
        else:
            self.misses += 1
        return out

    def put(self, events: Sequence[ForwardEvent]) -> None:
        for event in events:
            held = self._events.setdefault(event.tenant, {})
            if event.seq not in held:
                held[event.seq] = event
                self._order.append((event.tenant, event.seq))
        while len(self._order) > self.max_events:
            tenant, seq = self._order.popleft()
            self._events[tenant].pop(seq, None)


class CursorBatcher:
    """The cursor writes of one process's forwarders, in as few write transactions as possible.

    Each write transaction takes the database's write lock, which the check service's audit appends
    wait for (on SQLite in a busy handler that sleeps in millisecond steps, with the whole event loop
    of the check process blocked). An acknowledged batch's cursor advance therefore waits until every
    one of the ``expected()`` forwarders has one pending, or at most ``linger_s``, and all of them go in
    ONE transaction (:meth:`Store.advance_forwarder_cursors`), each under its own sink's lease. The
    forwarder continues only once its advance is committed: at-least-once is unchanged, a crash before
    the commit resends the batch.
    """

    def __init__(self, store: Store, *, linger_s: float = 0.05, expected: Callable[[], int] = lambda: 1):
        self._store = store
        self.linger_s = linger_s
        self._expected = expected
        self._pending: list[tuple[tuple[str, str, str, int, float], float, asyncio.Future[bool]]] = []
        self._flush: asyncio.Task[None] | None = None
        self._full = asyncio.Event()
        self.transactions = 0
        self.advances = 0

    async def advance(
        self, tenant: str, sink: str, holder: str, seq: int, now: float, lease_ttl_s: float = 0.0
    ) -> None:
        """As :meth:`Store.advance_forwarder_cursor` (FailedPrecondition without the lease), renewing
        the lease for ``lease_ttl_s`` in the same transaction."""
        future: asyncio.Future[bool] = asyncio.get_running_loop().create_future()
        self._pending.append(((tenant, sink, holder, seq, lease_ttl_s), now, future))
        if self._flush is None:
            self._full.clear()
            self._flush = asyncio.create_task(self._flush_soon(), name="forward:cursors")
        if len(self._pending) >= self._expected():
            self._full.set()
        if not await future:
            raise FailedPrecondition(f"forwarder {holder!r} does not hold the lease on sink {sink!r}")

    async def _flush_soon(self) -> None:
        try:
            with suppress(TimeoutError):
                await asyncio.wait_for(self._full.wait(), self.linger_s)
        finally:
            pending, self._pending, self._flush = self._pending, [], None
            try:
                applied = await self._store.advance_forwarder_cursors(
                    [advance for advance, _, _ in pending], max(now for _, now, _ in pending)
                )
            except BaseException as exc:
                for _, _, future in pending:
                    if not future.done():
                        future.set_exception(exc if isinstance(exc, Exception) else LeaseLost("stopped"))
                if not isinstance(exc, Exception):
                    raise
            else:
                self.transactions += 1
                self.advances += len(pending)
                for (_, _, future), ok in zip(pending, applied, strict=True):
                    if not future.done():
                        future.set_result(ok)


class Forwarder:
    """Forwards every tenant's committed audit events to one sink.

    ``run(stop)`` loops until ``stop`` is set; ``pass_once()`` does one pass (tests and ``--once``).
    ``clock``, ``sleep`` and ``rng`` are seams for tests.
    """

    def __init__(
        self,
        store: Store,
        sink: Sink,
        settings: ForwarderSettings | None = None,
        *,
        holder: str | None = None,
        clock: Callable[[], float] = time.time,
        sleep: Callable[[float], Awaitable[object]] = asyncio.sleep,
        rng: random.Random | None = None,
        cache: EventCache | None = None,
        cursors: CursorBatcher | None = None,
    ):
        self.store = store
        self._cache = cache
        self._cursors = cursors
        self._primed: set[str] = set()
        self.sink = sink
        self.settings = settings or ForwarderSettings()
        self.holder = holder or default_holder()
        self._clock = clock
        self._sleep = sleep
        self._rng = rng or random.Random()
        self._renewed_at = float("-inf")
        self.lease_held = False  # as of the last renewal
        self.delivered = 0  # events acknowledged by the sink (resends included)
        self.dead_lettered = 0  # events moved to dead letters

    # -- the loop --------------------------------------------------------------------------------------
    async def run(self, stop: asyncio.Event) -> None:
        try:
            while not stop.is_set():
                try:
                    await self.pass_once()
                except LeaseLost:
                    log.warning("sink %s: lease lost; another instance continues", self.sink.name)
                except ChainGap as exc:
                    log.error("sink %s: %s", self.sink.name, exc)
                except Exception as exc:  # a store outage: keep trying, never crash the host process
                    log.warning("sink %s: pass failed: %s", self.sink.name, exc)
                with suppress(TimeoutError):
                    await asyncio.wait_for(stop.wait(), self.until_next_poll())
        finally:
            try:
                await self.store.release_forwarder_lease(self.sink.name, self.holder)
                self.lease_held = False
            except Exception as exc:  # the lease then simply expires
                log.info("sink %s: could not release the lease: %s", self.sink.name, exc)

    def until_next_poll(self) -> float:
        """Seconds to the next multiple of ``poll_interval_s`` on the monotonic clock: the forwarders of
        a process with the same interval wake together, so one of them reads the new events from the
        store and the others take them from the shared cache, and their cursor writes share one
        transaction (:class:`CursorBatcher`)."""
        interval = self.settings.poll_interval_s
        return interval - time.monotonic() % interval

    async def pass_once(self) -> bool:
        """Bring every tenant's cursor up to its chain head, if this instance holds (or takes) the lease.
        False when another instance holds it."""
        # The holder renews only when a third of the TTL has passed (a write transaction per sink and
        # pass would compete with the decisions' audit appends for the database's write lock); an
        # instance without the lease asks for it on every pass.
        fresh = self.lease_held and self._clock() - self._renewed_at < self.settings.lease_ttl_s / 3
        if not fresh and not await self._renew(force=True):
            return False
        tenants = self.settings.tenants
        if tenants is None:
            tenants = tuple(await self.store.audit_tenants())
        for tenant in tenants:
            await self.forward_tenant(tenant)
        await self.replay_requested()
        return True

    async def forward_tenant(self, tenant: str) -> None:
        if tenant not in self._primed:
            await self._prime(tenant)
            self._primed.add(tenant)
        while True:
            cursor = await self.store.get_forwarder_cursor(tenant, self.sink.name)
            batch = await self._read(tenant, cursor.seq + 1, cursor.seq + self.settings.batch_size)
            if not batch:
                return
            # Let the other sinks of the process take their turn between batches: a sink that never
            # waits on I/O (a file, a notifier with nothing to post) would otherwise drain a whole
            # backlog at once, starving the others and running past what the shared cache holds.
            await asyncio.sleep(0)
            outcome, attempts = await self._deliver(batch)
            await self._renew()
            now = self._clock()
            if isinstance(outcome, Ack):
                if self._cursors is None:
                    await self._guarded(
                        self.store.advance_forwarder_cursor(
                            tenant, self.sink.name, self.holder, batch[-1].seq, now
                        )
                    )
                else:  # the lease renewed with the cursor: no transaction of its own while active
                    ttl = self.settings.lease_ttl_s
                    await self._guarded(
                        self._cursors.advance(tenant, self.sink.name, self.holder, batch[-1].seq, now, ttl)
                    )
                    self.lease_held, self._renewed_at = True, now
                self.delivered += len(batch)
                if len(batch) < self.settings.batch_size:
                    # The batch reached the chain head: the events committed while it was sent wait for
                    # the next pass (``poll_interval_s``) instead of leaving at once as a batch of a few.
                    # At a live rate that makes one request, one cursor write (a write transaction the
                    # decisions' audit appends wait for) and one fsync per sink and pass, not one per
                    # handful of events.
                    return
            else:
                first, last = batch[0].seq, batch[-1].seq
                if all(self._own_dead_letter(e) for e in batch):
                    # Announcing it would add an event this sink refuses in turn, without end.
                    dead = await self._guarded(
                        self.store.dead_letter_batch(
                            tenant, self.sink.name, self.holder, first, last, outcome.reason, attempts, now
                        )
                    )
                else:
                    dead = await self._guarded(
                        self._dead_letter(tenant, first, last, outcome.reason, attempts, now)
                    )
                self.dead_lettered += len(batch)
                log.error(
                    "sink %s: events %d..%d of %s moved to dead letter %d after %d attempt(s): %s",
                    self.sink.name,
                    dead.from_seq,
                    dead.to_seq,
                    tenant,
                    dead.id,
                    attempts,
                    outcome.reason,
                )

    async def _prime(self, tenant: str) -> None:
        """A sink that keeps a time window (a notifier's rate rule) gets the events it already
        acknowledged within that window, read back from the chain, before its first batch."""
        window_ms = getattr(self.sink, "window_ms", lambda: None)()
        if not window_ms:
            return
        cursor = await self.store.get_forwarder_cursor(tenant, self.sink.name)
        if cursor.seq == 0:
            return
        last = await self._read(tenant, cursor.seq, cursor.seq)
        if not last:
            return
        events: list[ForwardEvent] = []
        rows = self.store.iter_events(tenant, since_ms=last[0].time_ms - window_ms)
        async with aclosing(rows) as records:  # type: ignore[type-var]
            async for record in records:
                if record.seq > cursor.seq:
                    break
                events.append(forward_event(record))
        self.sink.prime(tenant, events, cursor.seq)  # type: ignore[attr-defined]

    # -- dead letters ----------------------------------------------------------------------------------
    async def _dead_letter(
        self, tenant: str, first: int, last: int, reason: str, attempts: int, now: float
    ) -> DeadLetter:
        """Store the dead letter (passing the cursor) and, in the same transaction, a
        ``forwarder.dead_letter`` event in the tenant's chain: the SIEMs see it and notification routes
        page on it (at-least-once like every event)."""
        sink = self.sink.name

        def details(dead: DeadLetter) -> dict[str, object]:
            return {
                "sink": sink,
                "dead_letter_id": dead.id,
                "from_seq": first,
                "to_seq": last,
                "attempts": attempts,
                "reason": reason[:500],
            }

        return await audited_mutation(
            self.store,
            lambda: self.store.dead_letter_batch(
                tenant, sink, self.holder, first, last, reason, attempts, now
            ),
            tenant,
            SYSTEM_ACTOR,
            "forwarder.dead_letter",
            lambda dead: f"dead_letter:{dead.id}",
            details,
        )

    def _own_dead_letter(self, event: ForwardEvent) -> bool:
        t = event.event.get("tessera") or {}
        return (
            t.get("action") == "forwarder.dead_letter"
            and (t.get("details") or {}).get("sink") == self.sink.name
        )

    async def replay_requested(self) -> int:
        """Resend the sink's dead letters an operator asked to replay (ReplayDeadLetter, ``tessera
        forward replay``); the number acknowledged. A failed one stays requested for the next pass."""
        done = 0
        for dead in await self.store.list_dead_letters(sink=self.sink.name):
            if dead.replay_requested_at is None:
                continue
            if await self.replay(dead, renew=True):
                done += 1
                log.info("sink %s: dead letter %d replayed", self.sink.name, dead.id)
        return done

    async def replay(self, dead_letter: DeadLetter, *, renew: bool = False) -> bool:
        """Resend a dead letter's events (with the usual retries); True once the sink acknowledged them
        and the record is marked replayed. The cursor does not move: it passed them already."""
        if dead_letter.sink != self.sink.name:
            raise ValueError(f"dead letter {dead_letter.id} belongs to sink {dead_letter.sink!r}")
        seq = dead_letter.from_seq
        while seq <= dead_letter.to_seq:
            last = min(dead_letter.to_seq, seq + self.settings.batch_size - 1)
            batch = await self._read(dead_letter.tenant, seq, last)
            if not batch:
                break
            outcome, _ = await self._deliver(batch, renew=renew)
            if not isinstance(outcome, Ack):
                await self.store.record_forwarder_error(
                    dead_letter.tenant, self.sink.name, f"replay failed: {outcome.reason}", self._clock()
                )
                return False
            seq = batch[-1].seq + 1
        await self.store.mark_dead_letter_replayed(dead_letter.id, self._clock())
        return True

    # -- plumbing --------------------------------------------------------------------------------------
    async def _read(self, tenant: str, first: int, last: int) -> list[ForwardEvent]:
        """Events ``first..last`` of the tenant's chain (committed rows only): a contiguous run starting
        at ``first`` (possibly shorter than asked, at the chain head). Anything else raises
        :class:`ChainGap` after recording it as the cursor's ``last_error``."""
        cursor = first - 1
        cached: list[ForwardEvent] = []
        if self._cache is not None:
            cached = self._cache.run(tenant, first, last)
            if len(cached) == last - first + 1:
                return cached
            # Another sink read only part of this range (its cursor was elsewhere): read the rest, so a
            # batch is cut short only by the chain head.
            first += len(cached)
        out: list[ForwardEvent] = []
        events = self.store.iter_events(tenant, after_seq=first - 1, batch=last - first + 1)
        async with aclosing(events) as rows:  # type: ignore[type-var]
            async for record in rows:
                if record.seq > last:
                    break
                expected = first + len(out)
                if record.seq != expected:
                    error = (
                        f"chain gap in {tenant}: expected seq {expected}, read {record.seq}; "
                        f"cursor held at {cursor}, nothing sent"
                    )
                    await self.store.record_forwarder_error(tenant, self.sink.name, error, self._clock())
                    raise ChainGap(error)
                out.append(forward_event(record))
        if self._cache is not None:
            self._cache.put(out)
        return cached + out if cached else out

    async def _deliver(self, batch: Sequence[ForwardEvent], *, renew: bool = True) -> tuple[Outcome, int]:
        """Send until acknowledged, rejected, or ``max_attempts`` sends failed; (outcome, attempts)."""
        attempt = 0
        while True:
            attempt += 1
            try:
                outcome = await self.sink.send(batch)
            except Exception as exc:
                outcome = Retry(f"{type(exc).__name__}: {exc}")
            if isinstance(outcome, Ack | Reject):
                return outcome, attempt
            if attempt >= self.settings.max_attempts:
                return Reject(f"gave up after {attempt} attempts: {outcome.reason}"), attempt
            await self.store.record_forwarder_error(
                batch[0].tenant, self.sink.name, outcome.reason, self._clock()
            )
            await self._pause(self.backoff(attempt, outcome.after_s), renew=renew)

    def backoff(self, attempt: int, retry_after_s: float | None = None) -> float:
        s = self.settings
        delay = self._rng.uniform(0.0, min(s.backoff_cap_s, s.backoff_base_s * 2 ** (attempt - 1)))
        if retry_after_s is not None:
            delay = max(delay, min(retry_after_s, s.max_retry_after_s))
        return delay

    async def _pause(self, delay: float, *, renew: bool) -> None:
        """Sleep ``delay`` seconds, renewing the lease at least every third of its TTL meanwhile."""
        slice_s = self.settings.lease_ttl_s / 3
        while delay > 0:
            step = min(delay, slice_s)
            await self._sleep(step)
            delay -= step
            if renew:
                await self._renew()

    async def _renew(self, *, force: bool = False) -> bool:
        now = self._clock()
        if not force and now - self._renewed_at < self.settings.lease_ttl_s / 3:
            return True
        if not self.lease_held:
            # A standby instance (another holds the lease) looks before it asks: asking is a write
            # transaction, which on every pass would compete with the decisions' audit appends.
            current = await self.store.forwarder_lease(self.sink.name)
            if current is not None and current[0] != self.holder and current[1] > now:
                if not force:
                    raise LeaseLost(self.sink.name)
                return False
        held = await self.store.acquire_forwarder_lease(
            self.sink.name, self.holder, now, self.settings.lease_ttl_s
        )
        self.lease_held = held
        if held:
            self._renewed_at = now
        elif not force:
            raise LeaseLost(self.sink.name)
        return held

    async def _guarded(self, write: Awaitable[T]) -> T:
        try:
            return await write
        except FailedPrecondition as exc:
            raise LeaseLost(str(exc)) from exc


async def request_replay(
    store: Store, dead_letter_id: int, actor: str, *, tenant: str | None = None, now: float | None = None
) -> DeadLetter:
    """Ask for a dead letter's replay and audit the request (``dead_letter.replay``) in its tenant's chain,
    in one transaction: ``ReplayDeadLetter`` and ``tessera forward replay`` both come here. The forwarder
    holding the sink's lease resends it on its next pass. NotFound for an unknown id (or one of another
    ``tenant``); FailedPrecondition when it was replayed already."""
    found = [
        d for d in await store.list_dead_letters(tenant, include_replayed=True) if d.id == dead_letter_id
    ]
    if not found:
        where = f" of tenant {tenant!r}" if tenant else ""
        raise NotFound(
            f"no dead letter {dead_letter_id}{where}",
            reason="DEAD_LETTER_NOT_FOUND",
            metadata={"id": str(dead_letter_id)},
        )
    dead = found[0]
    when = time.time() if now is None else now
    return await audited_mutation(
        store,
        lambda: store.request_dead_letter_replay(dead_letter_id, when),
        dead.tenant,
        actor,
        "dead_letter.replay",
        f"dead_letter:{dead_letter_id}",
        {"sink": dead.sink, "from_seq": dead.from_seq, "to_seq": dead.to_seq},
    )
