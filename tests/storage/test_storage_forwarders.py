"""The forwarder half of the store (``ForwarderStore``): the per-sink lease, the per-(tenant, sink)
cursor and dead letters. Every test runs on SQLite and PostgreSQL (``backend`` fixture); two ``open()``
calls are two replicas."""

from __future__ import annotations

import asyncio

import pytest

from authz.errors import AlreadyExists, FailedPrecondition, NotFound
from authz.storage import ForwarderCursor, SinkConfig, Store

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


async def test_cursors_advanced_together_apply_each_under_its_own_lease(store: Store):
    assert await store.acquire_forwarder_lease("hook", "fwd-a", NOW, 10)
    assert await store.acquire_forwarder_lease("s3", "fwd-b", NOW, 10)
    await store.record_forwarder_error("acme", "hook", "HTTP 503", NOW)
    applied = await store.advance_forwarder_cursors(
        [
            ("acme", "hook", "fwd-a", 5, 0),
            ("globex", "hook", "fwd-a", 2, 0),
            ("acme", "s3", "fwd-a", 7, 60),  # fwd-b holds s3: refused (nor renewed), the others apply
            ("acme", "s3", "fwd-b", 4, 0),
        ],
        NOW + 1,
    )
    assert applied == [True, True, False, True]
    assert await store.forwarder_lease("s3") == ("fwd-b", NOW + 10)
    cursor = await store.get_forwarder_cursor("acme", "hook")
    assert (cursor.seq, cursor.last_success_at, cursor.last_error) == (5, NOW + 1, None)
    assert (await store.get_forwarder_cursor("globex", "hook")).seq == 2
    assert (await store.get_forwarder_cursor("acme", "s3")).seq == 4
    # An applied advance renews its lease (never shortening it); never rewinds; an expired lease refuses.
    assert await store.advance_forwarder_cursors([("acme", "hook", "fwd-a", 6, 10)], NOW + 5) == [True]
    assert await store.forwarder_lease("hook") == ("fwd-a", NOW + 15)
    assert await store.advance_forwarder_cursors([("acme", "hook", "fwd-a", 7, 1)], NOW + 6) == [True]
    assert await store.forwarder_lease("hook") == ("fwd-a", NOW + 15)
    assert await store.advance_forwarder_cursors(
        [("acme", "hook", "fwd-a", 3, 0), ("acme", "s3", "fwd-b", 9, 0)], NOW + 10
    ) == [True, False]
    assert (await store.get_forwarder_cursor("acme", "hook")).seq == 7
    assert (await store.get_forwarder_cursor("acme", "s3")).seq == 4
    assert await store.advance_forwarder_cursors([], NOW) == []


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


async def test_a_replay_request_is_recorded_once_and_refused_after_the_replay(store: Store):
    assert await store.acquire_forwarder_lease("hook", "fwd-a", NOW, 10)
    dead = await store.dead_letter_batch("acme", "hook", "fwd-a", 1, 4, "HTTP 400", 1, NOW)
    assert dead.replay_requested_at is None
    requested = await store.request_dead_letter_replay(dead.id, NOW + 1)
    assert requested.replay_requested_at == NOW + 1 and requested.id == dead.id
    assert (await store.request_dead_letter_replay(dead.id, NOW + 2)).replay_requested_at == NOW + 1
    assert (await store.list_dead_letters())[0].replay_requested_at == NOW + 1
    await store.mark_dead_letter_replayed(dead.id, NOW + 3)
    with pytest.raises(FailedPrecondition):
        await store.request_dead_letter_replay(dead.id, NOW + 4)
    with pytest.raises(NotFound):
        await store.request_dead_letter_replay(dead.id + 100, NOW)


