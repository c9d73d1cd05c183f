"""The :class:`~authz.storage.protocols.ForwarderStore` half of the PostgreSQL store (in ``PostgresStore``).

Same semantics as :mod:`authz.storage.sqlite._forward`. With several replicas: the lease upsert's
``ON CONFLICT DO UPDATE ... WHERE`` is evaluated on the row it locks, so of two instances racing for an
expired lease one wins; a cursor write first reads its lease ``FOR SHARE``, so a takeover (which updates
that row) waits for it or makes it fail, never interleaves with it.
"""

from __future__ import annotations

from collections.abc import Sequence
from contextlib import AbstractAsyncContextManager
from typing import TYPE_CHECKING, Any

import psycopg
from psycopg.types.json import Jsonb

from authz.errors import AlreadyExists, FailedPrecondition, NotFound
from authz.storage.models import Approval, DeadLetter, ForwarderCursor, SinkConfig

_CURSOR_COLUMNS = "tenant, sink, seq, last_success_at, last_error, last_error_at"
_DEAD_COLUMNS = (
    "id, tenant, sink, from_seq, to_seq, reason, attempts, created_at, replayed_at, replay_requested_at"
)
_SINK_COLUMNS = "tenant, name, kind, spec, version, created_at, updated_at"


async def _hold(conn: psycopg.AsyncConnection, sink: str, holder: str, now: float) -> None:
    cur = await conn.execute(
        "SELECT 1 FROM forwarder_leases WHERE sink = %s AND holder = %s AND expires_at > %s FOR SHARE",
        (sink, holder, now),
    )
    if await cur.fetchone() is None:
        raise FailedPrecondition(f"forwarder {holder!r} does not hold the lease on sink {sink!r}")


async def _advance(
    conn: psycopg.AsyncConnection, tenant: str, sink: str, seq: int, now: float, error: str | None
) -> None:
    await conn.execute(
        f"INSERT INTO forwarder_cursors ({_CURSOR_COLUMNS}) VALUES (%s, %s, %s, %s, %s, %s) "
        "ON CONFLICT (tenant, sink) DO UPDATE SET seq = GREATEST(forwarder_cursors.seq, excluded.seq), "
        "last_success_at = excluded.last_success_at, last_error = excluded.last_error, "
        "last_error_at = COALESCE(excluded.last_error_at, forwarder_cursors.last_error_at)",
        (tenant, sink, seq, now, error, now if error is not None else None),
    )


