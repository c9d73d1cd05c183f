"""The :class:`~authz.storage.protocols.MemoryWriterStore` half of the SQLite store (in ``SQLiteStore``).

Every change bumps the settings version in its transaction, so the check services' tenant directory
reloads the writers on its next version poll.
"""

from __future__ import annotations

from dataclasses import replace
from typing import TYPE_CHECKING

import apsw

from authz.errors import AlreadyExists, NotFound
from authz.storage.memory_writers import (
    WRITER_COLUMNS,
    RegisteredWriter,
    rotated,
    writer_from_row,
    writer_row,
)

if TYPE_CHECKING:
    from authz.storage.sqlite._db import SQLiteDatabase

_INSERT = f"INSERT INTO memory_writers ({WRITER_COLUMNS}) VALUES ({', '.join('?' * 12)})"
_UPDATE = (
    "UPDATE memory_writers SET public_key = ?, sources = ?, expires_at = ?, updated_at = ?, disabled_at = ?, "
    "disabled_by = ?, previous_public_key = ?, previous_until = ? WHERE tenant = ? AND writer_id = ?"
)


def _changed(conn: apsw.Connection) -> None:
    conn.execute("UPDATE store_versions SET settings = settings + 1 WHERE id = 1")


def _locked(conn: apsw.Connection, tenant: str, writer_id: str) -> RegisteredWriter:
    row = conn.execute(
        f"SELECT {WRITER_COLUMNS} FROM memory_writers WHERE tenant = ? AND writer_id = ?", (tenant, writer_id)
    ).fetchone()
    if row is None:
        raise NotFound(
            f"memory writer {writer_id!r} of tenant {tenant!r} not found", reason="WRITER_NOT_FOUND"
        )
    return writer_from_row(row)


def _write(conn: apsw.Connection, writer: RegisteredWriter) -> None:
    row = writer_row(writer)
    conn.execute(_UPDATE, (*row[2:5], *row[7:], writer.tenant, writer.writer_id))
    _changed(conn)


class SQLiteMemoryWriterStore:
    """Memory writers on ``self.db``."""

    db: SQLiteDatabase

    async def create_memory_writer(self, writer: RegisteredWriter) -> None:
        with self.db.transaction() as conn:
            if conn.execute(
                "SELECT 1 FROM memory_writers WHERE tenant = ? AND writer_id = ?",
                (writer.tenant, writer.writer_id),
            ).fetchone():
                raise AlreadyExists(
                    f"memory writer {writer.writer_id!r} of tenant {writer.tenant!r} exists already",
                    reason="WRITER_EXISTS",
                )
            conn.execute(_INSERT, writer_row(writer))
            _changed(conn)

    async def get_memory_writer(self, tenant: str, writer_id: str) -> RegisteredWriter | None:
        rows = self.db.query(
            f"SELECT {WRITER_COLUMNS} FROM memory_writers WHERE tenant = ? AND writer_id = ?",
            (tenant, writer_id),
        )
        return writer_from_row(rows[0]) if rows else None

    async def list_memory_writers(self, tenant: str | None = None) -> list[RegisteredWriter]:
        clause, params = ("WHERE tenant = ? ", (tenant,)) if tenant is not None else ("", ())
        rows = self.db.query(
            f"SELECT {WRITER_COLUMNS} FROM memory_writers {clause}ORDER BY tenant, writer_id", params
        )
        return [writer_from_row(row) for row in rows]

    async def disable_memory_writer(
        self, tenant: str, writer_id: str, actor: str, now: float
    ) -> RegisteredWriter:
        with self.db.transaction() as conn:
            writer = _locked(conn, tenant, writer_id)
            if writer.disabled:
                return writer
            writer = replace(writer, disabled_at=now, disabled_by=actor, updated_at=now)
            _write(conn, writer)
            return writer

    async def rotate_memory_writer(
        self, tenant: str, writer_id: str, public_key: bytes, previous_until: float | None, now: float
    ) -> RegisteredWriter:
        with self.db.transaction() as conn:
            writer = _locked(conn, tenant, writer_id)
            writer = rotated(writer, public_key, previous_until, now)
            _write(conn, writer)
            return writer
