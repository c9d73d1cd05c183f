"""Observability of a running stack: traces through real Envoy, Prometheus metrics, JSON logs.

Real parts only: Envoy with OpenTelemetry tracing on, the check and admin services with ``OTEL_*`` set,
an OTLP trace receiver in this test (a gRPC server implementing the OTLP TraceService from
``opentelemetry-proto``, which is what a collector is to Envoy and Tessera), and Debian's ``prometheus``
scraping the services' metrics ports.
"""

from __future__ import annotations

import asyncio
import json
import shutil
import subprocess
import threading
import time
from collections.abc import Iterator
from concurrent import futures
from pathlib import Path
from typing import Any
from urllib.parse import quote

import grpc
import httpx
import pytest
from opentelemetry.proto.collector.trace.v1 import trace_service_pb2, trace_service_pb2_grpc
from prometheus_client.openmetrics.parser import text_string_to_metric_families as parse_openmetrics
from prometheus_client.parser import text_string_to_metric_families

from authz.local.stack import free_port, stop_process
from authz.storage import open_store
from tests.integration.conftest import MASTER_KEY, Gateway, rpc_error, start_gateway

ROOT = Path(__file__).resolve().parents[2]
PROMPT = "please read invoice INV-1001 for the quarterly close"


class OtlpReceiver(trace_service_pb2_grpc.TraceServiceServicer):
    """Collects every span exported to it, flattened to (service name, span)."""

    def __init__(self) -> None:
        self.spans: list[tuple[str, Any]] = []
        self._lock = threading.Lock()
        self.server = grpc.server(futures.ThreadPoolExecutor(max_workers=4))
        trace_service_pb2_grpc.add_TraceServiceServicer_to_server(self, self.server)
        self.port = self.server.add_insecure_port("127.0.0.1:0")

    def Export(self, request, context):
        with self._lock:
            for resource_spans in request.resource_spans:
                service = next(
                    (
                        a.value.string_value
                        for a in resource_spans.resource.attributes
                        if a.key == "service.name"
                    ),
                    "",
                )
                for scope_spans in resource_spans.scope_spans:
                    for span in scope_spans.spans:
                        self.spans.append((service, span))
        return trace_service_pb2.ExportTraceServiceResponse()

    def trace(self, trace_id: str) -> list[tuple[str, Any]]:
        with self._lock:
            return [(s, span) for s, span in self.spans if span.trace_id.hex() == trace_id]


def _attributes(span: Any) -> dict[str, Any]:
    out = {}
    for a in span.attributes:
        value = a.value
        out[a.key] = getattr(value, value.WhichOneof("value")) if value.WhichOneof("value") else None
    return out


@pytest.fixture(scope="module")
def receiver() -> Iterator[OtlpReceiver]:
    rx = OtlpReceiver()
    rx.server.start()
    try:
        yield rx
    finally:
        rx.server.stop(0)


@pytest.fixture(scope="module")
def traced(tmp_path_factory: pytest.TempPathFactory, receiver: OtlpReceiver) -> Iterator[Gateway]:
    env = {
        "OTEL_TRACES_EXPORTER": "otlp",
        "OTEL_EXPORTER_OTLP_PROTOCOL": "grpc",
        "OTEL_EXPORTER_OTLP_ENDPOINT": f"http://127.0.0.1:{receiver.port}",
        "OTEL_EXPORTER_OTLP_INSECURE": "true",
        "OTEL_BSP_SCHEDULE_DELAY": "100",
        "TESSERA_LOG_LEVEL": "DEBUG",
    }
    stack, gw = start_gateway(
        tmp_path_factory.mktemp("observed"), env=env, otlp_endpoint=("127.0.0.1", receiver.port)
    )
    try:
        yield gw
    finally:
        stack.stop()


def _wait_for(predicate, timeout: float = 20.0, what: str = "") -> Any:
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        time.sleep(0.1)


def _audit_event(workdir: Path, tenant: str, decision_id: str) -> dict[str, Any]:
    async def find() -> dict[str, Any]:
        store = open_store(f"sqlite:///{workdir / 'tessera.db'}")
        try:
            async for record in store.iter_events(tenant):
                event = json.loads(record.event)
                if event.get("tessera", {}).get("decision_id") == decision_id:
                    return event
        finally:
            await store.close()
        raise AssertionError(f"no audit event for {decision_id}")

    return asyncio.run(find())


