"""WAL checkpoints on a thread of their own, off the event loop.

SQLite's automatic checkpoint runs inside whichever commit pushes the write-ahead log past its threshold
(1,000 pages): on the check path that commit is an audit append, and copying the log back into the
database costs it ~3 ms of CPU, once every ~150 appends, on the event loop thread that every other
check is waiting for. That is the tail of a check's latency (its p99), not its average.

So the store's own connection checkpoints only as a safety net (:data:`FALLBACK_PAGES`, if this thread
cannot keep up or has died), and a daemon thread with a second connection runs a ``PASSIVE`` checkpoint
every :data:`INTERVAL_S`: it never waits for a reader or writer (a busy log is simply tried again next
time), and sqlite3 releases the GIL while it copies, so the work lands on another core.
"""

from __future__ import annotations

import logging
import sqlite3
import threading
import weakref
from pathlib import Path
from urllib.parse import quote

log = logging.getLogger("tessera.storage")

#: How often the thread checkpoints (each run copies only what was committed since the last one).
INTERVAL_S = 0.05
#: The store connection's own automatic checkpoint threshold (pages), reached only if this thread falls
#: behind: it bounds the log (~40 MB at 4 KiB pages) whatever happens to the thread.
FALLBACK_PAGES = 10_000


class WalCheckpointer:
    """Checkpoints the database at ``path`` every :data:`INTERVAL_S` until :meth:`stop` (or until the
    object that started it, ``owner``, is garbage collected)."""

    def __init__(self, path: str, owner: object, *, interval_s: float | None = None):
        # mode=rw: never create the file (a store closed and deleted under a still-running thread).
        uri = f"file:{quote(str(Path(path).resolve()))}?mode=rw"
        self._conn = sqlite3.connect(uri, uri=True, isolation_level=None, check_same_thread=False)
        self._stop = threading.Event()
        self._interval_s = INTERVAL_S if interval_s is None else interval_s
        self.runs = 0  # checkpoints that copied at least one frame (for tests and diagnostics)
        weakref.finalize(owner, self._stop.set)
        self._thread = threading.Thread(target=self._run, name="tessera-wal-checkpoint", daemon=True)
        self._thread.start()

    def _run(self) -> None:
        try:
            while not self._stop.wait(self._interval_s):
                try:
                    _busy, _frames, copied = self._conn.execute("PRAGMA wal_checkpoint(PASSIVE)").fetchone()
                except sqlite3.Error as exc:  # the store connection's fallback keeps the log bounded
                    log.warning("WAL checkpoint failed: %s", exc)
                    continue
                if copied > 0:
                    self.runs += 1
        finally:
            self._conn.close()

    def stop(self) -> None:
        self._stop.set()
        if self._thread is not threading.current_thread():
            self._thread.join(timeout=5.0)


def checkpoint_off_loop(conn: sqlite3.Connection, path: str, owner: object) -> WalCheckpointer | None:
    """Move ``conn``'s WAL checkpoints to a :class:`WalCheckpointer` (None for an in-memory database,
    which has no log)."""
    if path == ":memory:" or path.startswith("file::memory:"):
        return None
    conn.execute(f"PRAGMA wal_autocheckpoint={FALLBACK_PAGES}")
    return WalCheckpointer(path, owner)
