"""Chain-head lock hold time, the input of docs/scaling.md's model (``make bench`` prints it).

Every audited decision extends its tenant's chain under a lock on the tenant's head: SQLite's write lock
(``BEGIN IMMEDIATE`` to commit), PostgreSQL's row lock on ``audit_heads`` (``SELECT ... FOR UPDATE`` to
commit). One tenant's audited decisions/s across every replica is at most ``batch / hold``. Measured
here, single writer, per transaction of 1 event and of a group-committed batch of 32 (SQLite: the
fastest of five chunks; PostgreSQL: the median transaction, since the machine is shared):

- SQLite: the append transaction (canonical JSON is computed before the lock and not counted);
- PostgreSQL (when its server binaries are found; ``fsync`` on, data on disk), with the commit waiting
  for its WAL flush and without: the append's one statement (``tessera_audit_append()``, which takes
  the head lock and commits) from its send to its reply over 127.0.0.1, an upper bound of the lock's
  hold (the round trip is counted, the lock is taken after the request arrives and released at its
  commit); and one charge of a tenant-wide budget counter (a row every call of the tenant updates; one
  statement, upper bound).
"""

from __future__ import annotations

import asyncio
import os
import statistics
import tempfile
import time
from pathlib import Path
from typing import Any

from authz.audit._events import chain_tenant, event_from_decision
from authz.storage.models import Reservation
from authz.storage.sqlite import SQLiteStore
from authz.storage.sqlite._audit import _append_locked as append_locked
from authz.storage.sqlite._audit import prepare_events

BATCHES = (1, 32)
ROUNDS = 300
CHUNKS = 5


def _events(decision: Any, count: int) -> list[tuple[str, dict[str, Any]]]:
    event = event_from_decision(decision, time_ms=int(time.time() * 1000))
    return [(chain_tenant(decision), event)] * count


