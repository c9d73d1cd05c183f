"""SQLite WAL checkpoints run on their own thread (authz/storage/sqlite/_checkpoint.py), not inside the
store's commits on the event loop: a real database file, real connections."""

from __future__ import annotations

import os
import time

from authz.storage.sqlite import _checkpoint
from authz.storage.sqlite._db import SQLiteDatabase


def _write_pages(db: SQLiteDatabase, commits: int) -> None:
    db.conn.execute("CREATE TABLE IF NOT EXISTS filler (x BLOB)")
    for _ in range(commits):
        with db.transaction() as conn:
            conn.execute("INSERT INTO filler VALUES (?)", (os.urandom(3000),))


def _page_size(db: SQLiteDatabase) -> int:
    return db.conn.execute("PRAGMA page_size").fetchone()[0]


def test_the_store_connection_leaves_checkpoints_to_the_thread(tmp_path, monkeypatch):
    monkeypatch.setattr(_checkpoint, "INTERVAL_S", 3600.0)  # the thread does not run during the test
    db = SQLiteDatabase(tmp_path / "t.db")
    try:
        assert db.conn.execute("PRAGMA wal_autocheckpoint").fetchone()[0] == _checkpoint.FALLBACK_PAGES
        _write_pages(db, 1500)
        # SQLite's default (1,000 pages) would have checkpointed inside a commit and restarted the log.
        wal = os.path.getsize(tmp_path / "t.db-wal")
        assert wal > 1200 * _page_size(db)
    finally:
        db.close()


def test_the_thread_checkpoints_what_was_committed_and_stops_on_close(tmp_path, monkeypatch):
    monkeypatch.setattr(_checkpoint, "INTERVAL_S", 0.01)
    db = SQLiteDatabase(tmp_path / "t.db")
    checkpointer = db._checkpointer
    assert checkpointer is not None and checkpointer._thread.is_alive()
    _write_pages(db, 50)
    deadline = time.monotonic() + 30
    while checkpointer.runs == 0 and time.monotonic() < deadline:
        time.sleep(0.01)
    assert checkpointer.runs > 0
    db.close()
    assert not checkpointer._thread.is_alive()


def test_an_in_memory_database_has_no_checkpointer():
    db = SQLiteDatabase(":memory:")
    assert db._checkpointer is None
    db.close()
