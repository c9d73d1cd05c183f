"""The forwarder half of the store (``ForwarderStore``): the per-sink lease, the per-(tenant, sink)
cursor and dead letters. Every test runs on SQLite and PostgreSQL (``backend`` fixture); two ``open()``
calls are two replicas."""

from __future__ import annotations

import asyncio

import pytest

from authz.errors import FailedPrecondition, NotFound
from authz.storage import ForwarderCursor, Store

from .conftest import Backend

NOW = 1_700_000_000.0


async def test_lease_is_exclusive_renewable_and_taken_over_after_expiry(backend: Backend):
    one, two = await backend.open(), await backend.open()
    assert await one.acquire_forwarder_lease("splunk", "fwd-a", NOW, 10)
    assert not await two.acquire_forwarder_lease("splunk", "fwd-b", NOW + 5, 10)
    assert await one.acquire_forwarder_lease("splunk", "fwd-a", NOW + 9, 10)  # renewal extends to +19
    assert await two.forwarder_lease("splunk") == ("fwd-a", NOW + 19)
    assert await two.forwarder_lease("s3") is None
    assert not await two.acquire_forwarder_lease("splunk", "fwd-b", NOW + 15, 10)
    # Another sink has its own lease.
    assert await two.acquire_forwarder_lease("s3", "fwd-b", NOW + 15, 10)
    # fwd-a stopped renewing (crashed): once expired, fwd-b takes over.
    assert await two.acquire_forwarder_lease("splunk", "fwd-b", NOW + 19, 10)
    assert not await one.acquire_forwarder_lease("splunk", "fwd-a", NOW + 20, 10)


async def test_released_lease_is_free_at_once_and_only_its_holder_releases_it(store: Store):
    assert await store.acquire_forwarder_lease("hook", "fwd-a", NOW, 60)
    await store.release_forwarder_lease("hook", "fwd-b")  # not the holder: no effect
    assert not await store.acquire_forwarder_lease("hook", "fwd-b", NOW + 1, 60)
    await store.release_forwarder_lease("hook", "fwd-a")
    assert await store.acquire_forwarder_lease("hook", "fwd-b", NOW + 1, 60)


async def test_racing_replicas_get_exactly_one_lease(backend: Backend):
    stores = [await backend.open() for _ in range(4)]
    won = await asyncio.gather(
        *(s.acquire_forwarder_lease("dd", f"fwd-{i}", NOW, 30) for i, s in enumerate(stores))
    )
    assert sorted(won) == [False, False, False, True]


async def test_cursor_starts_at_zero_moves_forward_only_and_needs_the_lease(store: Store):
    assert await store.get_forwarder_cursor("acme", "hook") == ForwarderCursor("acme", "hook", 0)
    with pytest.raises(FailedPrecondition):
        await store.advance_forwarder_cursor("acme", "hook", "fwd-a", 5, NOW)
    assert (await store.get_forwarder_cursor("acme", "hook")).seq == 0

    assert await store.acquire_forwarder_lease("hook", "fwd-a", NOW, 10)
    await store.advance_forwarder_cursor("acme", "hook", "fwd-a", 5, NOW + 1)
    await store.advance_forwarder_cursor("acme", "hook", "fwd-a", 3, NOW + 2)  # a late ack never rewinds
    cursor = await store.get_forwarder_cursor("acme", "hook")
    assert (cursor.seq, cursor.last_success_at, cursor.last_error) == (5, NOW + 2, None)
    # Per tenant and per sink.
    assert (await store.get_forwarder_cursor("globex", "hook")).seq == 0
    assert (await store.get_forwarder_cursor("acme", "s3")).seq == 0

    # The lease expired: the stale holder can no longer move the cursor its successor owns.
    with pytest.raises(FailedPrecondition):
        await store.advance_forwarder_cursor("acme", "hook", "fwd-a", 9, NOW + 11)
    assert (await store.get_forwarder_cursor("acme", "hook")).seq == 5


async def test_errors_are_recorded_for_health_and_cleared_by_the_next_success(store: Store):
    await store.record_forwarder_error("acme", "hook", "HTTP 503", NOW)
    cursor = await store.get_forwarder_cursor("acme", "hook")
    assert (cursor.seq, cursor.last_error, cursor.last_error_at) == (0, "HTTP 503", NOW)
    assert await store.acquire_forwarder_lease("hook", "fwd-a", NOW, 10)
    await store.advance_forwarder_cursor("acme", "hook", "fwd-a", 2, NOW + 1)
    cursor = await store.get_forwarder_cursor("acme", "hook")
    assert (cursor.seq, cursor.last_error, cursor.last_error_at) == (2, None, NOW)
    assert await store.forwarder_cursors() == [cursor]
    assert await store.forwarder_cursors("s3") == []


async def test_dead_letter_passes_the_cursor_atomically_and_is_listed_until_replayed(store: Store):
    with pytest.raises(FailedPrecondition):
        await store.dead_letter_batch("acme", "hook", "fwd-a", 1, 4, "HTTP 400", 1, NOW)
    assert await store.list_dead_letters() == []

    assert await store.acquire_forwarder_lease("hook", "fwd-a", NOW, 10)
    first = await store.dead_letter_batch("acme", "hook", "fwd-a", 1, 4, "HTTP 400 bad event", 1, NOW)
    second = await store.dead_letter_batch("globex", "hook", "fwd-a", 1, 2, "HTTP 503", 8, NOW + 1)
    assert (first.from_seq, first.to_seq, first.reason, first.attempts, first.replayed_at) == (
        1,
        4,
        "HTTP 400 bad event",
        1,
        None,
    )
    cursor = await store.get_forwarder_cursor("acme", "hook")
    assert (cursor.seq, cursor.last_error) == (4, "HTTP 400 bad event")
    assert await store.list_dead_letters() == [first, second]
    assert await store.list_dead_letters(tenant="globex") == [second]
    assert await store.list_dead_letters(sink="s3") == []

    replayed = await store.mark_dead_letter_replayed(first.id, NOW + 5)
    assert replayed.replayed_at == NOW + 5
    assert (await store.mark_dead_letter_replayed(first.id, NOW + 9)).replayed_at == NOW + 5
    assert await store.list_dead_letters() == [second]
    assert await store.list_dead_letters(include_replayed=True) == [replayed, second]
    with pytest.raises(NotFound):
        await store.mark_dead_letter_replayed(first.id + second.id + 100, NOW)