async def sqlite_hold_ms(decision: Any, workdir: Path) -> dict[int, float]:
    store = SQLiteStore(workdir / "hold.db")
    out = {}
    try:
        for batch in BATCHES:
            events = _events(decision, batch)
            await store.append_events(events)  # warm: the head row exists
            # The transaction alone, as the store runs it, with the canonical bytes prepared once
            # beforehand: timing append_events and subtracting a separate prepare_events run went
            # negative once canonical JSON got cheaper than that subtraction's noise.
            prepared = prepare_events(events)
            per_round = []
            for _ in range(CHUNKS):  # the fastest chunk counts: the machine is shared
                started = time.perf_counter()
                for _ in range(ROUNDS // CHUNKS):
                    with store.db.transaction() as conn:
                        append_locked(conn, prepared)
                per_round.append((time.perf_counter() - started) / (ROUNDS // CHUNKS) * 1000)
            out[batch] = min(per_round)
    finally:
        await store.close()
    return out


async def sqlite_pages_per_commit(decision: Any, workdir: Path, commits: int = 200) -> float:
    """WAL frames (database pages) one committed single-event append writes, on the store's own schema
    and a chain already 2,000 events long: what the commit costs in I/O, a figure load does not blur.

    Automatic checkpoints are off while counting, so the WAL only grows; each frame is a page plus its
    24-byte header. The figure includes the occasional B-tree split (hence not a whole number).
    """
    store = SQLiteStore(workdir / "pages.db", checkpointer=False)  # nothing else touches the WAL
    try:
        events = _events(decision, 1)
        await store.append_events(events * 2000)
        conn, wal = store.db.conn, Path(store.db.path + "-wal")
        (page_size,) = conn.execute("PRAGMA page_size").fetchone()
        conn.execute("PRAGMA wal_autocheckpoint=0")
        conn.execute("PRAGMA wal_checkpoint(TRUNCATE)")
        before = wal.stat().st_size
        for _ in range(commits):
            await store.append_events(events)
        return (wal.stat().st_size - before) / (page_size + 24) / commits
    finally:
        await store.close()


async def postgres_hold_ms(decision: Any) -> dict[str, dict[int, float]] | str:
    """Hold times on a durable throwaway cluster, with the commit waiting for its WAL flush
    (``synchronous_commit`` on) and without (off: round trips and the server's work only); or why
    none could be measured."""
    try:
        import psycopg

        from authz.storage.postgres import PostgresStore
        from authz.storage.postgres import _audit as pg_audit
        from tests.pg import PostgresCluster, find_bindir

        find_bindir()
    except Exception as exc:  # no server binaries or no postgres extra: the row says so
        return f"not measured ({type(exc).__name__}: {exc})"
    starts: list[float] = []
    original = pg_audit._append_locked

    async def timed_locked(conn, prepared):
        starts.append(time.perf_counter())
        return await original(conn, prepared)

    out: dict[str, dict[int, float]] = {}
    # The data directory on disk (/tmp), not /dev/shm: a flush costs what it costs on this machine.
    saved = os.environ.get("TESSERA_PG_TMPDIR")
    os.environ["TESSERA_PG_TMPDIR"] = saved or tempfile.gettempdir()
    durable = {"fsync": "on", "synchronous_commit": "on", "full_page_writes": "on"}
    try:
        cluster = PostgresCluster(settings=durable)
        with cluster:
            store = PostgresStore(cluster.create_database())
            pg_audit._append_locked = timed_locked
            try:
                await store.open()
                for flush in ("on", "off"):
                    with psycopg.connect(cluster.url, autocommit=True) as admin:
                        admin.execute(f"ALTER SYSTEM SET synchronous_commit = {flush}")
                        admin.execute("SELECT pg_reload_conf()")
                    await asyncio.sleep(0.2)
                    holds = out[f"commit flush {flush}"] = {}
                    for batch in BATCHES:
                        events = _events(decision, batch)
                        await store.append_events(events)
                        held = []
                        for _ in range(ROUNDS // 3):
                            starts.clear()
                            await store.append_events(events)
                            held.append(time.perf_counter() - starts[0])
                        holds[batch] = statistics.median(held) * 1000
                    # A tenant-wide budget rule: every call of the tenant charges one counter row, one
                    # autocommit statement each (the row lock lasts until that commit; upper bound).
                    counter = [Reservation("bench/rule/tenant/*/hour/calls", 0, 1, 1e12, "tenant:hour")]
                    await store.reserve(counter)
                    held = []
                    for _ in range(ROUNDS // 3):
                        started = time.perf_counter()
                        await store.reserve(counter)
                        held.append(time.perf_counter() - started)
                    holds[0] = statistics.median(held) * 1000
            finally:
                pg_audit._append_locked = original
                await store.close()
    finally:
        if saved is None:
            del os.environ["TESSERA_PG_TMPDIR"]
    return out


async def hold_rows(decision: Any) -> list[tuple[str, float, float]]:
    """``(name, hold ms per transaction, ceiling events/s of one tenant)``."""
    with tempfile.TemporaryDirectory(prefix="tessera-hold-") as tmp:
        measured: dict[str, Any] = {"SQLite": await sqlite_hold_ms(decision, Path(tmp))}
    pg = await postgres_hold_ms(decision)
    if isinstance(pg, str):
        measured["PostgreSQL"] = pg
    else:
        measured.update({f"PostgreSQL, {how}": holds for how, holds in pg.items()})
    rows = []
    for name, holds in measured.items():
        if isinstance(holds, str):
            rows.append((f"{name} chain-head hold: {holds}", float("nan"), float("nan")))
            continue
        for batch, ms in holds.items():
            if batch == 0:  # the tenant's budget counter row: one charge per transaction
                rows.append((f"{name}: tenant budget counter, 1 charge", ms, 1000 / ms))
                continue
            label = "1 event" if batch == 1 else f"batch of {batch}"
            rows.append((f"{name}: {label}", ms, batch / ms * 1000))
    return rows
