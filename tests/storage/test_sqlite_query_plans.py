"""The SQLite statements on the check path reach their rows through an index, whatever the table holds.

Each test runs the store method with an exec trace on the store's connection, then asks SQLite for the
plan of exactly the statement (and bindings) the method ran: a plan that scans grows with the table,
and on the check path that cost is paid by every call.
"""

from __future__ import annotations

from pathlib import Path

from authz.storage.models import Revocation
from authz.storage.sqlite import SQLiteStore


def _statements_of(store: SQLiteStore) -> list[tuple[str, tuple]]:
    seen: list[tuple[str, tuple]] = []

    def trace(cursor, sql, bindings):
        seen.append((sql, tuple(bindings or ())))
        return True

    store.db.conn.exec_trace = trace
    return seen


def _plan(store: SQLiteStore, sql: str, bindings: tuple) -> list[str]:
    return [row[3] for row in store.db.conn.execute(f"EXPLAIN QUERY PLAN {sql}", bindings)]


async def test_revocation_lookup_seeks_the_full_key_in_a_large_revocation_list(tmp_path: Path):
    store = SQLiteStore(tmp_path / "plans.db")
    try:
        with store.db.transaction() as conn:  # a tenant that has revoked many tokens over time
            conn.executemany(
                "INSERT INTO revocations (tenant, kind, value, reason, revoked_at, revoked_by) "
                "VALUES ('acme', ?, ?, 'rotated', 0, 'ops')",
                [(kind, f"{kind}-{i}") for i in range(500) for kind in ("jti", "token_id")],
            )
        await store.revoke(Revocation("acme", "jti", "jti-target", "leaked", 1.0, "ops"))
        seen = _statements_of(store)
        assert await store.is_revoked("acme", "jti-target", ["token_id-7x", "token_id-8x"])
        assert await store.is_revoked("acme", "jti-free", ["token_id-499"])
        assert not await store.is_revoked("acme", "jti-free", ["token_id-9x"])
        store.db.conn.exec_trace = None
        lookups = [(sql, b) for sql, b in seen if "revocations" in sql]
        assert len(lookups) == 3
        for sql, bindings in lookups:
            plan = _plan(store, sql, bindings)
            on_revocations = [step for step in plan if "revocations" in step]
            assert on_revocations, plan
            for step in on_revocations:
                assert step.startswith("SEARCH"), plan  # never SCAN
                assert "tenant=? AND kind=? AND value=?" in step, plan
    finally:
        await store.close()
