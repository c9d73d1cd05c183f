"""Where a check process's CPU goes per request, next to the no-op floor's (``make profile``).

Both servers run as in ``make bench`` (same grpc.aio + uvloop setup) under h2load at 32 in flight, one
after the other. Each thread's user + system time comes from ``/proc/<pid>/task/<tid>/stat`` before and
after the measured run, divided by the requests answered: the figure the throughput ratio follows, split
into the event loop's thread (the handler, grpc.aio's Python side) and the others (gRPC's poller and
event-engine threads, the SQLite checkpointer). With ``--perf`` and Linux ``perf`` installed, the event
loop thread's samples are also split by shared object (libpython: Python code; the kernel: syscalls and
WAL writes; cygrpc; SQLite; libsodium; upb protobuf).
"""

from __future__ import annotations

import argparse
import os
import shutil
import subprocess
import tempfile
import threading
from collections import Counter
from pathlib import Path

from authz.local.stack import CheckProcess, free_port, free_port_run, wait_listening
from bench.__main__ import MASTER, TENANTS, _check_request, _token, h2load
from bench.workers import check_env, spawn_noops, stop_noops, wait_workers


def thread_cpu_s(pid: int) -> dict[int, tuple[str, float]]:
    """Each thread of ``pid``: (name, user + system CPU seconds so far)."""
    ticks = os.sysconf("SC_CLK_TCK")
    out: dict[int, tuple[str, float]] = {}
    for task in Path(f"/proc/{pid}/task").iterdir():
        try:
            fields = (task / "stat").read_text().rsplit(")", 1)[1].split()
            name = (task / "comm").read_text().strip()
        except OSError:  # the thread ended meanwhile
            continue
        out[int(task.name)] = (name, (int(fields[11]) + int(fields[12])) / ticks)
    return out


def _groups(pid: int, before: dict, after: dict) -> Counter:
    spent: Counter = Counter()
    for tid, (name, cpu) in after.items():
        group = "event loop thread" if tid == pid else f"other {name} threads"
        spent[group] += cpu - before.get(tid, (name, 0.0))[1]
    return spent


def measure(pid: int, port: int, body: Path, workdir: Path, seconds: int, perf: bool) -> dict:
    h2load(port, body, seconds=2, clients=1, streams=32, log=workdir / "warm.log")
    result: dict = {}
    load = threading.Thread(
        target=lambda: result.update(
            h2load(port, body, seconds=seconds, clients=1, streams=32, log=workdir / "h2load.log")
        )
    )
    before = thread_cpu_s(pid)
    load.start()
    record = None
    if perf:
        data = workdir / f"perf-{pid}.data"
        record = subprocess.Popen(
            ["perf", "record", "-F", "499", "-t", str(pid), "-o", str(data), "--", "sleep", str(seconds - 1)],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
    load.join()
    after = thread_cpu_s(pid)
    requests = result["ok"] + result["errors"]
    per_request = {k: v / requests * 1e6 for k, v in _groups(pid, before, after).items()}
    shares: dict[str, float] = {}
    if record is not None:
        record.wait()
        report = subprocess.run(
            ["perf", "report", "-i", str(data), "--stdio", "--sort", "dso", "-g", "none"],
            capture_output=True,
            text=True,
        ).stdout
        for line in report.splitlines():
            parts = line.split()
            if len(parts) == 2 and parts[0].endswith("%"):
                shares[Path(parts[1]).name] = float(parts[0][:-1]) / 100
    return {"rps": result["rps"], "requests": requests, "us": per_request, "dso": shares}


def report(noop: dict, tessera: dict) -> list[str]:
    groups = sorted(set(noop["us"]) | set(tessera["us"]), key=lambda g: (g != "event loop thread", g))
    lines = [
        f"server CPU per request at 32 in flight (µs; /proc thread times): "
        f"no-op {noop['rps']:.0f} req/s, Tessera {tessera['rps']:.0f} req/s",
        f"  {'':34} {'no-op':>8} {'Tessera':>8} {'difference':>11}",
    ]
    for group in groups:
        a, b = noop["us"].get(group, 0.0), tessera["us"].get(group, 0.0)
        if max(a, b) < 0.5:
            continue  # threads that did nothing measurable (timers, idle workers)
        lines.append(f"  {group:34} {a:8.0f} {b:8.0f} {b - a:+11.0f}")
    a, b = sum(noop["us"].values()), sum(tessera["us"].values())
    lines.append(f"  {'whole process':34} {a:8.0f} {b:8.0f} {b - a:+11.0f}   (CPU ratio {a / b:.2f})")
    if tessera["dso"]:
        loop_noop, loop_tessera = noop["us"]["event loop thread"], tessera["us"]["event loop thread"]
        lines.append("  event loop thread by shared object (perf samples; µs per request):")
        names = sorted(tessera["dso"], key=lambda n: -tessera["dso"][n])[:10]
        for name in names:
            a, b = noop["dso"].get(name, 0.0) * loop_noop, tessera["dso"][name] * loop_tessera
            lines.append(f"    {name[:48]:48} {a:8.0f} {b:8.0f} {b - a:+11.0f}")
    return lines


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.cpu_profile", description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=int, default=10)
    parser.add_argument("--perf", action="store_true", help="split the event loop thread by shared object")
    args = parser.parse_args(argv)
    if shutil.which("h2load") is None:
        print("needs h2load: apt-get install nghttp2-client")
        return 2
    perf = args.perf and shutil.which("perf") is not None
    workdir = Path(tempfile.mkdtemp(prefix="tessera-profile-"))
    try:
        (workdir / "tenants.yaml").write_text(TENANTS)
        body = workdir / "check.bin"
        body.write_bytes(_check_request(_token()))
        check_port, metrics_port, noop_port = free_port(), free_port_run(1), free_port()
        env = check_env(MASTER, workdir, check_port, metrics_port, 1)
        tessera = CheckProcess(check_port, metrics_port, env, workdir / "check.log")
        tessera.start()
        noops: list = []
        try:
            wait_workers(metrics_port, 1, tessera.proc)
            noops = spawn_noops(noop_port, 1, workdir)
            wait_listening(noop_port)
            floor = measure(noops[0].pid, noop_port, body, workdir, args.seconds, perf)
            full = measure(tessera.proc.pid, check_port, body, workdir, args.seconds, perf)
        finally:
            stop_noops(noops)
            tessera.stop()
        print("\n".join(report(floor, full)))
    finally:
        shutil.rmtree(workdir, ignore_errors=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
