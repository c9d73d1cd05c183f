"""Raw access to a Tessera SQLite file from a test, through the library the store itself uses (APSW).

A test that edits the database behind Tessera's back (tampering with the audit chain, moving a clock)
opens it here rather than with the standard library's ``sqlite3``: two SQLite libraries in one process
do not share their POSIX locks on the file, and closing one library's descriptor drops the other's
(https://sqlite.org/howtocorrupt.html, section 2.2).
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import apsw


def connect(path: str | Path, *, busy_timeout_ms: int = 5000) -> apsw.Connection:
    """A second connection to the file (autocommit: every statement commits on its own)."""
    conn = apsw.Connection(str(path))
    conn.set_busy_timeout(busy_timeout_ms)
    return conn


@contextmanager
def raw_sqlite(path: str | Path, *, busy_timeout_ms: int = 5000) -> Iterator[apsw.Connection]:
    """:func:`connect`, closed when the block ends."""
    conn = connect(path, busy_timeout_ms=busy_timeout_ms)
    try:
        yield conn
    finally:
        conn.close()