# -- traces -----------------------------------------------------------------------------------------------


def test_a_call_through_envoy_is_one_trace_envoy_check_stages(traced: Gateway, receiver: OtlpReceiver):
    token = traced.token()
    response = traced.call(
        "read_invoice",
        {"invoice_id": "INV-1001"},
        token=token,
        headers={"x-intent-prompt": quote(PROMPT), "mcp-session-id": "session-77"},
    )
    assert response.status_code == 200, response.text
    trace_id = response.headers["x-tessera-trace-id"]
    decision_id = response.headers["x-tessera-decision-id"]
    assert len(trace_id) == 32 and int(trace_id, 16) != 0

    def complete():
        spans = receiver.trace(trace_id)
        names = {span.name for _, span in spans}
        envoy = [s for s in spans if s[0] == "tessera-envoy"]
        return spans if "tessera.budget" in names and "tessera.audit" in names and len(envoy) >= 2 else None

    spans = _wait_for(complete, what=f"the spans of trace {trace_id}")
    by_id = {span.span_id: (service, span) for service, span in spans}

    # Tessera's gRPC server span (opentelemetry-instrumentation-grpc) is a child of Envoy's ext_authz span.
    (server,) = [
        span for service, span in spans if service == "tessera-check" and span.kind == span.SPAN_KIND_SERVER
    ]
    assert server.name == "/envoy.service.auth.v3.Authorization/Check"
    server_attrs = _attributes(server)
    assert server_attrs["rpc.system"] == "grpc"
    assert server_attrs["rpc.service"] == "envoy.service.auth.v3.Authorization"
    assert server_attrs["rpc.method"] == "Check"
    assert server_attrs["mcp.session.id"] == "session-77"
    envoy_service, authz_span = by_id[server.parent_span_id]
    assert envoy_service == "tessera-envoy", authz_span.name
    # ... which Envoy made under its own span of the incoming request.
    assert by_id[authz_span.parent_span_id][0] == "tessera-envoy"

    # The message's span under the server span, named and attributed by the MCP conventions.
    (call,) = [span for _, span in spans if span.name == "tools/call read_invoice"]
    assert call.parent_span_id == server.span_id
    call_attrs = _attributes(call)
    assert call_attrs["mcp.method.name"] == "tools/call"
    assert call_attrs["gen_ai.tool.name"] == "read_invoice"
    assert call_attrs["tessera.decision"] == "allow"
    assert call_attrs["tessera.tenant"] == "demo"
    assert call_attrs["tessera.agent"] == "agent-1"
    assert call_attrs["tessera.decision_id"] == decision_id

    # One span per stage, in pipeline order, children of the call span; the audit commit under the server.
    stages = sorted(
        (span for _, span in spans if span.parent_span_id == call.span_id),
        key=lambda s: s.start_time_unix_nano,
    )
    assert [s.name for s in stages] == [
        "tessera.capability",
        "tessera.intent",
        "tessera.provenance",
        "tessera.policy",
        "tessera.budget",
    ]
    (audit,) = [span for _, span in spans if span.name == "tessera.audit"]
    assert audit.parent_span_id == server.span_id

    # An auditor goes from the event to the trace.
    event = _audit_event(traced.stack.workdir, "demo", decision_id)
    assert event["tessera"]["trace_id"] == trace_id

    # Never a token, a prompt or an argument value in any span attribute (Envoy's included).
    everything = json.dumps([_attributes(span) for _, span in spans], default=str)
    for secret in (token, PROMPT, quote(PROMPT), "INV-1001"):
        assert secret not in everything


