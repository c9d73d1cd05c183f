"""The SQLite connection every SQLite store half shares: pragmas, migrations, the transaction helper.

Tessera talks to SQLite through APSW, whose wheel carries its own SQLite build, not through the
standard library's ``sqlite3``, which uses whatever SQLite the platform has. SQLite 3.7.0 to 3.51.2
have the WAL-reset bug (https://sqlite.org/wal.html#walresetbug): when several connections write and
checkpoint one WAL database (the check service, its checkpointer thread, a forwarder, the CLI), a
checkpoint can lose frames and the audit chain's pages are corrupted. Debian 12's SQLite is 3.40.1; a
``make bench`` run corrupted its audit database exactly so. :func:`require_wal_reset_fix` refuses a
library without the fix rather than risking the audit chain.
"""

from __future__ import annotations

import logging
import os
import threading
import time
import weakref
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from importlib import resources
from pathlib import Path

import apsw

from authz.errors import AlreadyExists, StorageError, StoreUnavailable

log = logging.getLogger("tessera.storage.sqlite")

#: How often the checkpointer copies committed WAL frames into the database file (seconds).
CHECKPOINT_INTERVAL_S = 0.05
#: WAL length (frames) past which the checkpointer restarts the WAL, briefly holding this process's
#: writers (see :class:`_Checkpointer`); about 16 MiB with 4 KiB pages.
RESTART_FRAMES = 4096

#: The first SQLite release of each line with the WAL-reset fix (3.51.3, and the 3.50.7 and 3.44.6
#: backports); any later line has it too.
_WAL_RESET_FIXED = {(3, 44): (3, 44, 6), (3, 50): (3, 50, 7)}
_WAL_RESET_FIXED_FROM = (3, 51, 3)


def has_wal_reset_fix(version: str) -> bool:
    """Whether SQLite ``version`` (``"3.54.1"``) has the fix for the WAL-reset corruption bug."""
    parts = tuple(int(part) for part in version.split(".")[:3])
    if parts >= _WAL_RESET_FIXED_FROM:
        return True
    fixed = _WAL_RESET_FIXED.get(parts[:2])
    return fixed is not None and parts >= fixed


def require_wal_reset_fix() -> None:
    """Raise :class:`StoreUnavailable` when the linked SQLite has the WAL-reset bug."""
    version = apsw.sqlite_lib_version()
    if not has_wal_reset_fix(version):
        raise StoreUnavailable(
            f"SQLite {version} has the WAL-reset corruption bug (https://sqlite.org/wal.html#walresetbug); "
            "Tessera needs 3.51.3 or later (the apsw wheel from PyPI carries one)"
        )


def _migrations() -> list[tuple[str, str]]:
    folder = resources.files("authz.storage.sqlite") / "migrations"
    scripts = [(entry.name, entry.read_text()) for entry in folder.iterdir() if entry.name.endswith(".sql")]
    return sorted(scripts)


