"""SQLite storage, the embedded default: :class:`SQLiteStore` (APSW with its own SQLite build, WAL, one file).

Same shape as :mod:`authz.storage.postgres`: the connection and migrations in ``_db``, the store in
``_store`` with its admin and audit halves in ``_admin`` and ``_audit``; schema changes are numbered SQL
files in ``migrations/``, applied when the database is opened.
"""

from __future__ import annotations

from authz.storage.sqlite._db import SQLiteDatabase
from authz.storage.sqlite._store import SQLiteStore

__all__ = ["SQLiteDatabase", "SQLiteStore"]
