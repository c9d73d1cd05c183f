"""The forwarder row of ``make bench``: decision throughput with every audit forwarder on vs off.

``tessera forward run`` drains the check process's chain to a sink of each HTTP kind (webhook, Splunk
HEC, Datadog, Sentinel, Slack, Teams, PagerDuty) and a local NDJSON file. The HTTP sinks post to one
STAND-IN receiver in this process (it answers 2xx at once, and an access token for Sentinel's token
request); S3 is left out (it needs moto's server, a process of its own). Runs alternate off / on
(off, on, off, on, ...) so that drift of a shared machine falls on both sides alike; the figure is the
ratio of the summed throughputs, and each pair's ratio is printed beside it.
"""

from __future__ import annotations

import json
import os
import sys
import threading
import time
from collections.abc import Callable
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

from authz.local.stack import spawn, stop_process

ROW_OFF = "direct gRPC, Tessera pipeline (forwarders off), 32 in flight"
ROW_ON = "direct gRPC, Tessera + all forwarders, 32 in flight"
_TOKEN = json.dumps({"access_token": "bench", "expires_in": 3600, "token_type": "Bearer"}).encode()


class StandInReceiver:
    """Accepts every POST (a stand-in for the SIEM and chat services, which cannot run here)."""

    def __init__(self) -> None:
        self.requests = 0

        receiver = self

        class Handler(BaseHTTPRequestHandler):
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


def sinks_config(workdir: Path, url: str) -> tuple[dict, dict[str, str]]:
    """Every sink kind but S3, all on ``url``; and the environment holding their credentials."""
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
    ]
    for sink in sinks:
        sink["batch_size"] = 500
    env = {
        "BENCH_FWD_SECRET": "bench-credential",
        "BENCH_FWD_HOOK": url + "/services/T0/B0/bench",
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
    config, sink_env = sinks_config(workdir, receiver.url)
    path = workdir / "forward.json"
    path.write_text(json.dumps(config))
    database = f"sqlite:///{workdir / 'tessera.db'}"
    pairs: list[tuple[float, float]] = []
    try:
        for _ in range(rounds):
            off = direct(ROW_OFF, check_port, 32)
            forwarder = spawn(
                [sys.executable, "-m", "authz.cli", "forward", "run", "--config", str(path), "--database-url",
                 database],
                env=env | sink_env,
                log=workdir / "forward.log",
            )  # fmt: skip
            try:
                time.sleep(2.0)  # started, leases taken, caught up with what the earlier runs committed
                on = direct(ROW_ON, check_port, 32)
            finally:
                stop_process(forwarder)
            pairs.append((off["rps"], on["rps"]))
    finally:
        receiver.stop()
    forwarded = _lines(workdir)
    return {
        "cpu": cpu_per_event(workdir, env),
        "pairs": pairs,
        "ratio": sum(on for _, on in pairs) / sum(off for off, _ in pairs) if pairs else 0.0,
        "forwarded": forwarded,
        "requests": receiver.requests,
    }


def _lines(folder: Path) -> int:
    """Events the NDJSON file sink wrote in ``folder``, rotated files included."""
    return sum(1 for path in folder.glob("forwarded.ndjson*") for _ in path.open("rb"))


def cpu_per_event(workdir: Path, env: dict[str, str]) -> dict:
    """CPU the forwarder spends per event with every sink on: ``tessera forward run --once`` (fresh sink
    names, so fresh cursors) over the whole chain the runs left, its user+system time from the kernel
    (``wait4``), divided by the events it forwarded. CPU time, not wall time: a figure a shared machine
    does not blur, to set against the check service's CPU per decision."""
    receiver = StandInReceiver()
    config, sink_env = sinks_config(workdir / "cpu", receiver.url)
    (workdir / "cpu").mkdir(exist_ok=True)
    for sink in config["sinks"]:
        sink["name"] = "cpu-" + sink["name"]
    path = workdir / "forward-cpu.json"
    path.write_text(json.dumps(config))
    database = f"sqlite:///{workdir / 'tessera.db'}"
    try:
        started = time.monotonic()
        proc = spawn(
            [sys.executable, "-m", "authz.cli", "forward", "run", "--once", "--nice", "0",
             "--config", str(path), "--database-url", database],
            env=env | sink_env,
            log=workdir / "forward-cpu.log",
        )  # fmt: skip
        _, status, usage = os.wait4(proc.pid, 0)
        wall = time.monotonic() - started
        proc.returncode = os.waitstatus_to_exitcode(status)
    finally:
        receiver.stop()
    events = _lines(workdir / "cpu")
    cpu = usage.ru_utime + usage.ru_stime
    return {
        "events": events,
        "cpu_s": cpu,
        "wall_s": wall,
        "us_per_event": cpu / events * 1e6 if events else 0,
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
            f"  meanwhile {summary['forwarded']} events to the NDJSON file and {summary['requests']} "
            "requests to the stand-in SIEM/chat receiver (webhook, Splunk, Datadog, Sentinel, Slack, Teams, "
            "PagerDuty)",
        ]
    cpu = summary.get("cpu")
    if cpu:
        lines.append(
            f"  forwarder CPU with all 8 sinks: {cpu['us_per_event']:.0f} us per event "
            f"({cpu['events']} events, {cpu['cpu_s']:.1f} s CPU in {cpu['wall_s']:.1f} s wall, "
            "tessera forward run --once)"
        )
    return lines
