"""The direct ``Check`` rows with PostgreSQL as the store (issue 16: "the same rows with PostgreSQL").

A second check process, same settings as the SQLite one, on a throwaway durable cluster (``fsync`` and
``synchronous_commit`` on, data on disk under ``$TESSERA_PG_TMPDIR`` or the temp dir) over 127.0.0.1,
measured with the same h2load runs as the other direct rows, in the same run, so it reads as a ratio
to the no-op floor. Afterwards the chain is counted: every allowed answer must have its event.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import tempfile
from collections.abc import Callable
from pathlib import Path

from authz.local.stack import CheckProcess, free_port, free_port_run
from authz.storage import open_store

# Not named "Tessera ...": the SQLite rows' audit check sums the answers of the rows so named.
ROW_32 = "direct gRPC, pipeline on PostgreSQL, 32 in flight"
ROW_1 = "direct gRPC, pipeline on PostgreSQL, 1 in flight"


async def _allows(url: str) -> int:
    store = open_store(url)
    try:
        return sum([record.decision == "allow" async for record in store.iter_events("bench")])
    finally:
        await store.close()


async def _append_cpu(url: str, rounds: int = 200) -> dict[str, float]:
    """CPU µs per committed event of the check path's append (the recorder, group commit) on this
    database, in this process: one record at a time, and 32 records gathered (one statement each)."""
    import time

    from authz.audit import ChainRecorder
    from authz.check.models import Decision, Outcome

    decision = Decision(
        decision_id="0190f0c2a1b2c3d4e5f60718",
        outcome=Outcome.ALLOW,
        tenant="bench-append",  # not the "bench" chain the rows' audit check counts
        agent="bench-agent",
        tool="read_invoice",
        rpc_method="tools/call",
        arguments_sha256="0" * 64,
        argument_keys=("include_lines", "invoice_id"),
        policy_version=1,
        policy_hash="sha256:" + "0" * 64,
        latency_us=400,
    )
    store = open_store(url)
    recorder = ChainRecorder(store)
    try:
        for _ in range(20):
            await recorder.record([decision])
        started = time.process_time()
        for _ in range(rounds):
            await recorder.record([decision])
        one = (time.process_time() - started) / rounds * 1e6
        started = time.process_time()
        for _ in range(rounds // 8):
            await asyncio.gather(*(recorder.record([decision]) for _ in range(32)))
        gathered = (time.process_time() - started) / (rounds // 8 * 32) * 1e6
    finally:
        await store.close()
    return {"1": round(one, 1), "32": round(gathered, 1)}


def postgres_rows(workdir: Path, env: dict[str, str], direct: Callable[[str, int, int], dict]) -> dict:
    """Run the PostgreSQL rows through ``direct``; ``{"allows": events, "answered": answers}``, or
    ``{"skipped": why}`` when no PostgreSQL server binaries (or no postgres extra) are here."""
    try:
        from tests.pg import PostgresCluster, find_bindir

        find_bindir()
    except Exception as exc:  # the row says why instead of failing the whole benchmark
        return {"skipped": f"{type(exc).__name__}: {exc}"}
    saved = os.environ.get("TESSERA_PG_TMPDIR")
    os.environ["TESSERA_PG_TMPDIR"] = saved or tempfile.gettempdir()  # on disk: a flush costs its price
    durable = {"fsync": "on", "synchronous_commit": "on", "full_page_writes": "on"}
    try:
        with PostgresCluster(settings=durable) as cluster:
            url = cluster.create_database()
            # One metrics port per check worker (python -m bench --workers N).
            port, metrics = free_port(), free_port_run(int(env.get("TESSERA_CHECK_WORKERS", "1")))
            pg_env = env | {
                "TESSERA_DATABASE_URL": url,
                "TESSERA_CHECK_PORT": str(port),
                "TESSERA_METRICS_PORT": str(metrics),
                "TESSERA_VAR_DIR": str(workdir / "postgres-var"),
            }
            check = CheckProcess(port, metrics, pg_env, workdir / "check-postgres.log")
            check.start()
            try:
                answered = direct(ROW_32, port, 32)["ok"] + direct(ROW_1, port, 1)["ok"]
            finally:
                check.stop()
            append_cpu = asyncio.run(_append_cpu(url))
            return {"allows": asyncio.run(_allows(url)), "answered": answered, "append_cpu_us": append_cpu}
    finally:
        if saved is None:
            with contextlib.suppress(KeyError):
                del os.environ["TESSERA_PG_TMPDIR"]


def figures(summary: dict, rows: dict[str, dict]) -> dict:
    """The JSON keys of the PostgreSQL rows: throughput as a ratio to the same run's no-op floor."""
    if "skipped" in summary:
        return {"postgres": summary["skipped"]}
    noop = rows["direct gRPC, no-op servicer, 32 in flight"]["rps"]
    return {
        "postgres_ratio": round(rows[ROW_32]["rps"] / noop, 3),
        "postgres_p99_ms_direct_32": round(rows[ROW_32]["p99"], 3),
        "postgres_audited_equals_answered": summary["allows"] >= summary["answered"],
        "postgres_append_cpu_us": summary["append_cpu_us"],
    }


def ok(summary: dict) -> bool:
    return "skipped" in summary or summary["allows"] >= summary["answered"]


def report(summary: dict) -> list[str]:
    if "skipped" in summary:
        return [f"PostgreSQL rows: not measured ({summary['skipped']})"]
    cpu = summary["append_cpu_us"]
    return [
        f"PostgreSQL audit: {summary['allows']} allow events committed for {summary['answered']} allowed "
        f"answers ({'OK' if ok(summary) else 'MISSING EVENTS'})",
        f"PostgreSQL audit append, CPU per committed event (in process): {cpu['1']:.0f} µs one at a time, "
        f"{cpu['32']:.0f} µs with 32 records gathered",
    ]