async def test_sink_configs_are_per_tenant_versioned_and_compare_and_set(backend: Backend):
    one, two = await backend.open(), await backend.open()
    spec = {"url": "https://siem.example.com/in", "secret": "soc-hmac", "batch_size": 50, "tags": ["a"]}
    await one.create_sink_config(SinkConfig("acme", "soc", "webhook", spec, 1, NOW, NOW))
    await one.create_sink_config(SinkConfig("globex", "soc", "splunk", {"url": "https://x"}, 1, NOW, NOW))
    with pytest.raises(AlreadyExists):
        await two.create_sink_config(SinkConfig("acme", "soc", "datadog", {}, 1, NOW, NOW))
    got = await two.get_sink_config("acme", "soc")
    assert got == SinkConfig("acme", "soc", "webhook", spec, 1, NOW, NOW)
    assert await two.get_sink_config("acme", "nope") is None
    assert [(c.tenant, c.name) for c in await two.list_sink_configs()] == [("acme", "soc"), ("globex", "soc")]
    assert [c.kind for c in await two.list_sink_configs("globex")] == ["splunk"]

    changed = await two.update_sink_config(
        "acme", "soc", {**spec, "batch_size": 10}, NOW + 5, expected_version=1
    )
    assert (changed.version, changed.created_at, changed.updated_at, changed.kind) == (
        2,
        NOW,
        NOW + 5,
        "webhook",
    )
    assert await one.get_sink_config("acme", "soc") == changed
    with pytest.raises(FailedPrecondition):
        await one.update_sink_config("acme", "soc", spec, NOW + 6, expected_version=1)
    assert (await one.update_sink_config("acme", "soc", spec, NOW + 7)).version == 3
    with pytest.raises(NotFound):
        await one.update_sink_config("acme", "nope", spec, NOW)

    assert await two.delete_sink_config("acme", "soc")
    assert not await two.delete_sink_config("acme", "soc")
    assert [c.tenant for c in await one.list_sink_configs()] == ["globex"]


async def test_a_sink_config_and_its_audit_event_commit_together(store: Store):
    config = SinkConfig("acme", "soc", "webhook", {"url": "https://x"}, 1, NOW, NOW)

    def events(_: object) -> list:
        raise RuntimeError("the audit event cannot be built")

    with pytest.raises(RuntimeError):
        await store.run_audited(lambda: store.create_sink_config(config), events)
    assert await store.list_sink_configs() == []


async def test_timed_out_approvals_expire_once_across_replicas(backend: Backend):
    from authz.storage import Approval

    one, two = await backend.open(), await backend.open()

    def approval(approval_id: str, expires_at: float) -> Approval:
        return Approval(
            approval_id, "acme", "agent", "tool", "ab" * 32, "why", "pending", 1, NOW - 600, expires_at, "d"
        )

    for i in range(6):
        await one.create_approval(approval(f"late-{i}", NOW - 10 + i))
    await one.create_approval(approval("open", NOW + 60))
    first, second = await asyncio.gather(
        one.expire_approvals(NOW, limit=4), two.expire_approvals(NOW, limit=4)
    )
    ids = [a.approval_id for a in first + second]
    assert sorted(ids) == [f"late-{i}" for i in range(6)]  # each once
    assert all(a.status == "expired" for a in first + second)
    assert [a.approval_id for a in first] == sorted(a.approval_id for a in first)  # oldest deadline first
    assert await one.expire_approvals(NOW) == []
    assert (await two.get_approval("acme", "open")).status == "pending"
    assert (await two.get_approval("acme", "late-0")).status == "expired"


async def test_a_dead_letter_and_its_announcement_commit_together(store: Store):
    """The forwarder stores a dead letter inside ``run_audited`` (its ``forwarder.dead_letter`` event in
    the same transaction); without the lease neither stands."""
    from authz.audit import admin_event

    def announce(dead) -> list:
        return [
            (
                "acme",
                admin_event("acme", "tessera", "forwarder.dead_letter", f"dead_letter:{dead.id}", time_ms=1),
            )
        ]

    with pytest.raises(FailedPrecondition):
        await store.run_audited(
            lambda: store.dead_letter_batch("acme", "hook", "fwd-a", 1, 2, "HTTP 400", 1, NOW), announce
        )
    assert await store.list_dead_letters() == [] and await store.audit_head("acme") is None
    assert await store.acquire_forwarder_lease("hook", "fwd-a", NOW, 10)
    dead = await store.run_audited(
        lambda: store.dead_letter_batch("acme", "hook", "fwd-a", 1, 2, "HTTP 400", 1, NOW), announce
    )
    assert await store.list_dead_letters() == [dead]
    assert (await store.audit_head("acme"))[0] == 1
    assert (await store.get_forwarder_cursor("acme", "hook")).seq == 2
