"""The :class:`~authz.storage.protocols.MemoryWriterStore` half of the PostgreSQL store.

Mixed into ``PostgresStore``; same semantics as :mod:`authz.storage.sqlite._writers`. Every change
bumps the settings version and NOTIFYs in its transaction, so every replica's tenant directory
reloads the writers at once.
"""

from __future__ import annotations

from collections.abc import Sequence
from contextlib import AbstractAsyncContextManager
from dataclasses import replace
from typing import TYPE_CHECKING, Any

import psycopg

from authz.errors import AlreadyExists, NotFound
from authz.storage.memory_writers import (
    WRITER_COLUMNS,
    RegisteredWriter,
    rotated,
    writer_from_row,
    writer_row,
)
from authz.storage.postgres._changes import bump

_INSERT = (
    f"INSERT INTO memory_writers ({WRITER_COLUMNS}) VALUES ({', '.join(['%s'] * 12)}) ON CONFLICT DO NOTHING"
)
_UPDATE = (
    "UPDATE memory_writers SET public_key = %s, sources = %s, expires_at = %s, updated_at = %s, "
    "disabled_at = %s, disabled_by = %s, previous_public_key = %s, previous_until = %s "
    "WHERE tenant = %s AND writer_id = %s"
)


async def _changed(conn: psycopg.AsyncConnection) -> None:
    await bump(conn, "settings")


async def _locked(conn: psycopg.AsyncConnection, tenant: str, writer_id: str) -> RegisteredWriter:
    cur = await conn.execute(
        f"SELECT {WRITER_COLUMNS} FROM memory_writers WHERE tenant = %s AND writer_id = %s FOR UPDATE",
        (tenant, writer_id),
    )
    row = await cur.fetchone()
    if row is None:
        raise NotFound(
            f"memory writer {writer_id!r} of tenant {tenant!r} not found", reason="WRITER_NOT_FOUND"
        )
    return writer_from_row(row)


async def _write(conn: psycopg.AsyncConnection, writer: RegisteredWriter) -> None:
    row = writer_row(writer)
    await conn.execute(_UPDATE, (*row[2:5], *row[7:], writer.tenant, writer.writer_id))
    await _changed(conn)


class PostgresMemoryWriterStore:
    """Memory writers; needs the host's ``_connection()`` and ``_fetch()``."""

    if TYPE_CHECKING:

        def _connection(self) -> AbstractAsyncContextManager[psycopg.AsyncConnection]: ...

        async def _fetch(self, sql: str, params: Sequence[Any] = ()) -> list[tuple]: ...

    async def create_memory_writer(self, writer: RegisteredWriter) -> None:
        async with self._connection() as conn, conn.transaction():
            cur = await conn.execute(_INSERT, writer_row(writer))
            if cur.rowcount != 1:
                raise AlreadyExists(
                    f"memory writer {writer.writer_id!r} of tenant {writer.tenant!r} exists already",
                    reason="WRITER_EXISTS",
                )
            await _changed(conn)

    async def get_memory_writer(self, tenant: str, writer_id: str) -> RegisteredWriter | None:
        rows = await self._fetch(
            f"SELECT {WRITER_COLUMNS} FROM memory_writers WHERE tenant = %s AND writer_id = %s",
            (tenant, writer_id),
        )
        return writer_from_row(rows[0]) if rows else None

    async def list_memory_writers(self, tenant: str | None = None) -> list[RegisteredWriter]:
        clause, params = ("WHERE tenant = %s ", (tenant,)) if tenant is not None else ("", ())
        rows = await self._fetch(
            f"SELECT {WRITER_COLUMNS} FROM memory_writers {clause}ORDER BY tenant, writer_id", params
        )
        return [writer_from_row(row) for row in rows]

    async def disable_memory_writer(
        self, tenant: str, writer_id: str, actor: str, now: float
    ) -> RegisteredWriter:
        async with self._connection() as conn, conn.transaction():
            writer = await _locked(conn, tenant, writer_id)
            if writer.disabled:
                return writer
            writer = replace(writer, disabled_at=now, disabled_by=actor, updated_at=now)
            await _write(conn, writer)
            return writer

    async def rotate_memory_writer(
        self, tenant: str, writer_id: str, public_key: bytes, previous_until: float | None, now: float
    ) -> RegisteredWriter:
        async with self._connection() as conn, conn.transaction():
            writer = await _locked(conn, tenant, writer_id)
            writer = rotated(writer, public_key, previous_until, now)
            await _write(conn, writer)
            return writer
