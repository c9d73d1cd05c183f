"""The forwarder row of ``make bench``: decision throughput with every audit forwarder on vs off.

``tessera forward run`` drains the check process's chain to a sink of each kind: webhook, Splunk HEC,
Datadog, Sentinel, Slack, Teams, PagerDuty, S3 and a local NDJSON file. The HTTP sinks post to one
STAND-IN receiver in this process (it answers 2xx at once, and an access token for Sentinel's token
request); S3 goes to moto's S3-compatible server (``moto[server]``), the STAND-IN for Amazon S3, a process
of its own started at a lowered CPU priority (Amazon's CPU is not this host's). Runs alternate off / on
(off, on, off, on, ...) so that drift of a shared machine falls on both sides alike; the figure is the
ratio of the summed throughputs, and each pair's ratio is printed beside it.
"""

from __future__ import annotations

import contextlib
import json
import os
import sys
import threading
import time
from collections.abc import Callable, Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

from authz.local.stack import free_port, spawn, stop_process, wait_listening

ROW_OFF = "direct gRPC, Tessera pipeline (forwarders off), 32 in flight"
ROW_ON = "direct gRPC, Tessera + all forwarders, 32 in flight"
_TOKEN = json.dumps({"access_token": "bench", "expires_in": 3600, "token_type": "Bearer"}).encode()


