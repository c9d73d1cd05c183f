"""Numbered SQL migrations (``migrations/NNNN_name.sql``), applied at startup.

Every replica runs :func:`migrate` when its store opens. A session advisory lock serialises them: the
first applies what is pending, the others wait, then find nothing left to do. Each file runs in its own
transaction together with its ``schema_migrations`` row, so a crash leaves it applied or not at all
(PostgreSQL DDL is transactional). Files are applied in name order and never edited once released.
"""

from __future__ import annotations

import contextlib
import re
import time
from importlib import resources

import psycopg

# pg_advisory_lock's single-bigint key space ("tessera1"); per-tenant locks use the two-int4 space.
MIGRATION_LOCK_KEY = 0x7465737365726131

_NAME = re.compile(r"^\d{4}_[a-z0-9_]+\.sql$")


def migrations() -> list[tuple[str, str]]:
    """``(file name, SQL)`` of every migration, in the order they apply."""
    folder = resources.files(__package__) / "migrations"
    return sorted((entry.name, entry.read_text()) for entry in folder.iterdir() if _NAME.match(entry.name))


async def migrate(conn: psycopg.AsyncConnection) -> list[str]:
    """Apply the pending migrations on ``conn`` (an autocommit connection); return the names applied.

    The connection should have no ``statement_timeout``: a migration may take longer than a check.
    """
    await conn.execute("SELECT pg_advisory_lock(%s)", (MIGRATION_LOCK_KEY,))
    try:
        cur = await conn.execute("SELECT to_regclass('schema_migrations') IS NOT NULL")
        row = await cur.fetchone()
        if not (row and row[0]):
            # Checked first rather than CREATE ... IF NOT EXISTS, which needs CREATE on the schema even
            # when the table exists: a least-privilege role can then start against a migrated database.
            await conn.execute(
                "CREATE TABLE schema_migrations (name TEXT PRIMARY KEY, applied_at DOUBLE PRECISION NOT NULL)"
            )
        cur = await conn.execute("SELECT name FROM schema_migrations")
        done = {name for (name,) in await cur.fetchall()}
        applied = []
        for name, script in migrations():
            if name in done:
                continue
            async with conn.transaction():
                # No parameters: psycopg sends the script with the simple protocol, several statements.
                await conn.execute(script)  # type: ignore[arg-type]  # a trusted file, not user input
                await conn.execute(
                    "INSERT INTO schema_migrations (name, applied_at) VALUES (%s, %s)", (name, time.time())
                )
            applied.append(name)
        return applied
    finally:
        # Closing the connection releases the lock too; a failure here must not hide the real error.
        with contextlib.suppress(psycopg.Error):
            await conn.execute("SELECT pg_advisory_unlock(%s)", (MIGRATION_LOCK_KEY,))
