"""The :class:`~authz.storage.protocols.ForwarderStore` half of the SQLite store (in ``SQLiteStore``).

Every write is one ``BEGIN IMMEDIATE`` transaction, so a lease check and the cursor write it guards hold
across processes sharing the file (a ``tessera forward`` process beside the admin service).
"""

from __future__ import annotations

import sqlite3
from typing import TYPE_CHECKING

from authz.errors import FailedPrecondition, NotFound
from authz.storage.models import DeadLetter, ForwarderCursor

if TYPE_CHECKING:
    from authz.storage.sqlite._db import SQLiteDatabase

_CURSOR_COLUMNS = "tenant, sink, seq, last_success_at, last_error, last_error_at"
_DEAD_COLUMNS = "id, tenant, sink, from_seq, to_seq, reason, attempts, created_at, replayed_at"


def _hold(conn: sqlite3.Connection, sink: str, holder: str, now: float) -> None:
    row = conn.execute(
        "SELECT 1 FROM forwarder_leases WHERE sink = ? AND holder = ? AND expires_at > ?", (sink, holder, now)
    ).fetchone()
    if row is None:
        raise FailedPrecondition(f"forwarder {holder!r} does not hold the lease on sink {sink!r}")


def _advance(
    conn: sqlite3.Connection, tenant: str, sink: str, seq: int, now: float, error: str | None
) -> None:
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
            cur = conn.execute(
                "INSERT INTO forwarder_dead_letters (tenant, sink, from_seq, to_seq, reason, attempts, "
                "created_at) VALUES (?, ?, ?, ?, ?, ?, ?)",
                (tenant, sink, from_seq, to_seq, reason, attempts, now),
            )
            _advance(conn, tenant, sink, to_seq, now, reason)
            dead_id = cur.lastrowid
        return DeadLetter(int(dead_id or 0), tenant, sink, from_seq, to_seq, reason, attempts, now)

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