class PostgresForwarderStore:
    """Forwarder leases, cursors and dead letters; needs the host's ``_connection()`` and ``_fetch()``."""

    if TYPE_CHECKING:

        def _connection(self) -> AbstractAsyncContextManager[psycopg.AsyncConnection]: ...

        async def _fetch(self, sql: str, params: Sequence[Any] = ()) -> list[tuple]: ...

    async def acquire_forwarder_lease(self, sink: str, holder: str, now: float, ttl_s: float) -> bool:
        async with self._connection() as conn, conn.transaction():
            cur = await conn.execute(
                "INSERT INTO forwarder_leases (sink, holder, expires_at) VALUES (%s, %s, %s) "
                "ON CONFLICT (sink) DO UPDATE SET holder = excluded.holder, expires_at = excluded.expires_at "
                "WHERE forwarder_leases.holder = excluded.holder OR forwarder_leases.expires_at <= %s "
                "RETURNING holder",
                (sink, holder, now + ttl_s, now),
            )
            return await cur.fetchone() is not None

    async def release_forwarder_lease(self, sink: str, holder: str) -> None:
        async with self._connection() as conn:
            await conn.execute("DELETE FROM forwarder_leases WHERE sink = %s AND holder = %s", (sink, holder))

    async def forwarder_lease(self, sink: str) -> tuple[str, float] | None:
        rows = await self._fetch("SELECT holder, expires_at FROM forwarder_leases WHERE sink = %s", (sink,))
        return (rows[0][0], rows[0][1]) if rows else None

    async def forwarder_cursors(self, sink: str | None = None) -> list[ForwarderCursor]:
        clause, params = ("WHERE sink = %s ", (sink,)) if sink is not None else ("", ())
        rows = await self._fetch(
            f"SELECT {_CURSOR_COLUMNS} FROM forwarder_cursors {clause}ORDER BY sink, tenant", params
        )
        return [ForwarderCursor(*row) for row in rows]

    async def get_forwarder_cursor(self, tenant: str, sink: str) -> ForwarderCursor:
        rows = await self._fetch(
            f"SELECT {_CURSOR_COLUMNS} FROM forwarder_cursors WHERE tenant = %s AND sink = %s", (tenant, sink)
        )
        return ForwarderCursor(*rows[0]) if rows else ForwarderCursor(tenant, sink)

    async def advance_forwarder_cursor(
        self, tenant: str, sink: str, holder: str, seq: int, now: float
    ) -> None:
        async with self._connection() as conn, conn.transaction():
            await _hold(conn, sink, holder, now)
            await _advance(conn, tenant, sink, seq, now, None)

    async def advance_forwarder_cursors(
        self, advances: Sequence[tuple[str, str, str, int, float]], now: float
    ) -> list[bool]:
        applied: list[bool] = []
        async with self._connection() as conn, conn.transaction():
            for tenant, sink, holder, seq, lease_ttl_s in advances:
                try:
                    await _hold(conn, sink, holder, now)
                except FailedPrecondition:
                    applied.append(False)
                    continue
                await _advance(conn, tenant, sink, seq, now, None)
                if lease_ttl_s > 0:
                    await conn.execute(
                        "UPDATE forwarder_leases SET expires_at = GREATEST(expires_at, %s) "
                        "WHERE sink = %s AND holder = %s",
                        (now + lease_ttl_s, sink, holder),
                    )
                applied.append(True)
        return applied

    async def record_forwarder_error(self, tenant: str, sink: str, error: str, now: float) -> None:
        async with self._connection() as conn:
            await conn.execute(
                "INSERT INTO forwarder_cursors (tenant, sink, last_error, last_error_at) "
                "VALUES (%s, %s, %s, %s) ON CONFLICT (tenant, sink) DO UPDATE SET "
                "last_error = excluded.last_error, last_error_at = excluded.last_error_at",
                (tenant, sink, error, now),
            )

    async def dead_letter_batch(
        self,
        tenant: str,
        sink: str,
        holder: str,
        from_seq: int,
        to_seq: int,
        reason: str,
        attempts: int,
        now: float,
    ) -> DeadLetter:
        async with self._connection() as conn, conn.transaction():
            await _hold(conn, sink, holder, now)
            cur = await conn.execute(
                "INSERT INTO forwarder_dead_letters (tenant, sink, from_seq, to_seq, reason, attempts, "
                "created_at) VALUES (%s, %s, %s, %s, %s, %s, %s) RETURNING id",
                (tenant, sink, from_seq, to_seq, reason, attempts, now),
            )
            row = await cur.fetchone()
            await _advance(conn, tenant, sink, to_seq, now, reason)
        assert row is not None
        return DeadLetter(int(row[0]), tenant, sink, from_seq, to_seq, reason, attempts, now)

    async def list_dead_letters(
        self, tenant: str | None = None, sink: str | None = None, *, include_replayed: bool = False
    ) -> list[DeadLetter]:
        where: list[str] = []
        params: list[object] = []
        for column, value in (("tenant", tenant), ("sink", sink)):
            if value is not None:
                where.append(f"{column} = %s")
                params.append(value)
        if not include_replayed:
            where.append("replayed_at IS NULL")
        clause = (" WHERE " + " AND ".join(where)) if where else ""
        rows = await self._fetch(
            f"SELECT {_DEAD_COLUMNS} FROM forwarder_dead_letters{clause} ORDER BY id", params
        )
        return [DeadLetter(*row) for row in rows]

    async def mark_dead_letter_replayed(self, dead_letter_id: int, now: float) -> DeadLetter:
        async with self._connection() as conn, conn.transaction():
            await conn.execute(
                "UPDATE forwarder_dead_letters SET replayed_at = %s WHERE id = %s AND replayed_at IS NULL",
                (now, dead_letter_id),
            )
            cur = await conn.execute(
                f"SELECT {_DEAD_COLUMNS} FROM forwarder_dead_letters WHERE id = %s", (dead_letter_id,)
            )
            row = await cur.fetchone()
        if row is None:
            raise NotFound(f"dead letter {dead_letter_id} not found")
        return DeadLetter(*row)

    async def request_dead_letter_replay(self, dead_letter_id: int, now: float) -> DeadLetter:
        async with self._connection() as conn, conn.transaction():
            cur = await conn.execute(
                f"SELECT {_DEAD_COLUMNS} FROM forwarder_dead_letters WHERE id = %s FOR UPDATE",
                (dead_letter_id,),
            )
            row = await cur.fetchone()
            if row is None:
                raise NotFound(f"dead letter {dead_letter_id} not found")
            dead = DeadLetter(*row)
            if dead.replayed_at is not None:
                raise FailedPrecondition(f"dead letter {dead_letter_id} was replayed already")
            if dead.replay_requested_at is None:
                await conn.execute(
                    "UPDATE forwarder_dead_letters SET replay_requested_at = %s WHERE id = %s",
                    (now, dead_letter_id),
                )
                dead = DeadLetter(*row[:-1], replay_requested_at=now)
        return dead

    # -- per-tenant configuration ----------------------------------------------------------------------
    async def create_sink_config(self, config: SinkConfig) -> None:
        c = config
        try:
            async with self._connection() as conn:
                await conn.execute(
                    f"INSERT INTO forwarder_sinks ({_SINK_COLUMNS}) VALUES (%s, %s, %s, %s, %s, %s, %s)",
                    (c.tenant, c.name, c.kind, Jsonb(c.spec), c.version, c.created_at, c.updated_at),
                )
        except AlreadyExists:
            raise AlreadyExists(f"tenant {c.tenant!r} has a sink or route named {c.name!r} already") from None

    async def update_sink_config(
        self, tenant: str, name: str, spec: dict[str, Any], now: float, expected_version: int | None = None
    ) -> SinkConfig:
        async with self._connection() as conn, conn.transaction():
            cur = await conn.execute(
                f"SELECT {_SINK_COLUMNS} FROM forwarder_sinks WHERE tenant = %s AND name = %s FOR UPDATE",
                (tenant, name),
            )
            row = await cur.fetchone()
            if row is None:
                raise NotFound(f"tenant {tenant!r} has no sink or route named {name!r}")
            if expected_version is not None and row[4] != expected_version:
                raise FailedPrecondition(
                    f"{name!r} is at version {row[4]}, not {expected_version}: it was changed meanwhile"
                )
            await conn.execute(
                "UPDATE forwarder_sinks SET spec = %s, version = version + 1, updated_at = %s "
                "WHERE tenant = %s AND name = %s",
                (Jsonb(spec), now, tenant, name),
            )
        return SinkConfig(tenant, name, row[2], spec, row[4] + 1, row[5], now)

    async def get_sink_config(self, tenant: str, name: str) -> SinkConfig | None:
        rows = await self._fetch(
            f"SELECT {_SINK_COLUMNS} FROM forwarder_sinks WHERE tenant = %s AND name = %s", (tenant, name)
        )
        return SinkConfig(*rows[0]) if rows else None

    async def list_sink_configs(self, tenant: str | None = None) -> list[SinkConfig]:
        clause, params = ("WHERE tenant = %s ", (tenant,)) if tenant is not None else ("", ())
        rows = await self._fetch(
            f"SELECT {_SINK_COLUMNS} FROM forwarder_sinks {clause}ORDER BY tenant, name", params
        )
        return [SinkConfig(*row) for row in rows]

    async def delete_sink_config(self, tenant: str, name: str) -> bool:
        async with self._connection() as conn:
            cur = await conn.execute(
                "DELETE FROM forwarder_sinks WHERE tenant = %s AND name = %s", (tenant, name)
            )
            return cur.rowcount > 0

    # -- approval timeouts (here, beside the notifications they feed) ----------------------------------
    async def expire_approvals(self, now: float, limit: int = 100) -> list[Approval]:
        columns = (
            "approval_id, tenant, agent, tool, arguments_sha256, reason, status, quorum, created_at, "
            "expires_at, decision_id, decisions"
        )
        # SKIP LOCKED: a replica sweeping at the same time takes other rows, never the same ones twice.
        rows = await self._fetch(
            f"UPDATE approvals SET status = 'expired' WHERE (tenant, approval_id) IN ("
            "SELECT tenant, approval_id FROM approvals WHERE status = 'pending' AND expires_at <= %s "
            f"ORDER BY expires_at LIMIT %s FOR UPDATE SKIP LOCKED) RETURNING {columns}",
            (now, limit),
        )
        approvals = [Approval(*row[:11], decisions=tuple(row[11])) for row in rows]
        return sorted(approvals, key=lambda a: a.expires_at)