class StandInReceiver:
    """Accepts every POST (a stand-in for the SIEM and chat services, which cannot run here); its
    connection threads run at nice 10."""

    def __init__(self) -> None:
        self.requests = 0

        receiver = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"  # keep-alive, as the SIEM and chat services answer

            def setup(self) -> None:
                # One thread per connection: at a lowered CPU priority, like moto's server (the SIEM and
                # chat services' CPU is not this host's; the row measures Tessera's).
                os.setpriority(os.PRIO_PROCESS, threading.get_native_id(), 10)
                super().setup()

            def do_POST(self) -> None:
                self.rfile.read(int(self.headers.get("content-length", "0")))
                receiver.requests += 1
                body = _TOKEN if self.path.endswith("/token") else b"{}"
                self.send_response(200)
                self.send_header("content-type", "application/json")
                self.send_header("content-length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, *args: object) -> None:
                return None

        class Server(ThreadingHTTPServer):
            daemon_threads = True

            def handle_error(self, request: object, client_address: object) -> None:
                return None  # a forwarder stopped mid-request (between runs): nothing to report

        self._server = Server(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self._server.server_address[1]}"
        self._thread = threading.Thread(target=self._server.serve_forever, daemon=True)
        self._thread.start()

    def stop(self) -> None:
        self._server.shutdown()
        self._server.server_close()


S3_BUCKET = "tessera-bench"


@contextlib.contextmanager
def moto_s3(workdir: Path) -> Iterator[str]:
    """moto's S3 server on 127.0.0.1 (nice 10) with the bench bucket; yields its endpoint URL."""
    port = free_port()
    proc = spawn(
        [
            "nice",
            "-n",
            "10",
            str(Path(sys.executable).parent / "moto_server"),
            "-H",
            "127.0.0.1",
            "-p",
            str(port),
        ],
        log=workdir / "moto.log",
    )
    try:
        wait_listening(port, 30, proc, "moto_server (see moto.log)")
        endpoint = f"http://127.0.0.1:{port}"
        from authz.forward._s3 import s3_client

        client = s3_client(
            region="eu-west-1", endpoint_url=endpoint, access_key_id="bench", secret_access_key="bench"
        )
        client.create_bucket(Bucket=S3_BUCKET, CreateBucketConfiguration={"LocationConstraint": "eu-west-1"})
        client.close()
        yield endpoint
    finally:
        stop_process(proc)


def s3_objects(endpoint: str, prefix: str) -> tuple[int, int]:
    """(objects, events) the S3 sink wrote under ``prefix``."""
    import gzip

    from authz.forward._s3 import s3_client

    client = s3_client(
        region="eu-west-1", endpoint_url=endpoint, access_key_id="bench", secret_access_key="bench"
    )
    objects = events = 0
    try:
        for page in client.get_paginator("list_objects_v2").paginate(Bucket=S3_BUCKET, Prefix=prefix):
            for item in page.get("Contents", []):
                body = client.get_object(Bucket=S3_BUCKET, Key=item["Key"])["Body"].read()
                objects += 1
                events += gzip.decompress(body).count(b"\n")
    finally:
        client.close()
    return objects, events


def sinks_config(workdir: Path, url: str, s3_endpoint: str, prefix: str = "") -> tuple[dict, dict[str, str]]:
    """Every sink kind, the HTTP ones on ``url``, S3 on ``s3_endpoint`` (under ``prefix``); and the
    environment holding their credentials."""
    notify = {"decisions": ["deny", "escalate"]}  # the bench's calls are allowed: few messages, as in life
    sinks = [
        {"name": "file", "type": "file", "path": str(workdir / "forwarded.ndjson")},
        {"name": "webhook", "type": "webhook", "url": url + "/hook", "secret_env": "BENCH_FWD_SECRET"},
        {"name": "splunk", "type": "splunk", "url": url, "secret_env": "BENCH_FWD_SECRET", "index": "main"},
        {"name": "datadog", "type": "datadog", "url": url, "secret_env": "BENCH_FWD_SECRET"},
        {
            "name": "sentinel",
            "type": "sentinel",
            "endpoint": url,
            "dcr_id": "dcr-bench",
            "stream": "Custom-Tessera",
            "directory_id": "dir",
            "client_id": "app",
            "authority": url,
            "secret_env": "BENCH_FWD_SECRET",
        },
        {"name": "slack", "type": "slack", "secret_env": "BENCH_FWD_HOOK", "notify": notify},
        {"name": "teams", "type": "teams", "secret_env": "BENCH_FWD_HOOK", "notify": notify},
        {
            "name": "pagerduty",
            "type": "pagerduty",
            "url": url,
            "secret_env": "BENCH_FWD_SECRET",
            "notify": notify,
        },
        {
            "name": "s3",
            "type": "s3",
            "bucket": S3_BUCKET,
            "region": "eu-west-1",
            "endpoint_url": s3_endpoint,
            "prefix": prefix + "audit/",
            "access_key_env": "BENCH_FWD_S3_KEY",
            "secret_env": "BENCH_FWD_SECRET",
        },
    ]
    for sink in sinks:
        sink["batch_size"] = 500
    env = {
        "BENCH_FWD_SECRET": "bench-credential",
        "BENCH_FWD_HOOK": url + "/services/T0/B0/bench",
        "BENCH_FWD_S3_KEY": "bench",
        "TESSERA_OUTBOUND_ALLOW": "127.0.0.1",  # the stand-in receiver is on loopback
    }
    return {"sinks": sinks}, env


def forwarder_rounds(
    workdir: Path,
    env: dict[str, str],
    check_port: int,
    direct: Callable[[str, int, int], dict],
    rounds: int,
) -> dict:
    """``rounds`` pairs of runs, forwarders off then on; the summary the report prints."""
    receiver = StandInReceiver()
    pairs: list[tuple[float, float]] = []
    live: list[tuple[float, float, int]] = []  # per on run: forwarder CPU s, wall s, decisions
    catch_up = [0.0]
    with moto_s3(workdir) as s3_endpoint:
        config, sink_env = sinks_config(workdir, receiver.url, s3_endpoint)
        path = workdir / "forward.json"
        path.write_text(json.dumps(config))
        database = f"sqlite:///{workdir / 'tessera.db'}"
        try:
            for _ in range(rounds):
                off = direct(ROW_OFF, check_port, 32)
                forwarder = spawn(
                    [sys.executable, "-m", "authz.cli", "forward", "run", "--config", str(path),
                     "--database-url", database],
                    env=env | sink_env,
                    log=workdir / "forward.log",
                )  # fmt: skip
                try:
                    # Started and caught up with what the off run committed while no forwarder ran, so
                    # that the on run measures forwarding the live rate, not draining that backlog.
                    catch_up[0] += wait_caught_up(
                        workdir / "tessera.db", [k["name"] for k in config["sinks"]]
                    )
                    cpu_before, started = process_cpu_s(forwarder.pid), time.monotonic()
                    on = direct(ROW_ON, check_port, 32)
                    live.append(
                        (process_cpu_s(forwarder.pid) - cpu_before, time.monotonic() - started, on["ok"])
                    )
                finally:
                    stop_process(forwarder)
                pairs.append((off["rps"], on["rps"]))
        finally:
            receiver.stop()
        forwarded = _lines(workdir)
        s3 = s3_objects(s3_endpoint, "audit/")
        cpu = cpu_per_event(workdir, env, s3_endpoint)
        lock = write_lock_contention(workdir, env, s3_endpoint)
    return {
        "cpu": cpu,
        "lock": lock,
        "pairs": pairs,
        "ratio": sum(on for _, on in pairs) / sum(off for off, _ in pairs) if pairs else 0.0,
        "forwarded": forwarded,
        "requests": receiver.requests,
        "s3": s3,
        "catch_up_s": catch_up[0] / rounds if rounds else 0.0,
        "live": live,
        "load": os.getloadavg(),
    }


def process_cpu_s(pid: int) -> float:
    """User + system CPU seconds a running process has used so far (Linux ``/proc``)."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def wait_caught_up(database: Path, sinks: list[str], timeout_s: float = 120.0) -> float:
    """Wait until every sink's cursor reached every chain's head (read from the store's own tables);
    the seconds it took. Past ``timeout_s`` the run goes ahead (the report shows the mean wait)."""
    import apsw  # the store's own library: a second SQLite library in one process drops its locks

    started = time.monotonic()
    conn = apsw.Connection(str(database), flags=apsw.SQLITE_OPEN_READONLY)
    conn.set_busy_timeout(5000)
    try:
        while time.monotonic() - started < timeout_s:
            heads = dict(conn.execute("SELECT tenant, seq FROM audit_heads").fetchall())
            cursors = {
                (t, k): seq for t, k, seq in conn.execute("SELECT tenant, sink, seq FROM forwarder_cursors")
            }
            if all(
                cursors.get((tenant, sink), 0) >= head for tenant, head in heads.items() for sink in sinks
            ):
                break
            time.sleep(0.2)
    finally:
        conn.close()
    return time.monotonic() - started


def _lines(folder: Path) -> int:
    """Events the NDJSON file sink wrote in ``folder``, rotated files included."""
    return sum(1 for path in folder.glob("forwarded.ndjson*") for _ in path.open("rb"))


def _once(workdir: Path, env: dict[str, str], config: Path, name: str) -> tuple[float, float]:
    """``tessera forward run --once`` at normal priority: (user+system CPU seconds from the kernel's
    ``wait4``, wall seconds)."""
    database = f"sqlite:///{workdir / 'tessera.db'}"
    started = time.monotonic()
    proc = spawn(
        [sys.executable, "-m", "authz.cli", "forward", "run", "--once", "--nice", "0",
         "--config", str(config), "--database-url", database],
        env=env,
        log=workdir / f"{name}.log",
    )  # fmt: skip
    _, status, usage = os.wait4(proc.pid, 0)
    proc.returncode = os.waitstatus_to_exitcode(status)
    if proc.returncode != 0:
        raise RuntimeError(f"tessera forward run --once exited with {proc.returncode} (see {name}.log)")
    return usage.ru_utime + usage.ru_stime, time.monotonic() - started


def cpu_per_event(workdir: Path, env: dict[str, str], s3_endpoint: str) -> dict:
    """CPU the forwarder spends per event with every sink on: ``tessera forward run --once`` (fresh sink
    names, so fresh cursors) over the whole chain the runs left, then the same command again, which finds
    every cursor at the head: its CPU is the process's fixed cost (interpreter start, imports, clients,
    leases, one empty pass). Per event = (first - second) / events. CPU time, not wall time: a figure a
    shared machine does not blur, to set against the check service's CPU per decision."""
    receiver = StandInReceiver()
    (workdir / "cpu").mkdir(exist_ok=True)
    config, sink_env = sinks_config(workdir / "cpu", receiver.url, s3_endpoint, prefix="cpu/")
    for sink in config["sinks"]:
        sink["name"] = "cpu-" + sink["name"]
    path = workdir / "forward-cpu.json"
    path.write_text(json.dumps(config))
    try:
        cpu, wall = _once(workdir, env | sink_env, path, "forward-cpu")
        fixed, _ = _once(workdir, env | sink_env, path, "forward-cpu-idle")
    finally:
        receiver.stop()
    events = _lines(workdir / "cpu")
    return {
        "events": events,
        "cpu_s": cpu,
        "fixed_s": fixed,
        "wall_s": wall,
        "us_per_event": (cpu - fixed) / events * 1e6 if events else 0,
        "us_per_event_with_start": cpu / events * 1e6 if events else 0,
        "s3": s3_objects(s3_endpoint, "cpu/"),
    }


def write_lock_contention(
    workdir: Path, env: dict[str, str], s3_endpoint: str, *, rate: int = 700, seconds: float = 10.0
) -> dict:
    """How often the forwarder's write transactions stand in the way of the decisions' audit appends.

    A STAND-IN for the check service's appends runs in this process: one decision event per write
    transaction (as the check service writes on SQLite), ``rate`` per second for ``seconds``, on a chain of
    its own, while ``tessera forward run`` (every sink, its default priority) forwards that chain. Its
    connection does not wait in SQLite's busy handler: an append that finds the write lock held is
    counted and retried at once, so the count is exactly the appends the forwarder's writes met, and
    the time until the retry went through what they waited."""
    import asyncio

    from authz.audit import event_from_decision
    from authz.check.models import Decision, Outcome, new_decision_id
    from authz.errors import StoreUnavailable
    from authz.storage.sqlite import SQLiteStore

    folder = workdir / "lock"
    folder.mkdir(exist_ok=True)
    receiver = StandInReceiver()
    config, sink_env = sinks_config(folder, receiver.url, s3_endpoint, prefix="lock/")
    path = folder / "forward.json"
    path.write_text(json.dumps(config))

    def event(i: int) -> dict:
        decision = Decision(
            decision_id=new_decision_id(),
            outcome=Outcome.ALLOW,
            check=None,
            reason="",
            tenant="acme",
            agent="agent-7",
            token_id="t" * 64,
            jti=f"j{i}",
            tool="read_invoice",
            rpc_method="tools/call",
            arguments_sha256="0" * 64,
            argument_keys=("invoice_id",),
        )
        return event_from_decision(decision, time_ms=time.time_ns() // 1_000_000)

    async def appends(store: SQLiteStore) -> tuple[int, int, float]:
        store.db.conn.execute("PRAGMA busy_timeout=0")
        done = conflicts = 0
        waited = 0.0
        started = time.monotonic()
        while time.monotonic() - started < seconds:
            batch = [("acme", event(done))]
            blocked_at = None
            while True:
                try:
                    await store.append_events(batch)
                    break
                except StoreUnavailable as exc:
                    if "locked" not in str(exc):
                        raise
                    if blocked_at is None:
                        blocked_at = time.monotonic()
                        conflicts += 1
                    await asyncio.sleep(0.0001)
            if blocked_at is not None:
                waited += time.monotonic() - blocked_at
            done += 1
            delay = started + done / rate - time.monotonic()
            if delay > 0:
                await asyncio.sleep(delay)
        return done, conflicts, waited

    store = SQLiteStore(folder / "tessera.db")
    try:
        asyncio.run(store.append_events([("acme", event(0))]))
        forwarder = spawn(
            [sys.executable, "-m", "authz.cli", "forward", "run", "--config", str(path),
             "--database-url", f"sqlite:///{folder / 'tessera.db'}"],
            env=env | sink_env,
            log=folder / "forward.log",
        )  # fmt: skip
        try:
            wait_caught_up(folder / "tessera.db", [k["name"] for k in config["sinks"]])
            done, conflicts, waited = asyncio.run(appends(store))
        finally:
            stop_process(forwarder)
    finally:
        receiver.stop()
        asyncio.run(store.close())
    return {
        "appends": done,
        "conflicts": conflicts,
        "waited_ms": waited * 1e3,
        "seconds": seconds,
        "rate": rate,
    }


def report(summary: dict | None) -> list[str]:
    if not summary:
        return []
    pairs = ", ".join(f"{on / off:.3f}" for off, on in summary["pairs"])
    lines = []
    if summary["pairs"]:
        lines = [
            f"all audit forwarders on / off throughput, direct, 32: {summary['ratio']:.3f}x  (target >= "
            f"0.95x; {len(summary['pairs'])} alternating pairs: {pairs})",
            f"  meanwhile {summary['forwarded']} events to the NDJSON file, {summary['requests']} "
            "requests to the stand-in SIEM/chat receiver (webhook, Splunk, Datadog, Sentinel, Slack, Teams, "
            f"PagerDuty) and {summary['s3'][1]} events in {summary['s3'][0]} objects to S3 (moto); before "
            f"each on run the forwarder caught up with the off run's events in {summary['catch_up_s']:.1f} s "
            "(mean)",
        ]
    live = summary.get("live")
    if live:
        cpu_s, wall_s, events = (sum(run[i] for run in live) for i in range(3))
        lines.append(
            f"  the forwarder during the on runs: {cpu_s / wall_s * 100:.1f} % of a core, "
            f"{cpu_s / max(events, 1) * 1e6:.0f} us CPU per decision's event at the live rate "
            f"(per run: {', '.join(f'{c / w * 100:.1f} %' for c, w, _ in live)}); load average at the end "
            + " ".join(f"{x:.2f}" for x in summary["load"])
        )
    lock = summary.get("lock")
    if lock:
        lines.append(
            f"  write lock: a stand-in for the check service's audit appends ({lock['rate']}/s, one event "
            f"per transaction) found it held by the forwarder {lock['conflicts']} times in {lock['appends']} "
            f"appends over {lock['seconds']:.0f} s, {lock['waited_ms']:.1f} ms waited in all"
        )
    cpu = summary.get("cpu")
    if cpu:
        lines.append(
            f"  forwarder CPU with all 9 sinks: {cpu['us_per_event']:.0f} us per event "
            f"({cpu['events']} events, {cpu['cpu_s']:.2f} s CPU in {cpu['wall_s']:.1f} s wall, less "
            f"{cpu['fixed_s']:.2f} s of process start and an empty pass; "
            f"{cpu['us_per_event_with_start']:.0f} us with it; tessera forward run --once; "
            f"S3 got {cpu['s3'][1]} events in {cpu['s3'][0]} objects)"
        )
    return lines
