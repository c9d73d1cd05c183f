"""`make bench`: Tessera's check path measured on this machine, printed as one table from one run.

1. Direct gRPC ``Check`` (h2load, gRPC frames over h2c): the full pipeline (token, intent, provenance,
   policy, budget, durable audit) vs a no-op servicer with the same grpc.aio + uvloop setup; the same
   rows with PostgreSQL as the store when its server binaries are here (bench/pgrow.py).
2. Through Envoy (wrk): Envoy + Tessera vs Envoy alone, both answering with a ``direct_response`` so
   the upstream does not count, at 1 and 32 requests in flight.
3. Errors, and a check that every allowed call was durably audited (events in the chain vs allows).
4. Hostile tokenless bodies (800 KB objects, deep nesting) beside legitimate calls through Envoy:
   the legitimate success rate (target >= 99 %) and the check process's memory (bench/hostile.py).
5. An MCP GET stream through the list processor vs an unprocessed passthrough, in events per second
   (bench/mcp_stream.py).
6. Cost growth (bench/growth.py) and the chain-head lock hold time behind docs/scaling.md's model
   (bench/scaling.py), in process.

The load generators share the two cores with Envoy and Tessera; compare rows of one run as ratios.
"""

from __future__ import annotations

import argparse
import asyncio
import json
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
from typing import Any

import yaml
from envoy.config.core.v3 import base_pb2
from envoy.service.auth.v3 import external_auth_pb2

from authz.local.envoy_config import EnvoyProcess, render_envoy_config
from authz.local.stack import CheckProcess, free_port, free_port_run, spawn, stop_process, wait_listening
from authz.secrets import Secret
from authz.storage import open_store
from authz.token import KeyRing, mint
from bench import forwarding, listing, mcp_stream, pgrow
from bench.growth import growth_rows
from bench.hostile import run_hostile_load
from bench.scaling import hold_rows, sqlite_pages_per_commit
from bench.workers import check_env, check_pid, connections, spawn_noops, stop_noops, wait_workers

ROOT = Path(__file__).resolve().parents[1]
MASTER = "bench-master-key-0123456789abcdef0123456789"
TENANTS = f"""
tenants:
  bench:
    intent: {{mode: "off"}}
    policy: {ROOT / "authz/policy/examples/demo.rego"}
"""
# The same pipeline with intent enforced on the demo catalog (the workdir's copy, under this tenant's
# name); every call carries one prompt that asks for read_invoice, so after the first call the
# extractor's per-prompt cache answers (a new prompt's cost is the in-process intent rows).
INTENT_TENANT = """
  bench-intent:
    intent: {{mode: enforce}}
    catalog: {catalog}
    policy: {policy}
"""
INTENT_PROMPT = "Please show me invoice INV-1001 with its lines and totals."

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


def _token(tenant: str = "bench") -> str:
    return mint(
        KeyRing(Secret(MASTER)),
        tenant=tenant,
        agent="bench-agent",
        tools=["read_invoice", "list_invoices"],
        expires=datetime.now(UTC) + timedelta(hours=2),
    )


