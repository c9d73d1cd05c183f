"""The :class:`~authz.storage.protocols.ForwarderStore` half of the SQLite store (in ``SQLiteStore``).

Every write is one ``BEGIN IMMEDIATE`` transaction, so a lease check and the cursor write it guards hold
across processes sharing the file (a ``tessera forward`` process beside the admin service).
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

import apsw

from authz.errors import AlreadyExists, FailedPrecondition, NotFound
from authz.storage.models import Approval, DeadLetter, ForwarderCursor, SinkConfig

if TYPE_CHECKING:
    from authz.storage.sqlite._db import SQLiteDatabase

_CURSOR_COLUMNS = "tenant, sink, seq, last_success_at, last_error, last_error_at"
_DEAD_COLUMNS = (
    "id, tenant, sink, from_seq, to_seq, reason, attempts, created_at, replayed_at, replay_requested_at"
)
_SINK_COLUMNS = "tenant, name, kind, spec, version, created_at, updated_at"


def _sink(row: tuple) -> SinkConfig:
    return SinkConfig(row[0], row[1], row[2], json.loads(row[3]), *row[4:])


def _hold(conn: apsw.Connection, sink: str, holder: str, now: float) -> None:
    row = conn.execute(
        "SELECT 1 FROM forwarder_leases WHERE sink = ? AND holder = ? AND expires_at > ?", (sink, holder, now)
    ).fetchone()
    if row is None:
        raise FailedPrecondition(f"forwarder {holder!r} does not hold the lease on sink {sink!r}")


def _advance(conn: apsw.Connection, tenant: str, sink: str, seq: int, now: float, error: str | None) -> None:
    conn.execute(
        f"INSERT INTO forwarder_cursors ({_CURSOR_COLUMNS}) VALUES (?, ?, ?, ?, ?, ?) "
        "ON CONFLICT (tenant, sink) DO UPDATE SET seq = MAX(forwarder_cursors.seq, excluded.seq), "
        "last_success_at = excluded.last_success_at, last_error = excluded.last_error, "
        "last_error_at = COALESCE(excluded.last_error_at, forwarder_cursors.last_error_at)",
        (tenant, sink, seq, now, error, now if error is not None else None),
    )


class SQLiteForwarderStore:
    """Forwarder leases, cursors and dead letters on ``self.db``."""

    db: SQLiteDatabase

    async def acquire_forwarder_lease(self, sink: str, holder: str, now: float, ttl_s: float) -> bool:
        with self.db.transaction() as conn:
            conn.execute(
                "INSERT INTO forwarder_leases (sink, holder, expires_at) VALUES (?, ?, ?) "
                "ON CONFLICT (sink) DO UPDATE SET holder = excluded.holder, expires_at = excluded.expires_at "
                "WHERE forwarder_leases.holder = excluded.holder OR forwarder_leases.expires_at <= ?",
                (sink, holder, now + ttl_s, now),
            )
            row = conn.execute("SELECT holder FROM forwarder_leases WHERE sink = ?", (sink,)).fetchone()
            return row is not None and row[0] == holder

    async def release_forwarder_lease(self, sink: str, holder: str) -> None:
        with self.db.transaction() as conn:
            conn.execute("DELETE FROM forwarder_leases WHERE sink = ? AND holder = ?", (sink, holder))

    async def forwarder_lease(self, sink: str) -> tuple[str, float] | None:
        rows = self.db.query("SELECT holder, expires_at FROM forwarder_leases WHERE sink = ?", (sink,))
        return (rows[0][0], rows[0][1]) if rows else None

    async def forwarder_cursors(self, sink: str | None = None) -> list[ForwarderCursor]:
        clause, params = ("WHERE sink = ? ", (sink,)) if sink is not None else ("", ())
        rows = self.db.query(
            f"SELECT {_CURSOR_COLUMNS} FROM forwarder_cursors {clause}ORDER BY sink, tenant", params
        )
        return [ForwarderCursor(*row) for row in rows]

    async def get_forwarder_cursor(self, tenant: str, sink: str) -> ForwarderCursor:
        rows = self.db.query(
            f"SELECT {_CURSOR_COLUMNS} FROM forwarder_cursors WHERE tenant = ? AND sink = ?", (tenant, sink)
        )
        return ForwarderCursor(*rows[0]) if rows else ForwarderCursor(tenant, sink)

    async def advance_forwarder_cursor(
        self, tenant: str, sink: str, holder: str, seq: int, now: float
    ) -> None:
        with self.db.transaction() as conn:
            _hold(conn, sink, holder, now)
            _advance(conn, tenant, sink, seq, now, None)

    async def advance_forwarder_cursors(
        self, advances: Sequence[tuple[str, str, str, int, float]], now: float
    ) -> list[bool]:
        applied: list[bool] = []
        with self.db.transaction() as conn:
            for tenant, sink, holder, seq, lease_ttl_s in advances:
                try:
                    _hold(conn, sink, holder, now)
                except FailedPrecondition:
                    applied.append(False)
                    continue
                _advance(conn, tenant, sink, seq, now, None)
                if lease_ttl_s > 0:
                    conn.execute(
                        "UPDATE forwarder_leases SET expires_at = MAX(expires_at, ?) "
                        "WHERE sink = ? AND holder = ?",
                        (now + lease_ttl_s, sink, holder),
                    )
                applied.append(True)
        return applied

    async def record_forwarder_error(self, tenant: str, sink: str, error: str, now: float) -> None:
        with self.db.transaction() as conn:
            conn.execute(
                "INSERT INTO forwarder_cursors (tenant, sink, last_error, last_error_at) VALUES (?, ?, ?, ?) "
                "ON CONFLICT (tenant, sink) DO UPDATE SET last_error = excluded.last_error, "
                "last_error_at = excluded.last_error_at",
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
        with self.db.transaction() as conn:
            _hold(conn, sink, holder, now)
            conn.execute(
                "INSERT INTO forwarder_dead_letters (tenant, sink, from_seq, to_seq, reason, attempts, "
                "created_at) VALUES (?, ?, ?, ?, ?, ?, ?)",
                (tenant, sink, from_seq, to_seq, reason, attempts, now),
            )
            dead_id = conn.last_insert_rowid()  # before _advance's own insert replaces it
            _advance(conn, tenant, sink, to_seq, now, reason)
        return DeadLetter(dead_id, tenant, sink, from_seq, to_seq, reason, attempts, now)

    async def list_dead_letters(
        self, tenant: str | None = None, sink: str | None = None, *, include_replayed: bool = False
    ) -> list[DeadLetter]:
        where: list[str] = []
        params: list[object] = []
        for column, value in (("tenant", tenant), ("sink", sink)):
            if value is not None:
                where.append(f"{column} = ?")
                params.append(value)
        if not include_replayed:
            where.append("replayed_at IS NULL")
        clause = (" WHERE " + " AND ".join(where)) if where else ""
        rows = self.db.query(
            f"SELECT {_DEAD_COLUMNS} FROM forwarder_dead_letters{clause} ORDER BY id", params
        )
        return [DeadLetter(*row) for row in rows]

    async def mark_dead_letter_replayed(self, dead_letter_id: int, now: float) -> DeadLetter:
        with self.db.transaction() as conn:
            conn.execute(
                "UPDATE forwarder_dead_letters SET replayed_at = ? WHERE id = ? AND replayed_at IS NULL",
                (now, dead_letter_id),
            )
            row = conn.execute(
                f"SELECT {_DEAD_COLUMNS} FROM forwarder_dead_letters WHERE id = ?", (dead_letter_id,)
            ).fetchone()
        if row is None:
            raise NotFound(f"dead letter {dead_letter_id} not found")
        return DeadLetter(*row)

    async def request_dead_letter_replay(self, dead_letter_id: int, now: float) -> DeadLetter:
        with self.db.transaction() as conn:
            row = conn.execute(
                f"SELECT {_DEAD_COLUMNS} FROM forwarder_dead_letters WHERE id = ?", (dead_letter_id,)
            ).fetchone()
            if row is None:
                raise NotFound(f"dead letter {dead_letter_id} not found")
            dead = DeadLetter(*row)
            if dead.replayed_at is not None:
                raise FailedPrecondition(f"dead letter {dead_letter_id} was replayed already")
            if dead.replay_requested_at is None:
                conn.execute(
                    "UPDATE forwarder_dead_letters SET replay_requested_at = ? WHERE id = ?",
                    (now, dead_letter_id),
                )
                dead = DeadLetter(*row[:-1], replay_requested_at=now)
        return dead

    # -- per-tenant configuration ----------------------------------------------------------------------
    async def create_sink_config(self, config: SinkConfig) -> None:
        c = config
        with self.db.transaction() as conn:
            if conn.execute(
                "SELECT 1 FROM forwarder_sinks WHERE tenant = ? AND name = ?", (c.tenant, c.name)
            ).fetchone():
                raise AlreadyExists(f"tenant {c.tenant!r} has a sink or route named {c.name!r} already")
            conn.execute(
                f"INSERT INTO forwarder_sinks ({_SINK_COLUMNS}) VALUES (?, ?, ?, ?, ?, ?, ?)",
                (c.tenant, c.name, c.kind, json.dumps(c.spec), c.version, c.created_at, c.updated_at),
            )

    async def update_sink_config(
        self, tenant: str, name: str, spec: dict[str, Any], now: float, expected_version: int | None = None
    ) -> SinkConfig:
        with self.db.transaction() as conn:
            row = conn.execute(
                f"SELECT {_SINK_COLUMNS} FROM forwarder_sinks WHERE tenant = ? AND name = ?", (tenant, name)
            ).fetchone()
            if row is None:
                raise NotFound(f"tenant {tenant!r} has no sink or route named {name!r}")
            if expected_version is not None and row[4] != expected_version:
                raise FailedPrecondition(
                    f"{name!r} is at version {row[4]}, not {expected_version}: it was changed meanwhile"
                )
            conn.execute(
                "UPDATE forwarder_sinks SET spec = ?, version = version + 1, updated_at = ? "
                "WHERE tenant = ? AND name = ?",
                (json.dumps(spec), now, tenant, name),
            )
        return SinkConfig(tenant, name, row[2], spec, row[4] + 1, row[5], now)

    async def get_sink_config(self, tenant: str, name: str) -> SinkConfig | None:
        rows = self.db.query(
            f"SELECT {_SINK_COLUMNS} FROM forwarder_sinks WHERE tenant = ? AND name = ?", (tenant, name)
        )
        return _sink(rows[0]) if rows else None

    async def list_sink_configs(self, tenant: str | None = None) -> list[SinkConfig]:
        clause, params = ("WHERE tenant = ? ", (tenant,)) if tenant is not None else ("", ())
        rows = self.db.query(
            f"SELECT {_SINK_COLUMNS} FROM forwarder_sinks {clause}ORDER BY tenant, name", params
        )
        return [_sink(row) for row in rows]

    async def delete_sink_config(self, tenant: str, name: str) -> bool:
        with self.db.transaction() as conn:
            conn.execute("DELETE FROM forwarder_sinks WHERE tenant = ? AND name = ?", (tenant, name))
            return conn.changes() > 0

    # -- approval timeouts (here, beside the notifications they feed) ----------------------------------
    async def expire_approvals(self, now: float, limit: int = 100) -> list[Approval]:
        columns = (
            "approval_id, tenant, agent, tool, arguments_sha256, reason, status, quorum, created_at, "
            "expires_at, decision_id, decisions"
        )
        with self.db.transaction() as conn:
            rows = conn.execute(
                f"SELECT {columns} FROM approvals WHERE status = 'pending' AND expires_at <= ? "
                "ORDER BY expires_at LIMIT ?",
                (now, limit),
            ).fetchall()
            for row in rows:
                conn.execute(
                    "UPDATE approvals SET status = 'expired' WHERE tenant = ? AND approval_id = ?",
                    (row[1], row[0]),
                )
        return [
            Approval(*row[:6], "expired", *row[7:11], decisions=tuple(json.loads(row[11]))) for row in rows
        ]
