"""PostgreSQL storage for several replicas: :class:`PostgresStore` (psycopg 3 async + ``psycopg_pool``).

Needs the ``postgres`` extra. Schema changes are numbered SQL files in ``migrations/``, applied when a
store first opens (see :mod:`authz.storage.postgres._migrate`).
"""

from __future__ import annotations

from authz.storage.postgres._migrate import migrate, migrations
from authz.storage.postgres._store import CHANNEL, PostgresStore

__all__ = ["CHANNEL", "PostgresStore", "migrate", "migrations"]
