"""`python -m bench --workers N`: Tessera with N check processes on one port against N no-op processes.

The issue's rule: when Tessera runs several check processes, the no-op floor runs with the same number
of processes in the same run. Both share their port with SO_REUSEPORT, which spreads *connections*:
the direct rows therefore open one h2load connection per process (the in-flight total unchanged).
Through Envoy all checks share one HTTP/2 connection, so the Envoy rows measure one process either way
(ARCHITECTURE §13); they are printed for completeness, not as a gain from workers.
"""

from __future__ import annotations

import sys
from pathlib import Path

from authz.local.stack import child_pids, spawn, stop_process, wait_http, wait_listening


def spawn_noops(port: int, workers: int, workdir: Path) -> list:
    """``workers`` no-op servicers on ``port`` (SO_REUSEPORT when more than one)."""
    extra = ["--reuse-port"] if workers > 1 else []
    return [
        spawn([sys.executable, "-m", "bench.noop", str(port), *extra], log=workdir / f"noop-{i}.log")
        for i in range(workers)
    ]


def stop_noops(procs: list) -> None:
    for proc in procs:
        stop_process(proc)


#: h2load connections per check process when several share the port. The kernel hashes each connection
#: to one process: with one connection per process, two connections landed on the same process about
#: every other run (measured: one worker served everything, the other idled), so the row measured one
#: process. Four per process make an idle worker rare (2 in 256 runs for two processes).
CONNECTIONS_PER_PROCESS = 4


def connections(streams: int, workers: int) -> tuple[int, int]:
    """h2load ``(-c, -m)`` for ``streams`` in flight: several connections per process when there are
    enough streams to go round, so the kernel can hand each process its share."""
    if workers <= 1 or streams < workers:
        return 1, streams
    clients = min(streams, workers * CONNECTIONS_PER_PROCESS)
    return clients, streams // clients


def wait_workers(metrics_port: int, workers: int, proc, timeout: float = 60.0) -> None:
    """Until every worker's /readyz answers (worker i on ``metrics_port + i``)."""
    for index in range(workers):
        wait_http(f"http://127.0.0.1:{metrics_port + index}/readyz", timeout, proc, f"check worker {index}")


def check_env(master: str, workdir: Path, port: int, metrics_port: int, workers: int) -> dict[str, str]:
    """The bench's check service environment: ``workers`` processes on ``port``, worker i's metrics on
    ``metrics_port + i``, the workdir's tenants file, a generous deadline."""
    return {
        "TESSERA_MASTER_KEY": master,
        "TESSERA_VAR_DIR": str(workdir),
        "TESSERA_TENANTS_FILE": str(workdir / "tenants.yaml"),
        "TESSERA_DEADLINE_MS": "1000",
        "TESSERA_CHECK_PORT": str(port),
        "TESSERA_METRICS_PORT": str(metrics_port),
        "TESSERA_CHECK_WORKERS": str(workers),
    }


def check_pid(proc, workers: int) -> int:
    """The process to watch for memory: the check process itself, or the first worker of a supervisor."""
    if workers > 1:
        pids = child_pids(proc.pid)
        if pids:
            return pids[0]
    return proc.pid


def compare(counts: list[int], seconds: int) -> list[tuple[int, dict, dict]]:
    """Direct rows only, at 32 in flight, for each process count: ``(count, no-op row, Tessera row)``.

    ``python -m bench.workers 1 2``: the quick answer to "do more check processes help on this host"
    (with SQLite they share one writer lock), without the whole table."""
    import shutil
    import tempfile

    from authz.local.stack import CheckProcess, free_port, free_port_run
    from bench.__main__ import MASTER, TENANTS, _check_request, _token, h2load

    results = []
    for count in counts:
        workdir = Path(tempfile.mkdtemp(prefix=f"tessera-bench-workers-{count}-"))
        (workdir / "tenants.yaml").write_text(TENANTS)
        body = workdir / "check.bin"
        body.write_bytes(_check_request(_token()))
        port, metrics, noop_port = free_port(), free_port_run(count), free_port()
        env = check_env(MASTER, workdir, port, metrics, count)
        tessera = CheckProcess(port, metrics, env, workdir / "check.log")
        noops: list = []
        clients, streams = connections(32, count)
        try:
            tessera.start()
            wait_workers(metrics, count, tessera.proc)
            noops = spawn_noops(noop_port, count, workdir)
            wait_listening(noop_port)
            kwargs = {"seconds": seconds, "clients": clients, "streams": streams}
            noop_row = h2load(noop_port, body, log=workdir / "noop.log.h2", **kwargs)
            full_row = h2load(port, body, log=workdir / "full.log.h2", **kwargs)
            results.append((count, noop_row, full_row))
        finally:
            stop_noops(noops)
            tessera.stop()
            shutil.rmtree(workdir, ignore_errors=True)
    return results


def main(argv: list[str] | None = None) -> int:
    import argparse

    parser = argparse.ArgumentParser(
        prog="python -m bench.workers", description=compare.__doc__.splitlines()[0]
    )
    parser.add_argument("counts", nargs="*", type=int, default=[1, 2], help="process counts (default 1 2)")
    parser.add_argument("--seconds", type=int, default=8)
    args = parser.parse_args(argv)
    print(
        f"{'processes':>9} {'no-op req/s':>12} {'Tessera req/s':>14} {'ratio':>6} {'p99 ms':>8} {'errors':>7}"
    )
    for count, noop_row, full_row in compare(args.counts, args.seconds):
        print(
            f"{count:9d} {noop_row['rps']:12.0f} {full_row['rps']:14.0f} "
            f"{full_row['rps'] / noop_row['rps']:6.2f} {full_row['p99']:8.2f} "
            f"{noop_row['errors'] + full_row['errors']:7d}"
        )
    return 0


if __name__ == "__main__":
    sys.exit(main())