def test_an_escalation_has_an_approval_span_and_a_denial_its_code(traced: Gateway, receiver: OtlpReceiver):
    response = traced.call(
        "transfer_funds", {"amount": 25000, "iban": "DE89370400440532013000"}, token=traced.token()
    )
    error = rpc_error(response)
    assert error["code"] == -32019
    trace_id = response.headers["x-tessera-trace-id"]
    spans = _wait_for(
        lambda: (s := receiver.trace(trace_id)) and any(span.name == "tessera.audit" for _, span in s) and s,
        what="the escalation's spans",
    )
    (policy,) = [span for _, span in spans if span.name == "tessera.policy"]
    (approval,) = [span for _, span in spans if span.name == "tessera.approval"]
    assert approval.parent_span_id == policy.span_id
    (call,) = [span for _, span in spans if span.name == "tools/call transfer_funds"]
    attrs = _attributes(call)
    assert attrs["tessera.decision"] == "escalate"
    assert attrs["tessera.check"] == "approval"
    assert attrs["tessera.code"] == -32019
    assert attrs["error.type"] == "-32019"
    assert "budget" not in {span.name.removeprefix("tessera.") for _, span in spans}
    event = _audit_event(traced.stack.workdir, "demo", error["data"]["decision_id"])
    assert event["tessera"]["trace_id"] == trace_id


def test_a_client_traceparent_continues_into_check_and_admin_spans(traced: Gateway, receiver: OtlpReceiver):
    trace_id, parent = "4bf92f3577b34da6a3ce929d0e0e4736", "00f067aa0ba902b7"
    traceparent = {"traceparent": f"00-{trace_id}-{parent}-01"}
    response = traced.call(
        "read_invoice", {"invoice_id": "INV-1001"}, token=traced.token(), headers=traceparent
    )
    assert response.headers["x-tessera-trace-id"] == trace_id
    admin = httpx.get(
        f"{traced.url}/v1/admin/tenants",
        headers={"authorization": f"Bearer {traced.stack.admin_key}", **traceparent},
        timeout=10,
    )
    assert admin.status_code == 200

    def both():
        spans = receiver.trace(trace_id)
        services = {service for service, span in spans if span.kind == span.SPAN_KIND_SERVER}
        return spans if {"tessera-check", "tessera-admin"} <= services else None

    spans = _wait_for(both, what="check and admin server spans in the client's trace")
    by_id = {span.span_id: (service, span) for service, span in spans}
    (admin_span,) = [s for svc, s in spans if svc == "tessera-admin" and s.kind == s.SPAN_KIND_SERVER]
    assert admin_span.name == "/authz.api.admin.v1.TenantService/ListTenants"
    assert by_id[admin_span.parent_span_id][0] == "tessera-envoy"  # REST → transcoder → gRPC, one trace
    roots = [s for _, s in spans if s.parent_span_id.hex() == parent]
    assert roots and all(svc == "tessera-envoy" for svc, s in spans if s in roots)


# -- metrics ----------------------------------------------------------------------------------------------


def _decisions(text: str) -> dict[tuple[str, str, str], float]:
    out: dict[tuple[str, str, str], float] = {}
    for family in text_string_to_metric_families(text):
        if family.name == "tessera_decisions":
            for sample in family.samples:
                if sample.name == "tessera_decisions_total":
                    labels = sample.labels
                    out[(labels["decision"], labels["check"], labels["code"])] = sample.value
    return out


def test_metrics_count_the_decisions_made(traced: Gateway):
    url = f"http://127.0.0.1:{traced.stack.ports.metrics}/metrics"
    before = _decisions(httpx.get(url, timeout=5).text)
    token = traced.token()
    for _ in range(3):
        assert traced.call("read_invoice", {"invoice_id": "INV-1001"}, token=token).status_code == 200
    for _ in range(2):
        assert (
            rpc_error(traced.call("delete_invoice", {"invoice_id": "INV-1001"}, token=token))["code"]
            == -32012
        )
    assert rpc_error(traced.call("read_invoice", {}, token="not-a-token"))["code"] == -32010
    text = httpx.get(url, timeout=5).text
    after = _decisions(text)

    def delta(key):
        return after.get(key, 0) - before.get(key, 0)

    assert delta(("allow", "none", "0")) == 3
    assert delta(("deny", "policy", "-32012")) == 2
    assert delta(("deny", "capability", "-32010")) == 1
    families = {f.name: f for f in text_string_to_metric_families(text)}
    stages = {s.labels["stage"] for s in families["tessera_check_duration_seconds"].samples}
    assert stages == {"capability", "intent", "provenance", "policy", "budget", "total"}
    count = {
        s.labels["stage"]: s.value
        for s in families["tessera_check_duration_seconds"].samples
        if s.name.endswith("_count")
    }
    assert count["total"] == sum(after.values())  # every answered decision has its pipeline latency
    assert families["tessera_audit_commit_duration_seconds"].samples
    assert "tessera_store_errors" in families
    (info,) = families["tessera_build_info"].samples
    assert info.value == 1 and info.labels["component"] == "check"
    assert "tenant" not in next(iter(families["tessera_decisions"].samples)).labels  # not configured


