"""`make bench`: Tessera's check path measured on this machine, printed as one table from one run.

1. Direct gRPC ``Check`` (h2load, gRPC frames over h2c): the full pipeline (token, intent, provenance,
   policy, budget, durable audit) vs a no-op servicer with the same grpc.aio + uvloop setup.
2. Through Envoy (wrk): Envoy + Tessera vs Envoy alone, both answering with a ``direct_response`` so
   the upstream does not count, at 1 and 32 requests in flight.
3. Errors, and a check that every allowed call was durably audited (events in the chain vs allows).

The load generators share the two cores with Envoy and Tessera; compare rows of one run as ratios.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import re
import shutil
import statistics
import struct
import subprocess
import sys
import tempfile
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path

import yaml
from envoy.config.core.v3 import base_pb2
from envoy.service.auth.v3 import external_auth_pb2

from authz.envoy_config import EnvoyProcess, render_envoy_config
from authz.secrets import Secret
from authz.stack import CheckProcess, free_port, spawn, stop_process, wait_http
from authz.storage import open_store
from authz.token import KeyRing, mint

ROOT = Path(__file__).resolve().parents[1]
MASTER = "bench-master-key-0123456789abcdef0123456789"
TENANTS = f"""
tenants:
  bench:
    intent: {{mode: "off"}}
    policy: {ROOT / "authz/policy/examples/demo.rego"}
"""
MCP_BODY = {
    "jsonrpc": "2.0",
    "id": 42,
    "method": "tools/call",
    "params": {
        "name": "read_invoice",
        "arguments": {"invoice_id": "INV-1001", "include_lines": True},
        "_meta": {"progressToken": "p-1"},
    },
}


def _token() -> str:
    return mint(
        KeyRing(Secret(MASTER)),
        tenant="bench",
        agent="bench-agent",
        tools=["read_invoice", "list_invoices"],
        expires=datetime.now(UTC) + timedelta(hours=2),
    )


def _check_request(token: str) -> bytes:
    """A CheckRequest as Envoy sends it for an MCP tools/call, framed for gRPC (5-byte prefix)."""
    request = external_auth_pb2.CheckRequest()
    attrs = request.attributes
    attrs.source.address.socket_address.address = "127.0.0.1"
    attrs.context_extensions["route"] = "mcp"
    http = attrs.request.http
    http.method, http.path, http.host, http.protocol = "POST", "/v1/mcp", "127.0.0.1:8080", "HTTP/1.1"
    headers = {
        ":authority": "127.0.0.1:8080",
        ":method": "POST",
        ":path": "/v1/mcp",
        "authorization": f"Bearer {token}",
        "content-type": "application/json",
        "accept": "application/json, text/event-stream",
        "user-agent": "bench-agent/1.0",
        "x-request-id": "5f0b2c9e-2d1c-4c7e-9a51-1f6a4f6c1b2a",
        "mcp-protocol-version": "2025-06-18",
    }
    for key, value in headers.items():
        http.header_map.headers.append(base_pb2.HeaderValue(key=key, raw_value=value.encode()))
    http.raw_body = json.dumps(MCP_BODY).encode()
    payload = request.SerializeToString()
    return struct.pack(">BI", 0, len(payload)) + payload


def _percentiles(latencies_us: list[float]) -> tuple[float, float]:
    ordered = sorted(latencies_us)
    if not ordered:
        return float("nan"), float("nan")
    q = statistics.quantiles(ordered, n=100, method="inclusive")
    return q[49] / 1000, q[98] / 1000


def h2load(port: int, body: Path, *, seconds: int, clients: int, streams: int, log: Path) -> dict:
    """Direct gRPC load: returns rps, p50/p99 ms, errors (non-OK gRPC or HTTP)."""
    out = subprocess.run(
        [
            "h2load", "-D", str(seconds), "--warm-up-time", "1", "-c", str(clients), "-m", str(streams),
            "-H", "content-type: application/grpc", "-H", "te: trailers", "-d", str(body),
            "--log-file", str(log), f"http://127.0.0.1:{port}/envoy.service.auth.v3.Authorization/Check",
        ],
        capture_output=True, text=True, check=True,
    ).stdout
    succeeded = int(re.search(r"requests: \d+ total, \d+ started, \d+ done, (\d+) succeeded", out).group(1))
    failed = int(re.search(r"(\d+) failed, (\d+) errored", out).group(1))
    errored = int(re.search(r"\d+ failed, (\d+) errored", out).group(1))
    latencies = []
    for line in log.read_text().splitlines():
        parts = line.split("\t")
        if len(parts) >= 3 and parts[1] == "200":
            latencies.append(float(parts[2]))
    p50, p99 = _percentiles(latencies)
    return {"rps": succeeded / seconds, "p50": p50, "p99": p99, "errors": failed + errored, "ok": succeeded}


WRK_SCRIPT = """
wrk.method = "POST"
wrk.body = [==[{body}]==]
wrk.headers["content-type"] = "application/json"
wrk.headers["authorization"] = "Bearer {token}"
done = function(summary, latency, requests)
  io.write(string.format("RESULT %d %d %d %d %f %f\\n", summary.requests,
    summary.errors.connect + summary.errors.read + summary.errors.write + summary.errors.timeout,
    summary.errors.status, summary.duration, latency:percentile(50), latency:percentile(99)))
