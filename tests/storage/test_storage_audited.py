"""An admin mutation and its audit event commit in ONE transaction (``run_audited``), on both stores.

The fault is real: a trigger in the database refuses inserts into ``audit_events``, so the event write
fails inside the store's own transaction, after the mutation's statements ran.
"""

from __future__ import annotations

import psycopg
import pytest

from authz.audit import admin_event, verify_chain
from authz.errors import AlreadyExists, InvalidArgument, NotFound, TesseraError
from authz.storage import Revocation, Store, TenantSettings
from authz.storage.protocols import AuditCheckpoint

from .conftest import Backend

NOW = 1_700_000_000.0


def event(tenant: str, action: str = "tenant.create") -> dict:
    return admin_event(tenant, "alice", action, f"tenant:{tenant}", {}, time_ms=1_700_000_000_000)


async def refuse_audit_writes(backend: Backend, store: Store, pg_url: str | None) -> None:
    if backend.name == "sqlite":
        store.db.conn.execute(  # type: ignore[attr-defined]
            "CREATE TRIGGER refuse_audit BEFORE INSERT ON audit_events "
            "BEGIN SELECT RAISE(ABORT, 'audit refused'); END"
        )
        return
    async with await psycopg.AsyncConnection.connect(pg_url, autocommit=True) as conn:
        await conn.execute(
            "CREATE FUNCTION refuse_audit() RETURNS trigger LANGUAGE plpgsql AS "
            "$$ BEGIN RAISE EXCEPTION 'audit refused'; END $$"
        )
        await conn.execute(
            "CREATE TRIGGER refuse_audit BEFORE INSERT ON audit_events "
            "FOR EACH STATEMENT EXECUTE FUNCTION refuse_audit()"
        )


@pytest.fixture
def maybe_pg_url(backend: Backend, request: pytest.FixtureRequest) -> str | None:
    return request.getfixturevalue("pg_url") if backend.name == "postgres" else None


async def test_mutation_and_event_commit_together(store: Store):
    result = await store.run_audited(
        lambda: store.put_tenant("acme", TenantSettings(intent_mode="advisory")),
        lambda _: [("acme", event("acme"))],
    )
    assert result is None
    assert await store.get_tenant("acme") == TenantSettings(intent_mode="advisory")
    assert (await store.audit_head("acme"))[0] == 1
    assert (await verify_chain(store, "acme")).ok


async def test_events_are_built_from_the_mutations_result(store: Store):
    version = await store.run_audited(
        lambda: store.promote_policy("acme", "package tessera\n", "ab" * 32, "alice"),
        lambda v: [("acme", event("acme", f"policy.promote.v{v.version}"))],
    )
    assert version.version == 1
    records = [r async for r in store.iter_events("acme")]
    assert "policy.promote.v1" in records[0].event


async def test_a_failed_audit_write_undoes_the_mutation(backend: Backend, store: Store, maybe_pg_url):
    await store.put_tenant("acme", TenantSettings())
    await refuse_audit_writes(backend, store, maybe_pg_url)
    mutations = [
        lambda: store.put_tenant("acme", TenantSettings(intent_mode="enforce")),
        lambda: store.put_tenant("globex", TenantSettings()),
        lambda: store.promote_policy("acme", "package tessera\n", "ab" * 32, "alice"),
        lambda: store.revoke(Revocation("acme", "jti", "j1", "leaked", NOW, "alice")),
        lambda: store.put_checkpoint(
            AuditCheckpoint("acme", 1, "cd" * 32, "2026-12-03T00:00:00Z", "pk", "sig")
        ),
    ]
    for mutation in mutations:
        with pytest.raises(TesseraError):
            await store.run_audited(mutation, lambda _: [("acme", event("acme"))])
    assert await store.get_tenant("acme") == TenantSettings()
    assert await store.get_tenant("globex") is None
    assert await store.policy_history("acme") == []
    assert not await store.is_revoked("acme", "j1", [])
    assert await store.list_checkpoints("acme") == []
    assert await store.audit_head("acme") is None


async def test_a_failed_mutation_writes_no_event(store: Store):
    with pytest.raises(NotFound):
        await store.run_audited(
            lambda: store.activate_policy("acme", 7, "alice"), lambda _: [("acme", event("acme"))]
        )
    assert await store.audit_head("acme") is None


async def test_a_mutation_error_keeps_its_own_type(store: Store):
    from authz.storage import AdminKey

    key = AdminKey("k1", "n", "admin", None, "ab" * 32, NOW, "test")
    await store.create_admin_key(key)
    with pytest.raises(AlreadyExists):
        await store.run_audited(lambda: store.create_admin_key(key), lambda _: [("_admin", event("_admin"))])
    assert await store.audit_head("_admin") is None


async def test_an_event_that_cannot_be_encoded_undoes_the_mutation(store: Store):
    with pytest.raises(InvalidArgument):
        await store.run_audited(
            lambda: store.put_tenant("acme", TenantSettings()), lambda _: [("acme", {"no": "time"})]
        )
    assert await store.get_tenant("acme") is None