def test_openmetrics_exemplars_carry_trace_ids(traced: Gateway):
    response = traced.call("read_invoice", {"invoice_id": "INV-1001"}, token=traced.token())
    trace_id = response.headers["x-tessera-trace-id"]
    text = httpx.get(
        f"http://127.0.0.1:{traced.stack.ports.metrics}/metrics",
        headers={"accept": "application/openmetrics-text; version=1.0.0"},
        timeout=5,
    ).text
    families = {f.name: f for f in parse_openmetrics(text)}
    exemplars = [
        s.exemplar.labels["trace_id"]
        for s in families["tessera_check_duration_seconds"].samples
        if s.labels.get("stage") == "total" and s.exemplar is not None
    ]
    assert exemplars and all(len(t) == 32 for t in exemplars)
    counted = [
        s.exemplar.labels["trace_id"]
        for s in families["tessera_decisions"].samples
        if s.labels.get("decision") == "allow" and s.exemplar is not None
    ]
    assert counted == [trace_id]  # the latest allowed call's trace


def _admin_requests(text: str) -> dict[tuple[str, str], float]:
    return {
        (s.labels["rpc"], s.labels["code"]): s.value
        for f in text_string_to_metric_families(text)
        if f.name == "tessera_admin_requests"
        for s in f.samples
        if s.name == "tessera_admin_requests_total"
    }


def test_the_admin_service_exports_its_own_metrics(traced: Gateway):
    url = f"http://127.0.0.1:{traced.stack.ports.admin_metrics}/metrics"
    admin = f"{traced.url}/v1/admin"
    key = traced.stack.admin_key
    assert (
        httpx.get(f"{admin}/tenants", headers={"authorization": f"Bearer {key}"}, timeout=10).status_code
        == 200
    )
    assert (
        httpx.get(
            f"{admin}/tenants",
            headers={"authorization": "Bearer tsk_0000aaaa_nope-nope-nope-nope"},
            timeout=10,
        ).status_code
        == 401
    )
    verify = httpx.post(
        f"{admin}/tenants/demo/audit:verify", json={}, headers={"authorization": f"Bearer {key}"}, timeout=30
    )
    assert verify.status_code == 200, verify.text
    text = httpx.get(url, timeout=5).text
    counts = _admin_requests(text)
    assert counts[("authz.api.admin.v1.TenantService/ListTenants", "OK")] >= 1
    assert counts[("authz.api.admin.v1.TenantService/ListTenants", "UNAUTHENTICATED")] >= 1
    families = {f.name: f for f in text_string_to_metric_families(text)}
    results = {
        s.labels["result"]: s.value
        for s in families["tessera_audit_chain_verifications"].samples
        if s.name.endswith("_total")
    }
    assert results["ok"] >= 1 and results["failed"] == 0
    (info,) = families["tessera_build_info"].samples
    assert info.labels["component"] == "admin"
    _wait_for(
        lambda: any(
            f.name == "tessera_approvals_pending" and f.samples
            for f in text_string_to_metric_families(httpx.get(url, timeout=5).text)
        ),
        timeout=15,
        what="the pending approvals gauge",
    )


