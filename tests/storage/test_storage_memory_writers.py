"""The memory writer half of the store (``MemoryWriterStore``, ARCHITECTURE §8). Every test runs on
SQLite and PostgreSQL (``backend`` fixture); two ``open()`` calls are two replicas."""

from __future__ import annotations

import pytest

from authz.audit import admin_event, verify_chain
from authz.errors import AlreadyExists, FailedPrecondition, NotFound
from authz.storage import RegisteredWriter, Store

from .conftest import Backend

NOW = 1_700_000_000.0
KEY_A, KEY_B = bytes(range(32)), bytes(range(32, 64))


def writer(tenant: str = "acme", writer_id: str = "rag", **kw) -> RegisteredWriter:
    fields = dict(
        public_key=KEY_A,
        sources=("erp", "s3://docs/*"),
        expires_at=NOW + 3600,
        created_at=NOW,
        created_by="admin:k1",
        updated_at=NOW,
    )
    fields.update(kw)
    return RegisteredWriter(tenant, writer_id, **fields)


async def test_register_get_and_list_round_trip_every_field(backend: Backend):
    one, two = await backend.open(), await backend.open()
    await one.create_memory_writer(writer())
    await one.create_memory_writer(writer("acme", "loader", expires_at=None, sources=("wiki",)))
    await one.create_memory_writer(writer("globex", "rag"))
    assert await two.get_memory_writer("acme", "rag") == writer()
    assert await two.get_memory_writer("acme", "nope") is None
    assert [w.writer_id for w in await two.list_memory_writers("acme")] == ["loader", "rag"]
    assert [(w.tenant, w.writer_id) for w in await two.list_memory_writers()] == [
        ("acme", "loader"),
        ("acme", "rag"),
        ("globex", "rag"),
    ]
    assert (await two.get_memory_writer("acme", "loader")).expires_at is None


async def test_a_writer_id_is_registered_once_per_tenant(store: Store):
    await store.create_memory_writer(writer())
    with pytest.raises(AlreadyExists):
        await store.create_memory_writer(writer(public_key=KEY_B))
    assert (await store.get_memory_writer("acme", "rag")).public_key == KEY_A


async def test_every_change_bumps_the_settings_version(backend: Backend):
    one, two = await backend.open(), await backend.open()
    seen = [(await two.versions()).settings]
    await one.create_memory_writer(writer())
    seen.append((await two.versions()).settings)
    await one.rotate_memory_writer("acme", "rag", KEY_B, None, NOW + 1)
    seen.append((await two.versions()).settings)
    await one.disable_memory_writer("acme", "rag", "admin:k1", NOW + 2)
    seen.append((await two.versions()).settings)
    assert seen == sorted(set(seen)), seen  # strictly increasing: every replica notices each change


async def test_disable_is_final_and_keeps_its_first_record(store: Store):
    await store.create_memory_writer(writer())
    disabled = await store.disable_memory_writer("acme", "rag", "admin:k1", NOW + 5)
    assert (disabled.disabled, disabled.disabled_at, disabled.disabled_by) == (True, NOW + 5, "admin:k1")
    again = await store.disable_memory_writer("acme", "rag", "admin:k2", NOW + 9)
    assert (again.disabled_at, again.disabled_by) == (NOW + 5, "admin:k1")
    assert await store.get_memory_writer("acme", "rag") == disabled
    with pytest.raises(FailedPrecondition):
        await store.rotate_memory_writer("acme", "rag", KEY_B, None, NOW + 10)
    with pytest.raises(NotFound):
        await store.disable_memory_writer("acme", "ghost", "admin:k1", NOW)


async def test_rotation_with_and_without_a_grace_period(store: Store):
    await store.create_memory_writer(writer())
    rotated = await store.rotate_memory_writer("acme", "rag", KEY_B, NOW + 60, NOW + 1)
    assert (rotated.public_key, rotated.previous_public_key, rotated.previous_until) == (
        KEY_B,
        KEY_A,
        NOW + 60,
    )
    assert await store.get_memory_writer("acme", "rag") == rotated
    assert rotated.keys_at(NOW + 59) == (KEY_B, KEY_A)
    assert rotated.keys_at(NOW + 60) == (KEY_B,)
    leaked = await store.rotate_memory_writer("acme", "rag", KEY_A, None, NOW + 2)
    assert (leaked.public_key, leaked.previous_public_key, leaked.previous_until) == (KEY_A, None, None)
    assert leaked.keys_at(NOW + 3) == (KEY_A,)
    with pytest.raises(NotFound):
        await store.rotate_memory_writer("acme", "ghost", KEY_B, None, NOW)


async def test_registration_and_its_audit_event_commit_together(store: Store):
    event = admin_event("acme", "alice", "memory_writer.create", "memory_writer:rag", {}, time_ms=1)
    await store.run_audited(lambda: store.create_memory_writer(writer()), lambda _: [("acme", event)])
    assert await store.get_memory_writer("acme", "rag") is not None
    assert (await verify_chain(store, "acme")).ok

    def refuse(_):
        raise RuntimeError("the audit write failed")

    with pytest.raises(RuntimeError):
        await store.run_audited(lambda: store.disable_memory_writer("acme", "rag", "alice", NOW), refuse)
    assert not (await store.get_memory_writer("acme", "rag")).disabled


def test_sources_match_exactly_or_by_prefix():
    w = writer()
    assert w.allows_source("erp") and w.allows_source("s3://docs/a/b.pdf")
    assert not w.allows_source("erp2") and not w.allows_source("s3://other/x") and not w.allows_source("")
