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
from collections.abc import Awaitable, Callable, Sequence
from contextlib import aclosing, suppress
from dataclasses import dataclass
from typing import TypeVar

from authz.errors import FailedPrecondition
from authz.forward._event import ForwardEvent, forward_event
from authz.forward._sink import Ack, Outcome, Reject, Retry, Sink
from authz.storage.models import DeadLetter
from authz.storage.protocols import Store

log = logging.getLogger("tessera.forward")
T = TypeVar("T")


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


def default_holder() -> str:
    """A forwarder instance id unique across hosts and restarts (so a restarted process never mistakes
    its predecessor's lease for its own)."""
    return f"{socket.gethostname()}:{os.getpid()}:{uuid.uuid4().hex[:8]}"


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
    ):
        self.store = store
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
                except Exception as exc:  # a store outage: keep trying, never crash the host process
                    log.warning("sink %s: pass failed: %s", self.sink.name, exc)
                with suppress(TimeoutError):
                    await asyncio.wait_for(stop.wait(), self.settings.poll_interval_s)
        finally:
            try:
                await self.store.release_forwarder_lease(self.sink.name, self.holder)
                self.lease_held = False
            except Exception as exc:  # the lease then simply expires
                log.info("sink %s: could not release the lease: %s", self.sink.name, exc)

    async def pass_once(self) -> bool:
        """Bring every tenant's cursor up to its chain head, if this instance holds (or takes) the lease.
        False when another instance holds it."""
        if not await self._renew(force=True):
            return False
        tenants = self.settings.tenants
        if tenants is None:
            tenants = tuple(await self.store.audit_tenants())
        for tenant in tenants:
            await self.forward_tenant(tenant)
        return True

    async def forward_tenant(self, tenant: str) -> None:
        while True:
            cursor = await self.store.get_forwarder_cursor(tenant, self.sink.name)
            batch = await self._read(tenant, cursor.seq + 1, cursor.seq + self.settings.batch_size)
            if not batch:
                return
            outcome, attempts = await self._deliver(batch)
            await self._renew()
            now = self._clock()
            if isinstance(outcome, Ack):
                await self._guarded(
                    self.store.advance_forwarder_cursor(
                        tenant, self.sink.name, self.holder, batch[-1].seq, now
                    )
                )
                self.delivered += len(batch)
            else:
                dead = await self._guarded(
                    self.store.dead_letter_batch(
                        tenant,
                        self.sink.name,
                        self.holder,
                        batch[0].seq,
                        batch[-1].seq,
                        outcome.reason,
                        attempts,
                        now,
                    )
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

    # -- dead letters ----------------------------------------------------------------------------------
    async def replay(self, dead_letter: DeadLetter) -> bool:
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
            outcome, _ = await self._deliver(batch, renew=False)
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
        """Events ``first..last`` of the tenant's chain (committed rows only)."""
        out: list[ForwardEvent] = []
        events = self.store.iter_events(tenant, after_seq=first - 1, batch=last - first + 1)
        async with aclosing(events) as rows:  # type: ignore[type-var]
            async for record in rows:
                if record.seq > last:
                    break
                out.append(forward_event(record))
        return out

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