def test_prometheus_scrapes_the_stack(traced: Gateway, tmp_path: Path):
    binary = shutil.which("prometheus")
    assert binary, "Debian's prometheus package is required (apt-get install prometheus; .ci/run does)"
    traced.call("read_invoice", {"invoice_id": "INV-1001"}, token=traced.token())
    port = free_port()
    config = tmp_path / "prometheus.yml"
    config.write_text(
        json.dumps(
            {
                "global": {"scrape_interval": "1s", "evaluation_interval": "1s"},
                "rule_files": [str(ROOT / "deploy/observability/alerts.yaml")],
                "scrape_configs": [
                    {
                        "job_name": "tessera-check",
                        "static_configs": [{"targets": [f"127.0.0.1:{traced.stack.ports.metrics}"]}],
                    },
                    {
                        "job_name": "tessera-admin",
                        "static_configs": [{"targets": [f"127.0.0.1:{traced.stack.ports.admin_metrics}"]}],
                    },
                ],
            }
        )
    )
    log = (tmp_path / "prometheus.log").open("wb")
    proc = subprocess.Popen(
        [binary, f"--config.file={config}", f"--storage.tsdb.path={tmp_path / 'data'}",
         f"--web.listen-address=127.0.0.1:{port}", "--enable-feature=exemplar-storage"],
        stdout=log, stderr=subprocess.STDOUT,
    )  # fmt: skip
    api = f"http://127.0.0.1:{port}/api/v1"

    def query(q: str) -> list[dict]:
        try:
            answer = httpx.get(f"{api}/query", params={"query": q}, timeout=2).json()
        except (httpx.HTTPError, ValueError):
            return []
        return answer.get("data", {}).get("result", [])

    try:
        allowed = _wait_for(
            lambda: query('tessera_decisions_total{decision="allow"}'),
            timeout=30,
            what="Prometheus to scrape",
        )
        assert allowed[0]["metric"]["job"] == "tessera-check" and float(allowed[0]["value"][1]) >= 1
        assert _wait_for(lambda: query('tessera_admin_requests_total{code="OK"}'), what="admin series")
        p99 = _wait_for(
            lambda: query(
                'histogram_quantile(0.99, sum by (le) (tessera_check_duration_seconds_bucket{stage="total"}))'
            ),
            what="the p99",
        )
        assert 0 < float(p99[0]["value"][1]) < 5
        now = time.time()
        exemplars = httpx.get(
            f"{api}/query_exemplars",
            params={
                "query": 'tessera_check_duration_seconds_bucket{stage="total"}',
                "start": now - 600,
                "end": now + 60,
            },
            timeout=5,
        ).json()["data"]
        assert any(len(e["labels"]["trace_id"]) == 32 for series in exemplars for e in series["exemplars"])
        builds = query("tessera_build_info")
        assert {b["metric"]["component"] for b in builds} == {"check", "admin"}
        rules = httpx.get(f"{api}/rules", timeout=5).json()["data"]["groups"]
        assert {r["name"] for g in rules for r in g["rules"]} >= {
            "TesseraCheckErrorRatioHigh",
            "TesseraStoreErrors",
        }
        assert all(r["health"] != "err" for g in rules for r in g["rules"])
    finally:
        stop_process(proc)
        log.close()


# -- logs -------------------------------------------------------------------------------------------------


def test_logs_are_json_lines_and_hold_no_secret(traced: Gateway):
    token = traced.token()
    traced.call("read_invoice", {"invoice_id": "INV-1001"}, token=token)
    traced.call("read_invoice", {"invoice_id": "INV-1001"}, token=token + "x")  # a bad signature
    httpx.get(
        f"{traced.url}/v1/admin/tenants",
        headers={"authorization": f"Bearer {traced.stack.admin_key}"},
        timeout=10,
    )
    workdir = traced.stack.workdir
    # Tessera's services and Envoy; the demo upstream (uvicorn, not part of Tessera) logs its own way.
    service_logs = [workdir / "check-0.log", workdir / "admin.log", workdir / "envoy.log"]
    decision_lines = 0
    for path in service_logs:
        lines = [line for line in path.read_text().splitlines() if line.strip()]
        assert lines or path.name == "envoy.log", f"{path.name} is empty"
        for line in lines:
            record = json.loads(line)  # every line is one JSON object
            assert {"time", "level", "logger", "message"} <= record.keys(), line
            assert not record["logger"].startswith(("httpx", "httpcore")) or record["level"] != "info", line
            if record.get("decision_id"):
                decision_lines += 1
                assert "trace_id" in record and "tenant" in record
    assert decision_lines > 0  # at DEBUG the check service logs each decision with its ids
    secrets = [token, traced.stack.admin_key, MASTER_KEY]
    for path in workdir.glob("*.log"):
        text = path.read_text(errors="replace")
        for secret in secrets:
            assert secret not in text, f"a secret appears in {path.name}"
