"""SQLite checkpoints run on the store's checkpointer thread, not in the thread that commits.

The committing thread is the event loop's: an automatic checkpoint there held every check in flight
for its two fsyncs about every 150 one-event appends. These tests drive the checkpointer's pass
directly (``db.checkpoint()``, what its thread runs every 50 ms), so nothing here depends on timing.
"""

from __future__ import annotations

import gc
import threading
from pathlib import Path

import apsw
import pytest

from authz.audit import admin_event, verify_chain
from authz.errors import StorageError
from authz.storage.sqlite import SQLiteStore
from authz.storage.sqlite import _db as sqlite_db
from tests.sqlite_raw import connect


def _events(n: int, start: int = 1) -> list[tuple[str, dict]]:
    return [
        ("acme", admin_event("acme", "alice", "policy.promote", f"v{i}", time_ms=i))
        for i in range(start, start + n)
    ]


def _wal_frames(path: Path) -> int:
    """Frames in the WAL as another connection sees them (a PASSIVE checkpoint that copies nothing
    it could not copy anyway, run with automatic checkpoints off)."""
    conn = connect(path)
    try:
        conn.execute("PRAGMA wal_autocheckpoint=0")
        return conn.execute("PRAGMA wal_checkpoint(PASSIVE)").fetchone()[1]
    finally:
        conn.close()


def _checkpointer(store: SQLiteStore) -> threading.Thread | None:
    return store.db._checkpointer


async def test_commits_leave_checkpoints_to_the_checkpointer_thread(tmp_path: Path):
    store = SQLiteStore(tmp_path / "audit.db")
    try:
        (autocheckpoint,) = store.db.conn.execute("PRAGMA wal_autocheckpoint").fetchone()
        assert autocheckpoint == 0  # the committing connection never checkpoints by itself
        thread = _checkpointer(store)
        assert thread is not None and thread.is_alive() and thread in threading.enumerate()
        await store.append_events(_events(50))
        frames, copied = store.db.checkpoint()
        assert frames > 0 and copied == frames  # everything committed is now in the database file
        assert (await verify_chain(store, "acme")).ok
    finally:
        await store.close()
    assert not thread.is_alive()  # close() stops the thread


class _Statements:
    """The checkpointer's connection, recording the statements it runs."""

    def __init__(self, conn: apsw.Connection):
        self.conn, self.sql = conn, []

    def execute(self, sql: str, *args):
        self.sql.append(sql)
        return self.conn.execute(sql, *args)

    def close(self) -> None:
        self.conn.close()


async def test_a_long_wal_is_restarted_and_appends_continue_the_chain(tmp_path: Path, monkeypatch):
    monkeypatch.setattr(sqlite_db, "RESTART_FRAMES", 20)
    store = SQLiteStore(tmp_path / "audit.db")
    spy = store.db._checkpointer._conn = _Statements(store.db._checkpointer._conn)
    try:
        store.db.checkpoint()  # the migrations' pages
        await store.append_events(_events(1))
        spy.sql.clear()
        store.db.checkpoint()
        assert "PRAGMA wal_checkpoint(RESTART)" not in spy.sql  # a short WAL: PASSIVE passes only
        for batch in range(2, 11):  # ~5 frames per commit: the WAL passes 20 frames
            await store.append_events(_events(1, start=batch))
        frames, copied = store.db.checkpoint()
        assert "PRAGMA wal_checkpoint(RESTART)" in spy.sql
        assert frames == copied  # all copied, and with RESTART the next writer reuses the WAL from its start
        await store.append_events(_events(1, start=11))
        assert 0 < _wal_frames(tmp_path / "audit.db") < 20  # the next commit wrote at the WAL's start
        result = await verify_chain(store, "acme")
        assert result.ok and result.events_checked == 11, result.summary()
        assert await store.audit_head("acme") == (11, result.chain_hash)
    finally:
        await store.close()


async def test_without_the_checkpointer_sqlite_checkpoints_by_itself(tmp_path: Path):
    store = SQLiteStore(tmp_path / "audit.db", checkpointer=False)
    try:
        (autocheckpoint,) = store.db.conn.execute("PRAGMA wal_autocheckpoint").fetchone()
        assert autocheckpoint == 1000 and _checkpointer(store) is None
        with pytest.raises(StorageError):
            store.db.checkpoint()
    finally:
        await store.close()


async def test_a_checkpoint_inside_a_transaction_is_refused_not_deadlocked(tmp_path: Path):
    store = SQLiteStore(tmp_path / "audit.db")
    try:
        with store.db.transaction(), pytest.raises(StorageError, match="inside a transaction"):
            store.db.checkpoint()
        await store.append_events(_events(1))  # the write lock was released
    finally:
        await store.close()


async def test_a_store_dropped_without_close_stops_its_checkpointer(tmp_path: Path):
    store = SQLiteStore(tmp_path / "audit.db")
    await store.append_events(_events(1))
    thread = _checkpointer(store)
    assert thread is not None and thread.is_alive()
    del store
    gc.collect()
    thread.join(timeout=10)  # it notices within one pass interval
    assert not thread.is_alive()
