"""PostgreSQL's one-statement audit append (migration 0007, ``tessera_audit_append()``).

The conformance suite checks the chains it writes (links, hashes against :mod:`authz.chain`, concurrent
writers); this file checks what is particular to PostgreSQL: the append is one statement with no client
round trip while a head is locked, and a database whose chains were written before 0007 keeps them.
"""

from __future__ import annotations

import asyncio

import psycopg
import pytest

from authz.audit import GENESIS_HASH, admin_event, canonical_event, verify_chain
from authz.chain import chain_hash
from authz.storage.postgres import PostgresStore, migrations


def event(tenant: str, n: int, agent: str | None = None) -> dict:
    e = admin_event(tenant, "alice", "policy.promote", f"v{n}", {"n": n, "note": "naïve ✓"}, time_ms=n)
    e["tessera"]["agent"] = agent
    return e


async def test_an_append_is_one_statement_outside_any_client_transaction(pg_url: str, monkeypatch):
    store = PostgresStore(pg_url)
    await store.open()
    try:
        await store.append_events([("acme", event("acme", 1))])  # the pool and the head row exist
        statements: list[str] = []
        transactions: list[object] = []
        execute, transaction = psycopg.AsyncConnection.execute, psycopg.AsyncConnection.transaction

        async def counted_execute(self, query, *args, **kwargs):
            statements.append(str(query))
            return await execute(self, query, *args, **kwargs)

        def counted_transaction(self, *args, **kwargs):
            transactions.append(self)
            return transaction(self, *args, **kwargs)

        monkeypatch.setattr(psycopg.AsyncConnection, "execute", counted_execute)
        monkeypatch.setattr(psycopg.AsyncConnection, "transaction", counted_transaction)
        written = await store.append_events(
            [("acme", event("acme", n)) for n in (2, 3)] + [("globex", event("globex", 1))]
        )
        monkeypatch.undo()
        assert [(t, s) for t, s, _ in written] == [("acme", 2), ("acme", 3), ("globex", 1)]
        assert len(statements) == 1 and "tessera_audit_append" in statements[0], statements
        assert transactions == []  # autocommit: the statement is its own transaction, no BEGIN/COMMIT trips
        for tenant in ("acme", "globex"):
            result = await verify_chain(store, tenant)
            assert result.ok, result.summary()
    finally:
        await store.close()


async def test_an_append_waits_for_a_head_another_transaction_holds(pg_url: str):
    store = PostgresStore(pg_url)
    await store.open()
    try:
        await store.append_events([("acme", event("acme", 1))])
        async with await psycopg.AsyncConnection.connect(pg_url) as holder:
            await holder.execute("SELECT seq FROM audit_heads WHERE tenant = 'acme' FOR UPDATE")
            appending = asyncio.create_task(store.append_events([("acme", event("acme", 2))]))
            other = await store.append_events([("globex", event("globex", 1))])  # another chain: no wait
            assert other[0][:2] == ("globex", 1)
            await asyncio.sleep(0.3)
            assert not appending.done()  # the locked head is waited for inside the one statement
            await holder.rollback()
            assert (await asyncio.wait_for(appending, 10))[0][:2] == ("acme", 2)
        assert (await verify_chain(store, "acme")).ok
    finally:
        await store.close()


async def test_chains_written_before_migration_0007_continue(pg_url: str):
    before = [(name, sql) for name, sql in migrations() if name < "0007"]
    assert len(before) < len(migrations())
    head = GENESIS_HASH
    async with await psycopg.AsyncConnection.connect(pg_url, autocommit=True) as conn:
        await conn.execute(
            "CREATE TABLE schema_migrations (name TEXT PRIMARY KEY, applied_at DOUBLE PRECISION)"
        )
        for name, sql in before:
            await conn.execute(sql)
            await conn.execute("INSERT INTO schema_migrations VALUES (%s, 0)", (name,))
        # A chain as the five-statement append wrote it: hashed by the client.
        for n in (1, 2, 3):
            text = canonical_event(event("acme", n, agent="ü-agent"))
            digest = chain_hash(head, text)
            await conn.execute(
                "INSERT INTO audit_events (tenant, seq, time_ms, decision, agent, event, prev_hash, hash) "
                "VALUES ('acme', %s, %s, 'admin', 'ü-agent', %s, %s, %s)",
                (n, n, text.decode(), head, digest),
            )
            head = digest
        await conn.execute("INSERT INTO audit_heads VALUES ('acme', 3, %s)", (head,))
    store = PostgresStore(pg_url)
    await store.open()  # applies 0007 and later
    try:
        fourth = event("acme", 4, agent="ü-agent")  # built once: an event carries a fresh uid
        written = await store.append_events([("acme", fourth)])
        assert written[0][:2] == ("acme", 4)
        assert written[0][2] == chain_hash(head, canonical_event(fourth))
        result = await verify_chain(store, "acme")
        assert result.ok and result.events_checked == 4, result.summary()
    finally:
        await store.close()


@pytest.mark.parametrize("size", [1, 300])
async def test_the_server_hashes_what_authz_chain_hashes(pg_url: str, size: int):
    store = PostgresStore(pg_url)
    await store.open()
    try:
        events = [("acme", event("acme", n, agent=f"agent-{n % 3}")) for n in range(1, size + 1)]
        written = await store.append_events(events)
        prev = GENESIS_HASH
        for (_, e), (_, seq, digest) in zip(events, written, strict=True):
            assert digest == chain_hash(prev, canonical_event(e)), seq
            prev = digest
        assert await store.audit_head("acme") == (size, prev)
    finally:
        await store.close()


async def test_event_text_with_quotes_and_backslashes_is_stored_and_hashed_byte_exact(pg_url: str):
    # The append sends the events' JSON as a binary text[]: nothing in the text may be escaped, split or
    # re-encoded on the way (array delimiters, quotes, backslashes, escaped controls, astral characters).
    store = PostgresStore(pg_url)
    await store.open()
    try:
        tricky = 'a "quoted" {x, y} \\ back\\\\slash \\" NULL \n\t\x01 naïve ✓ \U0001f600 ,}'
        events = [("acme", event("acme", n)) for n in (1, 2)]
        events[0][1]["tessera"]["details"] = {"note": tricky, "NULL": None, '{"k"}': "\\"}
        events[1][1]["tessera"]["agent"] = tricky
        written = await store.append_events(events)
        stored = [record async for record in store.iter_events("acme")]
        prev = GENESIS_HASH
        for (_, e), (_, _, digest), record in zip(events, written, stored, strict=True):
            assert record.event == canonical_event(e).decode()
            assert digest == record.hash == chain_hash(prev, canonical_event(e))
            prev = digest
        assert stored[1].agent == tricky
    finally:
        await store.close()
