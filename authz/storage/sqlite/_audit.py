"""The :class:`~authz.storage.protocols.AuditStore` half of the SQLite store (mixed into ``SQLiteStore``).

Appends run in one ``BEGIN IMMEDIATE`` transaction: the write lock is taken before the heads are read,
so several processes sharing the file still extend each chain linearly. Canonical JSON is computed
before the lock is taken; only the hashing (which needs the head) happens inside.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable, Coroutine, Sequence
from typing import TYPE_CHECKING, Any, TypeVar

import apsw
import rfc8785

from authz.chain import GENESIS_HASH, canonical_event, chain_hash, event_index
from authz.errors import InvalidArgument, StorageError
from authz.storage.protocols import AuditCheckpoint, AuditRecord

if TYPE_CHECKING:
    from authz.storage.sqlite._db import SQLiteDatabase

T = TypeVar("T")

_HEAD_SQL = "SELECT seq, hash FROM audit_heads WHERE tenant = ?"
_COLUMNS = "tenant, seq, time_ms, decision, agent, event, prev_hash, hash"


class SQLiteAuditStore:
    """Audit chains on ``self.db`` (a :class:`~authz.storage.sqlite._db.SQLiteDatabase`)."""

    db: SQLiteDatabase
    #: Appends run to completion on the event-loop thread without suspending (see ChainRecorder).
    appends_inline = True

    async def append_events(self, events: Sequence[tuple[str, dict[str, Any]]]) -> list[tuple[str, int, str]]:
        if not events:
            return []
        prepared = prepare_events(events)
        with self.db.transaction() as conn:
            return _append_locked(conn, prepared)

    async def run_audited(
        self,
        mutation: Callable[[], Coroutine[Any, Any, T]],
        events: Callable[[T], Sequence[tuple[str, dict[str, Any]]]],
    ) -> T:
        with self.db.transaction() as conn:
            result = _run_inline(mutation())
            prepared = prepare_events(events(result))
            _append_locked(conn, prepared)
        return result

    async def iter_events(
        self,
        tenant: str,
        *,
        after_seq: int = 0,
        batch: int = 1000,
        since_ms: int | None = None,
        until_ms: int | None = None,
        agent: str | None = None,
        decision: str | None = None,
    ) -> AsyncIterator[AuditRecord]:
        if batch < 1:
            raise ValueError("batch must be at least 1")
        where, params = ["tenant = ?", "seq > ?"], [tenant, after_seq]
        if since_ms is not None:
            where.append("time_ms >= ?")
            params.append(since_ms)
            # Start the scan near the first matching event (clocks are nearly monotonic per chain).
            (first,) = self.db.query(
                "SELECT MIN(seq) FROM audit_events WHERE tenant = ? AND time_ms >= ?", (tenant, since_ms)
            )[0]
            if first is None:
                return
            params[1] = max(after_seq, first - 1)
        if until_ms is not None:
            where.append("time_ms < ?")
            params.append(until_ms)
            (last,) = self.db.query(
                "SELECT MAX(seq) FROM audit_events WHERE tenant = ? AND time_ms < ?", (tenant, until_ms)
            )[0]
            if last is None:
                return
            where.append("seq <= ?")
            params.append(last)
        if agent is not None:
            where.append("agent = ?")
            params.append(agent)
        if decision is not None:
            where.append("decision = ?")
            params.append(decision)
        sql = f"SELECT {_COLUMNS} FROM audit_events WHERE {' AND '.join(where)} ORDER BY seq LIMIT ?"
        while True:
            rows = self.db.query(sql, (*params, batch))
            for row in rows:
                yield AuditRecord(*row)
            if len(rows) < batch:
                return
            params[1] = rows[-1][1]

    async def audit_head(self, tenant: str) -> tuple[int, str] | None:
        rows = self.db.query(_HEAD_SQL, (tenant,))
        return (rows[0][0], rows[0][1]) if rows else None

    async def audit_tenants(self) -> list[str]:
        return [row[0] for row in self.db.query("SELECT tenant FROM audit_heads ORDER BY tenant")]

    async def put_checkpoint(self, checkpoint: AuditCheckpoint) -> None:
        c = checkpoint
        with self.db.transaction() as conn:
            conn.execute(
                "INSERT INTO audit_checkpoints (tenant, seq, hash, created_at, public_key, signature) "
                "VALUES (?, ?, ?, ?, ?, ?) ON CONFLICT (tenant, seq) DO NOTHING",
                (c.tenant, c.seq, c.hash, c.created_at, c.public_key, c.signature),
            )

    async def list_checkpoints(self, tenant: str) -> list[AuditCheckpoint]:
        rows = self.db.query(
            "SELECT tenant, seq, hash, created_at, public_key, signature FROM audit_checkpoints "
            "WHERE tenant = ? ORDER BY seq",
            (tenant,),
        )
        return [AuditCheckpoint(*row) for row in rows]


def prepare_events(events: Sequence[tuple[str, dict[str, Any]]]) -> list[tuple[str, bytes, tuple]]:
    """Canonical bytes and index columns of each event, computed before any lock is taken."""
    try:
        return [(tenant, canonical_event(event), event_index(event)) for tenant, event in events]
    except (rfc8785.CanonicalizationError, KeyError, TypeError, ValueError) as exc:
        raise InvalidArgument(f"not an audit event: {exc!r}") from exc


def _append_locked(
    conn: apsw.Connection, prepared: list[tuple[str, bytes, tuple]]
) -> list[tuple[str, int, str]]:
    """Extend the chains inside the caller's write transaction (which holds the lock on the heads)."""
    rows: list[tuple] = []
    result: list[tuple[str, int, str]] = []
    heads: dict[str, tuple[int, str]] = {}
    for tenant, canonical, (time_ms, decision, agent) in prepared:
        head = heads.get(tenant)
        if head is None:
            row = conn.execute(_HEAD_SQL, (tenant,)).fetchone()
            head = (row[0], row[1]) if row else (0, GENESIS_HASH)
        seq, prev_hash = head[0] + 1, head[1]
        digest = chain_hash(prev_hash, canonical)
        rows.append((tenant, seq, time_ms, decision, agent, canonical.decode(), prev_hash, digest))
        result.append((tenant, seq, digest))
        heads[tenant] = (seq, digest)
    conn.executemany(f"INSERT INTO audit_events ({_COLUMNS}) VALUES (?, ?, ?, ?, ?, ?, ?, ?)", rows)
    conn.executemany(
        "INSERT INTO audit_heads (tenant, seq, hash) VALUES (?, ?, ?) "
        "ON CONFLICT (tenant) DO UPDATE SET seq = excluded.seq, hash = excluded.hash",
        [(tenant, seq, digest) for tenant, (seq, digest) in heads.items()],
    )
    return result


def _run_inline(step: Coroutine[Any, Any, T]) -> T:
    """Run a SQLite store coroutine to completion without the event loop.

    SQLite store methods never suspend (each is one synchronous transaction), so an audited mutation
    runs start to finish inside the outer transaction and no other task uses the connection meanwhile.
    A coroutine that does suspend is refused rather than interleaved.
    """
    try:
        step.send(None)
    except StopIteration as done:
        return done.value
    step.close()
    raise StorageError("a SQLite store mutation suspended inside an audited transaction")