end
"""


def wrk(url: str, script: Path, *, seconds: int, connections: int) -> dict:
    threads = 1 if connections == 1 else 2
    out = subprocess.run(
        ["wrk", "-t", str(threads), "-c", str(connections), "-d", f"{seconds}s", "-s", str(script), url],
        capture_output=True, text=True, check=True,
    ).stdout
    requests, socket_errors, status_errors, duration_us, p50, p99 = re.search(
        r"RESULT (\d+) (\d+) (\d+) (\d+) ([\d.]+) ([\d.]+)", out
    ).groups()
    ok = int(requests) - int(status_errors)
    return {
        "rps": ok / (int(duration_us) / 1e6),
        "p50": float(p50) / 1000,
        "p99": float(p99) / 1000,
        "errors": int(socket_errors) + int(status_errors),
        "ok": ok,
    }


def bench_envoy_config(workdir: Path, listen: int, admin: int, check_port: int) -> Path:
    """The shipped Envoy config, with /v1/mcp answered by Envoy itself and an unauthorized /plain."""
    doc = yaml.safe_load(
        render_envoy_config(
            listen_port=listen, admin_port=admin, check_endpoints=[("127.0.0.1", check_port)],
            upstream=("127.0.0.1", free_port()), check_timeout_ms=1000,
        )
    )
    hcm = doc["static_resources"]["listeners"][0]["filter_chains"][0]["filters"][0]["typed_config"]
    routes = hcm["route_config"]["virtual_hosts"][0]["routes"]
    mcp = next(r for r in routes if r.get("name") == "mcp")
    mcp.pop("route")
    mcp["direct_response"] = {"status": 200, "body": {"inline_string": "{}"}}
    # /plain keeps every per-route filter setting of /v1/mcp but turns ext_authz off.
    per_filter = dict(mcp.get("typed_per_filter_config", {}))
    per_filter["envoy.filters.http.ext_authz"] = {
        "@type": "type.googleapis.com/envoy.extensions.filters.http.ext_authz.v3.ExtAuthzPerRoute",
        "disabled": True,
    }
    plain = {
        "name": "plain",
        "match": {"path": "/plain"},
        "direct_response": {"status": 200, "body": {"inline_string": "{}"}},
        "typed_per_filter_config": per_filter,
    }
    routes.insert(0, plain)
    path = workdir / "envoy-bench.yaml"
    path.write_text(yaml.safe_dump(doc, sort_keys=False))
    return path


async def _audited(db: Path) -> tuple[int, int]:
    store = open_store(f"sqlite:///{db}")
    try:
        allows = total = 0
        async for record in store.iter_events("bench"):
            total += 1
            allows += record.decision == "allow"
        return allows, total
    finally:
        await store.close()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench", description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=int, default=8, help="duration of each measured run")
    parser.add_argument("--keep", action="store_true", help="keep the work directory")
    args = parser.parse_args(argv)
    for tool in ("h2load", "wrk"):
        if shutil.which(tool) is None:
            print(f"bench needs {tool}: apt-get install nghttp2-client wrk", file=sys.stderr)
            return 2
    workdir = Path(tempfile.mkdtemp(prefix="tessera-bench-"))
    (workdir / "tenants.yaml").write_text(TENANTS)
    token = _token()
    body = workdir / "check.bin"
    body.write_bytes(_check_request(token))
    script = workdir / "post.lua"
    script.write_text(WRK_SCRIPT.format(body=json.dumps(MCP_BODY), token=token))
    env = {
        "TESSERA_MASTER_KEY": MASTER, "TESSERA_VAR_DIR": str(workdir), "TESSERA_TENANTS_FILE": str(workdir / "tenants.yaml"),
        "TESSERA_DEADLINE_MS": "1000",
    }
    tessera = CheckProcess(free_port(), free_port(), env | {
        "TESSERA_CHECK_PORT": "0", "TESSERA_METRICS_PORT": "0",
    }, workdir / "check.log")
    tessera.env["TESSERA_CHECK_PORT"], tessera.env["TESSERA_METRICS_PORT"] = str(tessera.port), str(tessera.metrics_port)
    noop_port = free_port()
    noop = None
    envoy = None
    rows: list[tuple[str, dict]] = []
    seconds = args.seconds
    try:
        tessera.start()
        noop = spawn([sys.executable, "-m", "bench.noop", str(noop_port)], log=workdir / "noop.log")
        time.sleep(1.0)
        rows.append(("direct gRPC, no-op servicer, 32 in flight",
                     h2load(noop_port, body, seconds=seconds, clients=1, streams=32, log=workdir / "h1.log")))
        rows.append(("direct gRPC, Tessera pipeline, 32 in flight",
                     h2load(tessera.port, body, seconds=seconds, clients=1, streams=32, log=workdir / "h2.log")))
        rows.append(("direct gRPC, no-op servicer, 1 in flight",
                     h2load(noop_port, body, seconds=seconds, clients=1, streams=1, log=workdir / "h3.log")))
        rows.append(("direct gRPC, Tessera pipeline, 1 in flight",
                     h2load(tessera.port, body, seconds=seconds, clients=1, streams=1, log=workdir / "h4.log")))
        stop_process(noop)
        listen, admin = free_port(), free_port()
        envoy = EnvoyProcess(bench_envoy_config(workdir, listen, admin, tessera.port), admin_port=admin,
                             log_path=workdir / "envoy.log")
        envoy.start()
        envoy.wait_ready(30)
        for conns in (1, 32):
            rows.append((f"Envoy alone, {conns} in flight",
                         wrk(f"http://127.0.0.1:{listen}/plain", script, seconds=seconds, connections=conns)))
            rows.append((f"Envoy + Tessera, {conns} in flight",
                         wrk(f"http://127.0.0.1:{listen}/v1/mcp", script, seconds=seconds, connections=conns)))
        denied = envoy.stats("http.tessera_ingress.ext_authz")
    finally:
        if envoy is not None:
            envoy.stop()
        stop_process(noop)
        tessera.stop()
    allows, events = asyncio.run(_audited(workdir / "tessera.db"))
    allowed_answers = sum(r["ok"] for name, r in rows if "Tessera" in name)
    print()
    print(f"{'run':46} {'req/s':>9} {'p50 ms':>8} {'p99 ms':>8} {'errors':>7}")
    for name, r in rows:
        print(f"{name:46} {r['rps']:9.0f} {r['p50']:8.2f} {r['p99']:8.2f} {r['errors']:7d}")
    by = dict(rows)
    print()
    print(f"pipeline / no-op throughput (direct, 32 in flight): "
          f"{by['direct gRPC, Tessera pipeline, 32 in flight']['rps'] / by['direct gRPC, no-op servicer, 32 in flight']['rps']:.2f}x")
    print(f"Tessera adds at 1 in flight through Envoy: p50 "
          f"{by['Envoy + Tessera, 1 in flight']['p50'] - by['Envoy alone, 1 in flight']['p50']:+.2f} ms, "
          f"p99 {by['Envoy + Tessera, 1 in flight']['p99']:.2f} ms")
    print(f"allowed calls/s through Envoy at 32 in flight: {by['Envoy + Tessera, 32 in flight']['rps']:.0f}")
    print(f"audit: {allows} allow events in the chain for {allowed_answers} allowed answers "
          f"(warm-up and in-flight at cut-off included in the chain; {events} events in all); "
          f"ext_authz stats: { {k.rsplit('.', 1)[-1]: v for k, v in denied.items()} }")
    if not args.keep:
        shutil.rmtree(workdir, ignore_errors=True)
    else:
        print(f"work directory kept: {workdir}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
