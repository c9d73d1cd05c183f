"""The SQLite connection every SQLite store half shares: pragmas, migrations, the transaction helper."""

from __future__ import annotations

import os
import sqlite3
import time
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from importlib import resources
from pathlib import Path

from authz.errors import AlreadyExists, StorageError, StoreUnavailable
from authz.storage.sqlite._checkpoint import checkpoint_off_loop


def _migrations() -> list[tuple[str, str]]:
    folder = resources.files("authz.storage.sqlite") / "migrations"
    scripts = [(entry.name, entry.read_text()) for entry in folder.iterdir() if entry.name.endswith(".sql")]
    return sorted(scripts)


class SQLiteDatabase:
    """The connection, its pragmas, migrations and the transaction helper every SQLite store uses."""

    def __init__(self, path: str | Path, *, synchronous: str | None = None):
        self.path = str(path)
        self._depth = 0  # open transaction() blocks; only the outermost one begins and commits
        if self.path != ":memory:":
            Path(self.path).parent.mkdir(parents=True, exist_ok=True)
        try:
            self.conn = sqlite3.connect(self.path, isolation_level=None, check_same_thread=False, timeout=5.0)
            self.conn.execute("PRAGMA journal_mode=WAL")
            sync = synchronous or os.environ.get("TESSERA_SQLITE_SYNCHRONOUS", "NORMAL")
            if sync.upper() not in ("NORMAL", "FULL", "EXTRA"):
                raise StorageError(f"TESSERA_SQLITE_SYNCHRONOUS must be NORMAL, FULL or EXTRA, not {sync!r}")
            self.conn.execute(f"PRAGMA synchronous={sync.upper()}")
            self.conn.execute("PRAGMA foreign_keys=ON")
            self.conn.execute("PRAGMA busy_timeout=5000")
            self._migrate()
            self._checkpointer = checkpoint_off_loop(self.conn, self.path, self)
        except sqlite3.Error as exc:
            raise StoreUnavailable(f"cannot open SQLite database {self.path}: {exc}") from exc

    def _migrate(self) -> None:
        with self.transaction() as conn:
            conn.execute(
                "CREATE TABLE IF NOT EXISTS schema_migrations (name TEXT PRIMARY KEY, applied_at REAL)"
            )
            done = {row[0] for row in conn.execute("SELECT name FROM schema_migrations")}
            for name, script in _migrations():
                if name in done:
                    continue
                for statement in _split_sql(script):
                    conn.execute(statement)
                conn.execute("INSERT INTO schema_migrations VALUES (?, ?)", (name, time.time()))

    @contextmanager
    def transaction(self) -> Iterator[sqlite3.Connection]:
        """``BEGIN IMMEDIATE`` … ``COMMIT``; rolls back on any exception; maps sqlite3 errors.

        Nested inside another ``transaction()`` (an audited admin mutation, see ``run_audited``) it is a
        savepoint: the inner block's failure undoes only its own writes, and nothing commits before the
        outer block does.
        """
        if self._depth:
            yield from self._savepoint()
            return
        conn = self.conn
        self._depth += 1
        try:
            yield from self._outermost(conn)
        finally:
            self._depth -= 1

    def _savepoint(self) -> Iterator[sqlite3.Connection]:
        conn = self.conn
        name = f"tessera_{self._depth}"
        self._depth += 1
        try:
            conn.execute(f"SAVEPOINT {name}")
            try:
                yield conn
            except BaseException as exc:
                conn.execute(f"ROLLBACK TO {name}")
                conn.execute(f"RELEASE {name}")
                if isinstance(exc, sqlite3.Error):
                    raise _translate(exc) from exc
                raise
            conn.execute(f"RELEASE {name}")
        except sqlite3.Error as exc:
            raise _translate(exc) from exc
        finally:
            self._depth -= 1

    def _outermost(self, conn: sqlite3.Connection) -> Iterator[sqlite3.Connection]:
        try:
            conn.execute("BEGIN IMMEDIATE")
        except sqlite3.Error as exc:
            raise _translate(exc) from exc
        try:
            yield conn
        except BaseException as exc:
            conn.execute("ROLLBACK")
            if isinstance(exc, sqlite3.Error):
                raise _translate(exc) from exc
            raise
        else:
            try:
                conn.execute("COMMIT")
            except sqlite3.Error as exc:
                conn.execute("ROLLBACK")
                raise _translate(exc) from exc

    def query(self, sql: str, params: Sequence[object] = ()) -> list[tuple]:
        try:
            return self.conn.execute(sql, params).fetchall()
        except sqlite3.Error as exc:
            raise _translate(exc) from exc

    def stop_checkpoints(self) -> None:
        """Stop the WAL checkpoint thread (:mod:`authz.storage.sqlite._checkpoint`); the connection's
        fallback threshold still bounds the log. For measurements of the log's growth."""
        if self._checkpointer is not None:
            self._checkpointer.stop()

    def close(self) -> None:
        self.stop_checkpoints()
        self.conn.close()


def _split_sql(script: str) -> list[str]:
    """Split a migration on semicolons that end a line (the migrations keep to that style)."""
    lines = [line for line in script.splitlines() if not line.strip().startswith("--")]
    return [s.strip() for s in "\n".join(lines).split(";\n") if s.strip().strip(";")]


def _translate(exc: sqlite3.Error) -> StorageError:
    if isinstance(exc, sqlite3.IntegrityError):
        return AlreadyExists(f"already exists: {exc}")
    if isinstance(exc, sqlite3.OperationalError):
        return StoreUnavailable(f"SQLite unavailable: {exc}")
    return StorageError(f"SQLite error: {exc}")