class SQLiteDatabase:
    """The connection, its pragmas, migrations and the transaction helper every SQLite store uses."""

    def __init__(self, path: str | Path, *, synchronous: str | None = None, checkpointer: bool = True):
        self.path = str(path)
        self._depth = 0  # open transaction() blocks; only the outermost one begins and commits
        # Held from BEGIN to COMMIT by this process's writers, and by the checkpointer while it
        # restarts the WAL: they take turns here instead of in SQLite's busy handler (which sleeps).
        self._write_lock = threading.Lock()
        self._checkpointer: _Checkpointer | None = None
        if self.path != ":memory:":
            Path(self.path).parent.mkdir(parents=True, exist_ok=True)
        if self.path != ":memory:":
            require_wal_reset_fix()
        try:
            # Autocommit unless inside transaction(); one connection, used from the event loop's thread
            # (SQLite's own mutex serializes the rare call from another thread).
            self.conn = apsw.Connection(self.path)
            self.conn.set_busy_timeout(5000)
            self.conn.execute("PRAGMA journal_mode=WAL")
            sync = synchronous or os.environ.get("TESSERA_SQLITE_SYNCHRONOUS", "NORMAL")
            if sync.upper() not in ("NORMAL", "FULL", "EXTRA"):
                raise StorageError(f"TESSERA_SQLITE_SYNCHRONOUS must be NORMAL, FULL or EXTRA, not {sync!r}")
            self.conn.execute(f"PRAGMA synchronous={sync.upper()}")
            self.conn.execute("PRAGMA foreign_keys=ON")
            self._migrate()
            if checkpointer and self.path != ":memory:":
                # Checkpoints (copying the WAL into the database file, two fsyncs) leave the committing
                # thread, which is the event loop's: one ran every ~150 one-event appends and held the
                # loop for its fsyncs. The checkpointer thread does them with the GIL released.
                self.conn.execute("PRAGMA wal_autocheckpoint=0")
                self._checkpointer = _Checkpointer(self.path, self._write_lock, sync.upper())
                self._checkpointer.start()
                # A store dropped without close() (a short-lived CLI call, a test) stops its thread too.
                weakref.finalize(self, self._checkpointer.stop_soon)
        except apsw.Error as exc:
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
    def transaction(self) -> Iterator[apsw.Connection]:
        """``BEGIN IMMEDIATE`` … ``COMMIT``; rolls back on any exception; maps SQLite errors.

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

    def _savepoint(self) -> Iterator[apsw.Connection]:
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
                if isinstance(exc, apsw.Error):
                    raise _translate(exc) from exc
                raise
            conn.execute(f"RELEASE {name}")
        except apsw.Error as exc:
            raise _translate(exc) from exc
        finally:
            self._depth -= 1

    def _outermost(self, conn: apsw.Connection) -> Iterator[apsw.Connection]:
        with self._write_lock:
            try:
                conn.execute("BEGIN IMMEDIATE")
            except apsw.Error as exc:
                raise _translate(exc) from exc
            try:
                yield conn
            except BaseException as exc:
                conn.execute("ROLLBACK")
                if isinstance(exc, apsw.Error):
                    raise _translate(exc) from exc
                raise
            else:
                try:
                    conn.execute("COMMIT")
                except apsw.Error as exc:
                    conn.execute("ROLLBACK")
                    raise _translate(exc) from exc

    def query(self, sql: str, params: Sequence[object] = ()) -> list[tuple]:
        try:
            return self.conn.execute(sql, params).fetchall()
        except apsw.Error as exc:
            raise _translate(exc) from exc

    def checkpoint(self) -> tuple[int, int]:
        """One checkpoint pass now (what the checkpointer thread runs every
        :data:`CHECKPOINT_INTERVAL_S`): ``(frames in the WAL, frames copied)`` after it."""
        if self._checkpointer is None:
            raise StorageError("this database has no checkpointer")
        if self._depth:  # a RESTART waits for the write lock this thread's transaction holds
            raise StorageError("checkpoint() inside a transaction")
        return self._checkpointer.checkpoint()

    def close(self) -> None:
        if self._checkpointer is not None:
            self._checkpointer.stop()
        self.conn.close()


class _Checkpointer(threading.Thread):
    """Copies the WAL into the database file off the writers' thread (``wal_autocheckpoint`` is off).

    A PASSIVE checkpoint runs beside the writers without blocking them, but under steady appends it
    never finds the WAL fully copied, and only a fully copied WAL is reused from its start: so once the
    WAL passes :data:`RESTART_FRAMES`, a RESTART checkpoint runs holding the process's write lock (the
    frames left to copy are the few written since the last pass). Other processes on the file keep
    SQLite's automatic checkpoints; a busy checkpoint is simply tried again on the next pass.
    """

    def __init__(self, path: str, write_lock: threading.Lock, synchronous: str):
        super().__init__(name="tessera-sqlite-checkpoint", daemon=True)
        self._stopped = threading.Event()
        self._write_lock = write_lock
        # A short busy timeout: a RESTART holds this process's writers while it waits (e.g. for another
        # process's reader); when busy it gives up and the next pass tries again.
        self._conn = apsw.Connection(path)
        self._conn.set_busy_timeout(10)
        self._conn.execute(f"PRAGMA synchronous={synchronous}")
        self._conn.execute("PRAGMA wal_autocheckpoint=0")
        self._pass = threading.Lock()  # one pass at a time: the thread's, or a caller's checkpoint()

    def run(self) -> None:
        failing = False  # logged once per failing streak, not every pass
        try:
            while not self._stopped.wait(CHECKPOINT_INTERVAL_S):
                try:
                    self.checkpoint()
                except apsw.Error as exc:  # e.g. the disk is full: the WAL keeps the data meanwhile
                    if self._stopped.is_set():
                        break  # stopped between the wait and the pass: nothing failed
                    if not failing:
                        log.warning("SQLite checkpoints failing (the WAL grows until they succeed): %s", exc)
                    failing = True
                else:
                    if failing:
                        log.warning("SQLite checkpoints succeed again")
                    failing = False
        finally:
            with self._pass:
                self._conn.close()

    def checkpoint(self) -> tuple[int, int]:
        with self._pass:
            if self._stopped.is_set():
                raise apsw.ConnectionClosedError("the checkpointer is stopped")
            _, frames, copied = self._conn.execute("PRAGMA wal_checkpoint(PASSIVE)").fetchone()
            if frames >= RESTART_FRAMES:
                with self._write_lock:
                    _, frames, copied = self._conn.execute("PRAGMA wal_checkpoint(RESTART)").fetchone()
            return frames, copied

    def stop_soon(self) -> None:
        """Ask the thread to end (it closes its connection on the way out); does not wait."""
        self._stopped.set()

    def stop(self) -> None:
        self._stopped.set()
        if self.is_alive() and threading.current_thread() is not self:
            self.join()


def _split_sql(script: str) -> list[str]:
    """Split a migration on semicolons that end a line (the migrations keep to that style)."""
    lines = [line for line in script.splitlines() if not line.strip().startswith("--")]
    return [s.strip() for s in "\n".join(lines).split(";\n") if s.strip().strip(";")]


#: SQLite result codes that say the database cannot serve now (locked, busy, I/O, full, unreadable, a
#: statement the schema does not support): the caller may retry or fail over.
_UNAVAILABLE = (
    apsw.BusyError,
    apsw.LockedError,
    apsw.IOError,
    apsw.FullError,
    apsw.CantOpenError,
    apsw.ReadOnlyError,
    apsw.ProtocolError,
    apsw.PermissionsError,
    apsw.InterruptError,
    apsw.SchemaChangeError,
    apsw.SQLError,
)


def _translate(exc: apsw.Error) -> StorageError:
    if isinstance(exc, apsw.ConstraintError):
        return AlreadyExists(f"already exists: {exc}")
    if isinstance(exc, _UNAVAILABLE):
        return StoreUnavailable(f"SQLite unavailable: {exc}")
    return StorageError(f"SQLite error: {exc}")
