"""The SQLite store runs only on a SQLite without the WAL-reset corruption bug, and several processes
writing and checkpointing one database file leave it intact.

SQLite 3.7.0 to 3.51.2 can lose WAL frames when one connection checkpoints while another resets the
WAL (https://sqlite.org/wal.html#walresetbug). Tessera has several such connections on one file: the
check service, its checkpointer thread, a forwarder and its checkpointer, the CLI. With Debian 12's
SQLite 3.40.1 a ``make bench`` run corrupted its audit database exactly so ("database disk image is
malformed", duplicated rows in ``audit_events``); the store now uses APSW's own SQLite build and refuses
one without the fix.

The soak below cannot force that race (it is a matter of microseconds); it holds the store to its
contract under the access pattern that met it: two processes, each with its checkpointer thread,
appending in bursts with pauses (so that checkpoints complete and the next commit resets the WAL).
``TESSERA_SOAK_SECONDS`` sets its length: a few seconds in ``make test``, minutes in ``make fuzz``.
"""

from __future__ import annotations

import asyncio
import multiprocessing
import os
import random
import time
from pathlib import Path

import apsw
import pytest

from authz.audit import admin_event, verify_chain
from authz.errors import StoreUnavailable
from authz.storage.sqlite import SQLiteStore
from authz.storage.sqlite import _db as sqlite_db
from tests.sqlite_raw import raw_sqlite

SOAK_SECONDS = float(os.environ.get("TESSERA_SOAK_SECONDS", "4"))


@pytest.mark.parametrize(
    ("version", "fixed"),
    [
        ("3.40.1", False),  # Debian 12
        ("3.46.1", False),  # Debian 13
        ("3.51.2", False),
        ("3.51.3", True),
        ("3.52.0", True),
        ("3.54.1", True),
        ("3.44.5", False),
        ("3.44.6", True),  # backport
        ("3.50.6", False),
        ("3.50.7", True),  # backport
        ("3.7.0", False),
        ("4.0.0", True),
    ],
)
def test_the_wal_reset_fix_is_recognized_by_version(version: str, fixed: bool):
    assert sqlite_db.has_wal_reset_fix(version) is fixed


def test_the_linked_sqlite_has_the_wal_reset_fix():
    assert sqlite_db.has_wal_reset_fix(apsw.sqlite_lib_version()), apsw.sqlite_lib_version()


def test_a_sqlite_with_the_wal_reset_bug_is_refused(tmp_path: Path, monkeypatch):
    monkeypatch.setattr(apsw, "sqlite_lib_version", lambda: "3.40.1")
    with pytest.raises(StoreUnavailable, match=r"SQLite 3\.40\.1 has the WAL-reset corruption bug"):
        SQLiteStore(tmp_path / "tessera.db")
    assert not (tmp_path / "tessera.db").exists()  # refused before the file was created


def _writer(path: str, tenant: str, seconds: float, seed: int) -> int:
    """Append audit events in bursts to ``tenant`` and the shared ``acme`` chain; the events appended."""
    rng = random.Random(seed)

    async def run() -> int:
        store = SQLiteStore(path)
        appended, end = 0, time.monotonic() + seconds
        try:
            while time.monotonic() < end:
                for _ in range(rng.randint(5, 200)):
                    chain = rng.choice((tenant, "acme"))
                    note = "x" * rng.choice((10, 600, 3000))  # events of one to several pages
                    await store.append_events(
                        [(chain, admin_event(chain, tenant, "soak", note, time_ms=int(time.time() * 1000)))]
                    )
                    appended += 1
                time.sleep(rng.choice((0.0, 0.02, 0.06, 0.12)))  # let a checkpoint complete
        finally:
            await store.close()
        return appended

    return asyncio.run(run())


def test_two_processes_writing_and_checkpointing_one_file_leave_it_intact(tmp_path: Path):
    path = str(tmp_path / "tessera.db")
    SQLiteStore(path).db.close()  # migrations first, once
    context = multiprocessing.get_context("spawn")
    with context.Pool(2) as pool:
        runs = [
            pool.apply_async(_writer, (path, tenant, SOAK_SECONDS, seed))
            for seed, tenant in enumerate(("globex", "initech"))
        ]
        appended = sum(run.get(timeout=SOAK_SECONDS + 120) for run in runs)
    assert appended > 0
    with raw_sqlite(path) as conn:
        assert conn.execute("PRAGMA integrity_check").fetchall() == [("ok",)]
        (stored,) = conn.execute("SELECT count(*) FROM audit_events").fetchone()
    assert stored == appended

    async def verify() -> dict[str, bool]:
        store = SQLiteStore(path)
        try:
            return {tenant: (await verify_chain(store, tenant)).ok for tenant in await store.audit_tenants()}
        finally:
            await store.close()

    assert asyncio.run(verify()) == {"acme": True, "globex": True, "initech": True}
