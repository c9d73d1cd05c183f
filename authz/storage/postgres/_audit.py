"""The :class:`~authz.storage.protocols.AuditStore` half of the PostgreSQL store (in ``PostgresStore``).

Several writers (the group-commit recorder of every replica, the admin service) extend one linear chain
per tenant. An append is ONE statement, ``tessera_audit_append()`` (migration 0007): it makes sure each of
its tenants has a head row, locks those rows ``FOR UPDATE`` in tenant order (two appends sharing tenants
never wait on each other in a cycle), hashes on top of the locked heads with the server's ``sha256()``,
inserts the events and moves the heads. Sent on an autocommit connection it is its own transaction, so
a head stays locked for the server's work and the commit only, never across a client round trip (five
round trips did before: head upsert, ``FOR UPDATE``, insert, head update, commit). Canonical JSON is
computed before the statement; the arguments are arrays, so a group commit costs one statement whatever
its size.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable, Coroutine, Sequence
from contextlib import AbstractAsyncContextManager
from contextvars import ContextVar
from typing import TYPE_CHECKING, Any, TypeVar

import psycopg
import rfc8785

from authz.chain import canonical_event, event_index
from authz.errors import InvalidArgument
from authz.storage.protocols import AuditCheckpoint, AuditRecord

_COLUMNS = "tenant, seq, time_ms, decision, agent, event, prev_hash, hash"


T = TypeVar("T")

#: The store and connection of the audited mutation running in this task (see ``run_audited``).
AUDITED_CONNECTION: ContextVar[tuple[object, psycopg.AsyncConnection] | None] = ContextVar(
    "tessera_audited_connection", default=None
)


class PostgresAuditStore:
    """Audit chains; needs the host's ``_connection()`` and ``_fetch()`` (see ``PostgresStore``)."""

    if TYPE_CHECKING:

        def _connection(self) -> AbstractAsyncContextManager[psycopg.AsyncConnection]: ...

        async def _fetch(self, sql: str, params: Sequence[Any] = ()) -> list[tuple]: ...

    async def append_events(self, events: Sequence[tuple[str, dict[str, Any]]]) -> list[tuple[str, int, str]]:
        if not events:
            return []
        prepared = _prepare(events)
        # No conn.transaction(): the pool's connections autocommit, so the one statement commits itself
        # (inside run_audited the same call joins the audited transaction instead).
        async with self._connection() as conn:
            return await _append_locked(conn, prepared)

    async def run_audited(
        self,
        mutation: Callable[[], Coroutine[Any, Any, T]],
        events: Callable[[T], Sequence[tuple[str, dict[str, Any]]]],
    ) -> T:
        # The mutation's own _connection() calls get this connection (see PostgresStore._connection),
        # so its conn.transaction() blocks become savepoints of this one transaction.
        async with self._connection() as conn, conn.transaction():
            token = AUDITED_CONNECTION.set((self, conn))
            try:
                result = await mutation()
            finally:
                AUDITED_CONNECTION.reset(token)
            await _append_locked(conn, _prepare(events(result)))
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
        where, params = ["tenant = %s", "seq > %s"], [tenant, after_seq]
        if since_ms is not None:
            where.append("time_ms >= %s")
            params.append(since_ms)
            # Start the scan near the first matching event (clocks are nearly monotonic per chain).
            ((first,),) = await self._fetch(
                "SELECT MIN(seq) FROM audit_events WHERE tenant = %s AND time_ms >= %s", (tenant, since_ms)
            )
            if first is None:
                return
            params[1] = max(after_seq, first - 1)
        if until_ms is not None:
            where.append("time_ms < %s")
            params.append(until_ms)
            ((last,),) = await self._fetch(
                "SELECT MAX(seq) FROM audit_events WHERE tenant = %s AND time_ms < %s", (tenant, until_ms)
            )
            if last is None:
                return
            where.append("seq <= %s")
            params.append(last)
        if agent is not None:
            where.append("agent = %s")
            params.append(agent)
        if decision is not None:
            where.append("decision = %s")
            params.append(decision)
        sql = f"SELECT {_COLUMNS} FROM audit_events WHERE {' AND '.join(where)} ORDER BY seq LIMIT %s"
        while True:
            # Each batch is its own query on a pooled connection, returned before the rows are yielded.
            rows = await self._fetch(sql, (*params, batch))
            for row in rows:
                yield AuditRecord(*row)
            if len(rows) < batch:
                return
            params[1] = rows[-1][1]

    async def audit_head(self, tenant: str) -> tuple[int, str] | None:
        rows = await self._fetch("SELECT seq, hash FROM audit_heads WHERE tenant = %s", (tenant,))
        return (rows[0][0], rows[0][1]) if rows else None

    async def audit_tenants(self) -> list[str]:
        return [row[0] for row in await self._fetch("SELECT tenant FROM audit_heads ORDER BY tenant")]

    async def put_checkpoint(self, checkpoint: AuditCheckpoint) -> None:
        c = checkpoint
        async with self._connection() as conn:
            await conn.execute(
                "INSERT INTO audit_checkpoints (tenant, seq, hash, created_at, public_key, signature) "
                "VALUES (%s, %s, %s, %s, %s, %s) ON CONFLICT (tenant, seq) DO NOTHING",
                (c.tenant, c.seq, c.hash, c.created_at, c.public_key, c.signature),
            )

    async def list_checkpoints(self, tenant: str) -> list[AuditCheckpoint]:
        rows = await self._fetch(
            "SELECT tenant, seq, hash, created_at, public_key, signature FROM audit_checkpoints "
            "WHERE tenant = %s ORDER BY seq",
            (tenant,),
        )
        return [AuditCheckpoint(*row) for row in rows]


def _prepare(events: Sequence[tuple[str, dict[str, Any]]]) -> list[tuple[str, bytes, tuple]]:
    try:
        return [(tenant, canonical_event(event), event_index(event)) for tenant, event in events]
    except (rfc8785.CanonicalizationError, KeyError, TypeError, ValueError) as exc:
        raise InvalidArgument(f"not an audit event: {exc!r}") from exc


async def _append_locked(
    conn: psycopg.AsyncConnection, prepared: list[tuple[str, bytes, tuple]]
) -> list[tuple[str, int, str]]:
    """Extend the chains in one statement (its own transaction, or a part of the caller's)."""
    columns: list[list[Any]] = [[] for _ in range(5)]
    for tenant, canonical, (time_ms, decision, agent) in prepared:
        row = (tenant, time_ms, decision, agent, canonical.decode())
        for column, value in zip(columns, row, strict=True):
            column.append(value)
    cur = await conn.execute(_APPEND_SQL, columns)
    return [(tenant, seq, digest) for tenant, seq, digest in await cur.fetchall()]


# Binary parameters (%b): a text[] sent as text escapes every quote of every event's JSON, one regex
# substitution per character in the driver (most of an append's CPU); in binary each element is sent as
# it is, length-prefixed.
_APPEND_SQL = (
    "SELECT tenant, seq, hash FROM tessera_audit_append("
    "%b::text[], %b::bigint[], %b::text[], %b::text[], %b::text[])"
)