def _check_request(token: str, prompt: str | None = None, *, arguments: dict | None = None) -> bytes:
    """A CheckRequest as Envoy sends it for an MCP tools/call, framed for gRPC (5-byte prefix);
    ``prompt`` goes in ``x-intent-prompt``; ``arguments`` are added to (or replace) the call's."""
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
    if prompt is not None:
        headers["x-intent-prompt"] = prompt
    for key, value in headers.items():
        http.header_map.headers.append(base_pb2.HeaderValue(key=key, raw_value=value.encode()))
    body = MCP_BODY
    if arguments is not None:
        params = body["params"]
        body = {**body, "params": {**params, "arguments": {**params["arguments"], **arguments}}}
    http.raw_body = json.dumps(body).encode()
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
            "h2load",
            "-D",
            str(seconds),
            "--warm-up-time",
            "1",
            "-c",
            str(clients),
            "-m",
            str(streams),
            "-H",
            "content-type: application/grpc",
            "-H",
            "te: trailers",
            "-d",
            str(body),
            "--log-file",
            str(log),
            f"http://127.0.0.1:{port}/envoy.service.auth.v3.Authorization/Check",
        ],
        capture_output=True,
        text=True,
        check=True,
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
        capture_output=True,
        text=True,
        check=True,
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
    """The shipped Envoy config, with /v1/mcp answered by Envoy itself and an unauthorized /plain.

    One file per check port: the no-op floor run and the Tessera run use different ones."""
    doc = yaml.safe_load(
        render_envoy_config(
            listen_port=listen,
            admin_port=admin,
            check_endpoints=[("127.0.0.1", check_port)],
            upstream=("127.0.0.1", free_port()),
            check_timeout_ms=1000,
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
    listing.answer_lists_in_envoy(routes)
    path = workdir / f"envoy-bench-{check_port}.yaml"
    path.write_text(yaml.safe_dump(doc, sort_keys=False))
    return path


async def _audited(db: Path) -> tuple[int, int]:
    store = open_store(f"sqlite:///{db}")
    try:
        allows = total = 0
        for tenant in ("bench", "bench-intent"):
            async for record in store.iter_events(tenant):
                total += 1
                allows += record.decision == "allow"
        return allows, total
    finally:
        await store.close()


async def _breakdown(workdir: Path, check_bin: Path) -> tuple[list[tuple[str, float]], Any]:
    """Where a check's CPU goes, measured in this process on a fresh database (µs per call)."""
    import os

    from authz import config
    from authz.check.pipeline import CallState
    from authz.server import wire
    from authz.server.app import build_runtime, tune_gc
    from authz.server.check_service import AuthorizationService

    class _Context:
        def time_remaining(self) -> float:
            return 1.0

    os.environ.update(
        {
            "TESSERA_MASTER_KEY": MASTER,
            "TESSERA_VAR_DIR": str(workdir / "inproc"),
            "TESSERA_TENANTS_FILE": str(workdir / "tenants.yaml"),
        }
    )
    runtime = await build_runtime(config.load())
    service = AuthorizationService(
        runtime.pipeline,
        runtime.recorder,
        deadline_cap_s=1.0,
        metrics=runtime.metrics,
        receipts=runtime.receipts,  # as served: every allow carries a signed receipt
    )
    request = external_auth_pb2.CheckRequest.FromString(check_bin.read_bytes()[5:])
    context = _Context()
    for _ in range(300):
        await service.Check(request, context)
    tune_gc()
    parsed = wire.parse_request(request, deadline=None)
    call = parsed.messages[0].input
    decision = await runtime.pipeline.check(call)
    state = CallState(call, "bench", datetime.now(UTC))
    state.token = runtime.pipeline._auth.authenticate(call.token)
    state.tenant = runtime.directory.get("bench")
    policy_input = runtime.pipeline._policy_input(state)
    n = 2000

    async def timed(fn, *, batch: int = 1) -> float:
        started = time.perf_counter()
        for _ in range(n // batch):
            if batch == 1:
                await fn()
            else:
                await asyncio.gather(*(fn() for _ in range(batch)))
        return (time.perf_counter() - started) / (n // batch * batch) * 1e6

    async def parse():
        wire.parse_request(request, deadline=None)

    async def authenticate():
        runtime.pipeline._auth.authenticate(call.token)

    async def revoked():
        await runtime.store.is_revoked("bench", state.token.jti, state.token.ancestor_ids)

    async def policy():
        state.tenant.policy.evaluate(policy_input)

    async def respond():
        wire.ok_response(decision, parsed, strip_authorization=True)

    async def receipt():
        reply = wire.ok_response(decision, parsed, strip_authorization=True)
        wire.add_receipt(reply, runtime.receipts, request, [decision], [("bench", 1, "0" * 64)])

    stage_names = tuple((name, None) for name in ("capability", "intent", "provenance", "policy", "budget"))

    async def count():  # what the metrics add to a check with tracing off
        marks = [time.perf_counter()]
        for _ in stage_names:
            marks.append(time.perf_counter())
        runtime.metrics.observe_stages(stage_names, marks)
        runtime.metrics.observe(decision)
        started = time.perf_counter()
        runtime.metrics.observe_audit_commit(time.perf_counter() - started)

    traced_service = _traced_service(runtime)

    async def traced():
        await traced_service.Check(request, context)

    rows = [
        ("parse CheckRequest (wire)", await timed(parse)),
        ("authenticate token (cached)", await timed(authenticate)),
        ("revocation lookup (SQLite)", await timed(revoked)),
        ("policy evaluation (regopy bundle)", await timed(policy)),
        ("whole pipeline (5 stages)", await timed(lambda: runtime.pipeline.check(call))),
        ("audit append, committed (SQLite)", await timed(lambda: runtime.recorder.record([decision]))),
        ("build the OK response", await timed(respond)),
        ("OK response with its signed receipt (Ed25519)", await timed(receipt)),
        ("whole Check handler, 1 in flight", await timed(lambda: service.Check(request, context))),
        ("whole Check handler, 32 in flight", await timed(lambda: service.Check(request, context), batch=32)),
        (
            "whole Check handler, same call, a new message each time (as served)",
            await _fresh_messages(service, context, n, vary=None),
        ),
        (
            "whole Check handler, new invoice_id each call (unread by the policy: memo hit)",
            await _fresh_messages(service, context, n, vary="invoice_id"),
        ),
        (
            "whole Check handler, new amount each call (read by the policy: memo miss)",
            await _fresh_messages(service, context, n, vary="amount"),
        ),
        ("metrics of one check (stages, decision, audit)", await timed(count)),
        ("whole Check handler, tracing on, 1 in flight", await timed(traced)),
    ]
    traced_service._tracing.shutdown()
    from bench.intent import intent_rows

    rows += await intent_rows(timed)
    await runtime.store.close()
    return rows, decision


async def _fresh_messages(service, context, n: int, *, vary: str | None) -> float:
    """µs per check over ``n`` CheckRequest messages decoded beforehand, one per call as the server
    hands them over (the other rows reuse one decoded message, whose fields protobuf has already
    wrapped). ``vary``: the argument that takes a new value in every call, as in real traffic; the
    demo policy reads ``amount`` (so its memo cannot answer) but not ``invoice_id``."""
    token = _token()
    requests = [
        external_auth_pb2.CheckRequest.FromString(
            _check_request(token, arguments=None if vary is None else {vary: i + 1})[5:]
        )
        for i in range(n)
    ]
    started = time.perf_counter()
    for request in requests:
        await service.Check(request, context)
    return (time.perf_counter() - started) / n * 1e6


def _traced_service(runtime):
    """The Check handler with tracing on, in process: spans are made, and dropped by the exporter (the
    export's own cost shows in the direct gRPC rows with tracing)."""
    from opentelemetry.sdk.trace import TracerProvider
    from opentelemetry.sdk.trace.export import BatchSpanProcessor, SpanExporter, SpanExportResult

    from authz.check import Pipeline
    from authz.observability import Tracing
    from authz.server.check_service import AuthorizationService

    class Drop(SpanExporter):
        def export(self, spans):
            return SpanExportResult.SUCCESS

    provider = TracerProvider()
    provider.add_span_processor(BatchSpanProcessor(Drop()))
    tracing = Tracing(provider, provider.get_tracer("bench"))
    plain = runtime.pipeline
    pipeline = Pipeline(
        authenticator=plain._auth,
        store=plain._store,
        directory=plain._directory,
        memory_key=plain._memory_key,
        default_deadline_s=1.0,
        observer=runtime.metrics,
        tracer=tracing.pipeline_tracer(),
    )
    return AuthorizationService(
        pipeline, runtime.recorder, deadline_cap_s=1.0, metrics=runtime.metrics, tracing=tracing
    )


def _tracing_rows(workdir: Path, env: dict[str, str], direct) -> None:
    """The same check service with tracing turned on by OTEL_*, exporting every span (sampled 100%:
    h2load sends no traceparent) over OTLP/gRPC to a counting sink, as a collector would receive them."""
    port, metrics, sink_port = free_port(), free_port_run(int(env["TESSERA_CHECK_WORKERS"])), free_port()
    sink = spawn([sys.executable, "-m", "bench.otlp_sink", str(sink_port)], log=workdir / "otlp-sink.log")
    traced_env = env | {
        "TESSERA_CHECK_PORT": str(port),
        "TESSERA_METRICS_PORT": str(metrics),
        "OTEL_TRACES_EXPORTER": "otlp",
        "OTEL_EXPORTER_OTLP_ENDPOINT": f"http://127.0.0.1:{sink_port}",
        "OTEL_EXPORTER_OTLP_INSECURE": "true",
    }
    traced = CheckProcess(port, metrics, traced_env, workdir / "check-traced.log")
    try:
        traced.start()
        direct("direct gRPC, Tessera + tracing, 32 in flight", port, 32)
        direct("direct gRPC, Tessera + tracing, 1 in flight", port, 1)
    finally:
        traced.stop()
        stop_process(sink)


INTENT_ROWS = {n: f"direct gRPC, Tessera + intent catalog, {n} in flight" for n in (32, 1)}


def _report(rows: list[tuple[str, dict]], breakdown: list[tuple[str, float]], audit: str) -> None:
    by = dict(rows)
    print()
    print(f"{'run':46} {'req/s':>9} {'p50 ms':>8} {'p99 ms':>8} {'errors':>7}")
    for name, r in rows:
        print(f"{name:46} {r['rps']:9.0f} {r['p50']:8.2f} {r['p99']:8.2f} {r['errors']:7d}")
    noop, full = (
        by["direct gRPC, no-op servicer, 32 in flight"],
        by["direct gRPC, Tessera pipeline, 32 in flight"],
    )
    alone, tessera = by["Envoy alone, 1 in flight"], by["Envoy + Tessera, 1 in flight"]
    floor = by["Envoy + no-op ext_authz, 1 in flight"]
    print()
    ratio = full["rps"] / noop["rps"]
    added = tessera["p50"] - alone["p50"]
    print(f"pipeline / no-op throughput, direct, 32 in flight:  {ratio:.2f}x  (target >= 0.6x)")
    if INTENT_ROWS[32] in by:
        intent, intent_1 = by[INTENT_ROWS[32]], by[INTENT_ROWS[1]]
        untraced_1 = by["direct gRPC, Tessera pipeline, 1 in flight"]
        on_off, added_1 = intent["rps"] / full["rps"], intent_1["p50"] - untraced_1["p50"]
        print(
            f"intent catalog on (enforce, one prompt: cached):   {intent['rps'] / noop['rps']:.2f}x the "
            f"no-op, {on_off:.2f}x intent off at 32; {added_1:+.2f} ms p50 at 1"
        )
    traced = by.get("direct gRPC, Tessera + tracing, 32 in flight")
    if traced is not None:
        traced_1 = by["direct gRPC, Tessera + tracing, 1 in flight"]
        untraced_1 = by["direct gRPC, Tessera pipeline, 1 in flight"]
        print(
            f"tracing on (OTLP export of every span), direct:     {traced['rps'] / full['rps']:.2f}x the "
            f"throughput at 32 in flight, {traced_1['p50'] - untraced_1['p50']:+.2f} ms p50 at 1"
        )
    print(
        f"Tessera adds at 1 in flight through Envoy, p50:    {added:+.2f} ms (target <= 1 ms; "
        f"any ext_authz server adds {floor['p50'] - alone['p50']:+.2f} ms: the no-op floor)"
    )
    print(f"p99 at 1 in flight through Envoy with Tessera:      {tessera['p99']:.2f} ms (target <= 3 ms)")
    print(
        f"allowed calls/s through Envoy at 32 in flight:      "
        f"{by['Envoy + Tessera, 32 in flight']['rps']:.0f} (target >= 2500)"
    )
    print(audit)
    print()
    print("where a check's CPU goes (in-process, µs per call):")
    for name, micros in breakdown:
        print(f"  {name:44} {micros:8.1f}")


def _model_report(growth: list[tuple[str, float, float]], holds: list[tuple[str, float, float]]) -> list[str]:
    lines = ["", "cost growth (in-process; ratio to the smallest case of each kind):"]
    lines += [f"  {name:52} {us:10.2f} µs {ratio:7.2f}x" for name, us, ratio in growth]
    lines += ["", "chain-head lock hold per transaction (docs/scaling.md; one writer):"]
    lines += [f"  {name:52} {ms:8.3f} ms  ceiling {eps:9.0f} events/s" for name, ms, eps in holds]
    return lines


def figures(rows: list[tuple[str, dict]], allows: int, answered: int) -> dict:
    """The table's headline figures as one object (``python -m bench --json``), for scripts and CI."""
    by = dict(rows)
    noop, full = (
        by["direct gRPC, no-op servicer, 32 in flight"],
        by["direct gRPC, Tessera pipeline, 32 in flight"],
    )
    envoy_noop, envoy_full = by["Envoy + no-op ext_authz, 32 in flight"], by["Envoy + Tessera, 32 in flight"]
    alone, tessera = by["Envoy alone, 1 in flight"], by["Envoy + Tessera, 1 in flight"]
    return {
        "direct_ratio": round(full["rps"] / noop["rps"], 3),
        "envoy_ratio": round(envoy_full["rps"] / envoy_noop["rps"], 3),
        "added_p50_ms": round(tessera["p50"] - alone["p50"], 3),
        "p99_ms": round(envoy_full["p99"], 3),
        "p99_ms_direct_32": round(full["p99"], 3),
        **(
            {"intent_ratio": round(by[INTENT_ROWS[32]]["rps"] / noop["rps"], 3)}
            if INTENT_ROWS[32] in by
            else {}
        ),
        "errors": sum(r["errors"] for _, r in rows),
        "audited_equals_answered": allows >= answered,
        "rows": {name: r for name, r in rows},
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench", description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=int, default=8, help="duration of each measured run")
    parser.add_argument("--keep", action="store_true", help="keep the work directory")
    parser.add_argument("--json", action="store_true", help="also print the figures as one JSON object")
    parser.add_argument("--long", action="store_true", help="cost growth rows at full size (1M events)")
    parser.add_argument(
        "--forwarder-rounds", type=int, default=2, help="off/on pairs of the audit forwarder row (default 2)"
    )
    parser.add_argument(
        "--forwarder-only",
        action="store_true",
        help="only the audit forwarder rows (with --forwarder-rounds)",
    )
    parser.add_argument(
        "--workers",
        type=int,
        default=1,
        help="check processes (TESSERA_CHECK_WORKERS) and as many no-op processes (default 1)",
    )
    args = parser.parse_args(argv)
    for tool in ("h2load", "wrk"):
        if shutil.which(tool) is None:
            print(f"bench needs {tool}: apt-get install nghttp2-client wrk", file=sys.stderr)
            return 2
    workdir = Path(tempfile.mkdtemp(prefix="tessera-bench-"))
    catalog = yaml.safe_load((ROOT / "authz/intent/examples/demo_catalog.yaml").read_text())
    catalog["tenants"] = {"bench-intent": catalog["tenants"]["demo"]}
    (workdir / "intent_catalog.yaml").write_text(yaml.safe_dump(catalog))
    intent_tenant = INTENT_TENANT.format(
        catalog=workdir / "intent_catalog.yaml", policy=ROOT / "authz/policy/examples/demo.rego"
    )
    (workdir / "tenants.yaml").write_text(TENANTS + intent_tenant)
    token = _token()
    body = workdir / "check.bin"
    body.write_bytes(_check_request(token))
    intent_body = workdir / "check-intent.bin"
    intent_body.write_bytes(_check_request(_token("bench-intent"), INTENT_PROMPT))
    script = workdir / "post.lua"
    script.write_text(WRK_SCRIPT.format(body=json.dumps(MCP_BODY), token=token))
    list_script = workdir / "list.lua"
    list_script.write_text(WRK_SCRIPT.format(body=json.dumps(listing.LIST_REQUEST), token=token))
    check_port, metrics_port, noop_port = free_port(), free_port_run(args.workers), free_port()
    env = check_env(MASTER, workdir, check_port, metrics_port, args.workers)
    tessera = CheckProcess(check_port, metrics_port, env, workdir / "check.log")
    noops: list = []
    envoy = None
    rows: list[tuple[str, dict]] = []
    seconds = args.seconds
    forwarding_summary: dict | None = None
    pg_summary: dict = {"skipped": "not run"}

    def direct(name: str, port: int, streams: int, request: Path = body) -> dict:
        log = workdir / f"h2load-{len(rows)}.log"
        clients, per_client = connections(streams, args.workers)
        run = h2load(port, request, seconds=seconds, clients=clients, streams=per_client, log=log)
        rows.append((name, run))
        return run

    try:
        tessera.start()
        wait_workers(metrics_port, args.workers, tessera.proc)
        noops = spawn_noops(noop_port, args.workers, workdir)
        wait_listening(noop_port)
        if not args.forwarder_only:
            direct("direct gRPC, no-op servicer, 32 in flight", noop_port, 32)
            direct("direct gRPC, Tessera pipeline, 32 in flight", check_port, 32)
            direct("direct gRPC, no-op servicer, 1 in flight", noop_port, 1)
            direct("direct gRPC, Tessera pipeline, 1 in flight", check_port, 1)
            direct(INTENT_ROWS[32], check_port, 32, intent_body)
            direct(INTENT_ROWS[1], check_port, 1, intent_body)
            pg_summary = pgrow.postgres_rows(workdir, env, direct)
        forwarding_summary = forwarding.forwarder_rounds(
            workdir, env, check_port, direct, args.forwarder_rounds
        )
        if args.forwarder_only:
            print("\n".join(forwarding.report(forwarding_summary)))
            if not args.keep:
                shutil.rmtree(workdir, ignore_errors=True)
            return 0
        _tracing_rows(workdir, env, direct)
        # The ext_authz floor: Envoy calling the no-op servicer, same filter settings and body buffering.
        listen, admin = free_port(), free_port()
        floor_config = bench_envoy_config(workdir, listen, admin, noop_port)
        floor_envoy = EnvoyProcess(floor_config, admin_port=admin, log_path=workdir / "envoy-floor.log")
        floor_envoy.start()
        try:
            floor_envoy.wait_ready(30)
            for conns in (1, 32):
                url = f"http://127.0.0.1:{listen}/v1/mcp"
                rows.append(
                    (f"Envoy + no-op ext_authz, {conns} in flight",
                     wrk(url, script, seconds=seconds, connections=conns))
                )  # fmt: skip
        finally:
            floor_envoy.stop()
        stop_noops(noops)
        listen, admin = free_port(), free_port()
        config_path = bench_envoy_config(workdir, listen, admin, check_port)
        envoy = EnvoyProcess(config_path, admin_port=admin, log_path=workdir / "envoy.log")
        envoy.start()
        envoy.wait_ready(30)
        for conns in (1, 32):
            for name, path in (("Envoy alone", "/plain"), ("Envoy + Tessera", "/v1/mcp")):
                url = f"http://127.0.0.1:{listen}{path}"
                rows.append(
                    (f"{name}, {conns} in flight", wrk(url, script, seconds=seconds, connections=conns))
                )
            url = f"http://127.0.0.1:{listen}/v1/mcp"
            run = wrk(url, list_script, seconds=seconds, connections=conns)
            rows.append((f"Envoy + Tessera, tools/list, {conns} in flight", run))
        authz_stats = envoy.stats("http.tessera_ingress.ext_authz")
        list_streams = int(envoy.stats(listing.STREAMS_STAT).get(listing.STREAMS_STAT, 0))
        # Hostile tokenless bodies beside legitimate calls (after the stats: its denials are not errors).
        hostile = run_hostile_load(
            f"http://127.0.0.1:{listen}/v1/mcp",
            token,
            MCP_BODY,
            check_pid(tessera.proc, args.workers),
            seconds=seconds,
        )
        stream_summary = mcp_stream.stream_rows(workdir, check_port, token, seconds)  # its own Envoy
    finally:
        if envoy is not None:
            envoy.stop()
        stop_noops(noops)
        tessera.stop()
    allows, _events = asyncio.run(_audited(workdir / "tessera.db"))
    answered = sum(r["ok"] for name, r in rows if "Tessera" in name)
    stats = {k.rsplit(".", 1)[-1]: v for k, v in authz_stats.items()}
    outcome = {name: stats.get(name, 0) for name in ("ok", "denied", "error")}
    audit = (
        f"audit: {allows} allow events committed for {answered} allowed answers the load generators "
        f"counted ({'OK' if allows >= answered else 'MISSING EVENTS'}: the chain also holds warm-up calls "
        f"and calls in flight at each cut-off); Envoy ext_authz: {outcome}"
    )
    breakdown, decision = asyncio.run(_breakdown(workdir, body))
    growth = asyncio.run(growth_rows(decision, long=args.long))
    holds = asyncio.run(hold_rows(decision))
    pages = asyncio.run(sqlite_pages_per_commit(decision, workdir))
    _report(rows, breakdown, audit + "\n" + hostile.summary())
    print(f"check processes: {args.workers} (the no-op floor: {args.workers}, same run)")
    print("\n".join(listing.report(dict(rows), list_streams)))
    print("\n".join(mcp_stream.report(stream_summary)))
    print("\n".join(forwarding.report(forwarding_summary)))
    print("\n".join(pgrow.report(pg_summary)))
    print("\n".join(_model_report(growth, holds)))
    print(f"  SQLite: pages written per committed 1-event append (WAL frames)  {pages:6.2f}")
    if args.json:
        result = figures(rows, allows, answered)
        result.update(pgrow.figures(pg_summary, dict(rows)))
        result["workers"] = args.workers
        result["mcp_stream"] = {k: v for k, v in stream_summary.items() if k != "processor_streams"}
        result["growth"] = {name: {"us": round(us, 2), "ratio": round(r, 3)} for name, us, r in growth}
        result["sqlite_pages_per_commit"] = round(pages, 2)
        result["chain_head_hold"] = {name: {"ms": ms, "events_per_s": eps} for name, ms, eps in holds}
        if forwarding_summary:
            result["forwarder_ratio"] = round(forwarding_summary["ratio"], 3)
        print(json.dumps(result, sort_keys=True))
    if args.keep:
        print(f"work directory kept: {workdir}")
    else:
        shutil.rmtree(workdir, ignore_errors=True)
    hostile_ok = hostile.success_rate >= 0.99
    audited = allows >= answered and pgrow.ok(pg_summary) and mcp_stream.ok(stream_summary)
    return 0 if audited and hostile_ok and all(r["errors"] == 0 for _, r in rows) else 1


if __name__ == "__main__":
    sys.exit(main())
