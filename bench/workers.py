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

from authz.local.stack import child_pids, spawn, stop_process, wait_http


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


def connections(streams: int, workers: int) -> tuple[int, int]:
    """h2load ``(-c, -m)`` for ``streams`` in flight: one connection per process when there are enough
    streams to go round, so the kernel can hand each process its share."""
    if workers <= 1 or streams < workers:
        return 1, streams
    return workers, streams // workers


def wait_workers(metrics_port: int, workers: int, proc, timeout: float = 60.0) -> None:
    """Until every worker's /readyz answers (worker i on ``metrics_port + i``)."""
    for index in range(workers):
        wait_http(f"http://127.0.0.1:{metrics_port + index}/readyz", timeout, proc, f"check worker {index}")


def check_pid(proc, workers: int) -> int:
    """The process to watch for memory: the check process itself, or the first worker of a supervisor."""
    if workers > 1:
        pids = child_pids(proc.pid)
        if pids:
            return pids[0]
    return proc.pid
