"""Metrics, logs and tracing configuration (authz.observability), and the shipped dashboard and alerts."""

from __future__ import annotations

import contextlib
import io
import json
import logging
import re
import shutil
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest
import yaml
from prometheus_client.exposition import generate_latest
from prometheus_client.openmetrics.exposition import generate_latest as generate_openmetrics
from prometheus_client.openmetrics.parser import text_string_to_metric_families as parse_openmetrics
from prometheus_client.parser import text_string_to_metric_families

from authz.check.models import Check, Decision, Outcome
from authz.observability import (
    AdminMetrics,
    CheckMetrics,
    Distribution,
    configure_logging,
    new_registry,
    tracing_requested,
)
from authz.secrets import Secret
from authz.token import KeyRing, mint

ROOT = Path(__file__).resolve().parents[2]
ASSETS = ROOT / "deploy" / "observability"


def _decision(outcome: Outcome, check: Check | None = None, tenant: str = "demo", latency_us: int = 300):
    return Decision("d" * 28, outcome, check, "reason", tenant=tenant, latency_us=latency_us)


def _families(registry) -> dict:
    return {f.name: f for f in text_string_to_metric_families(generate_latest(registry).decode())}


# -- metrics ----------------------------------------------------------------------------------------------


def test_decisions_are_counted_by_decision_check_and_code():
    metrics = CheckMetrics()
    for _ in range(3):
        metrics.observe(_decision(Outcome.ALLOW))
    metrics.observe(_decision(Outcome.DENY, Check.POLICY))
    metrics.observe(_decision(Outcome.ESCALATE, Check.APPROVAL))
    families = _families(new_registry(metrics))
    counts = {
        (s.labels["decision"], s.labels["check"], s.labels["code"]): s.value
        for s in families["tessera_decisions"].samples
        if s.name == "tessera_decisions_total"
    }
    assert counts == {
        ("allow", "none", "0"): 3,
        ("deny", "policy", "-32012"): 1,
        ("escalate", "approval", "-32019"): 1,
    }
    total = {
        s.name: s.value
        for s in families["tessera_check_duration_seconds"].samples
        if s.labels["stage"] == "total"
    }
    assert total["tessera_check_duration_seconds_count"] == 5
    assert total["tessera_check_duration_seconds_sum"] == pytest.approx(5 * 300e-6)
    assert "process_cpu_seconds" in families and "tessera_build_info" in families


def test_tenant_label_only_when_configured():
    plain, labelled = CheckMetrics(), CheckMetrics(tenant_label=True)
    for metrics in (plain, labelled):
        metrics.observe(_decision(Outcome.ALLOW, tenant="acme"))
    (sample,) = [
        s for s in _families(new_registry(plain))["tessera_decisions"].samples if s.name.endswith("_total")
    ]
    assert "tenant" not in sample.labels
    (sample,) = [
        s for s in _families(new_registry(labelled))["tessera_decisions"].samples if s.name.endswith("_total")
    ]
    assert sample.labels["tenant"] == "acme"


def test_histogram_buckets_are_inclusive_and_cumulative():
    dist = Distribution((0.001, 0.01))
    for value in (0.0005, 0.001, 0.005, 0.5):
        dist.observe(value)
    assert [(le, count) for le, count, _ in dist.buckets()] == [("0.001", 2), ("0.01", 3), ("+Inf", 4)]
    assert dist.count == 4 and dist.total == pytest.approx(0.5065)


def test_stage_durations_and_exemplars_in_openmetrics():
    metrics = CheckMetrics()
    metrics.observe_stage("policy", 0.0002)
    metrics.observe(_decision(Outcome.ALLOW), trace_id="ab" * 16)
    metrics.observe_audit_commit(0.0004, "cd" * 16)
    text = generate_openmetrics(new_registry(metrics)).decode()
    families = {f.name: f for f in parse_openmetrics(text)}
    stages = families["tessera_check_duration_seconds"].samples
    assert any(s.labels["stage"] == "policy" and s.name.endswith("_count") and s.value == 1 for s in stages)
    exemplars = [s.exemplar for s in stages if s.exemplar is not None]
    assert [e.labels["trace_id"] for e in exemplars] == ["ab" * 16]
    (counted,) = [s for s in families["tessera_decisions"].samples if s.name == "tessera_decisions_total"]
    assert counted.exemplar.labels["trace_id"] == "ab" * 16
    audit = [s.exemplar for s in families["tessera_audit_commit_duration_seconds"].samples if s.exemplar]
    assert [e.labels["trace_id"] for e in audit] == ["cd" * 16]


def test_store_errors_count_storage_failures_only():
    from authz.errors import StorageError, StoreUnavailable

    metrics = CheckMetrics()
    metrics.store_error("capability", StoreUnavailable("down"))
    metrics.store_error("audit", StorageError("disk full"))
    metrics.store_error("policy", ValueError("a bug, not the store"))
    assert metrics.store_errors == {"capability": 1, "audit": 1}


def test_admin_metrics_render_requests_pending_and_verifications():
    metrics = AdminMetrics()
    metrics.observe_request("authz.api.admin.v1.TenantService/ListTenants", "OK", 0.002)
    metrics.observe_request("authz.api.admin.v1.TenantService/ListTenants", "UNAUTHENTICATED", 0.001)
    metrics.set_approvals_pending({"demo": 2, "acme": 1})
    metrics.observe_verification(False)
    families = _families(new_registry(metrics))
    requests = {
        (s.labels["rpc"], s.labels["code"]): s.value
        for s in families["tessera_admin_requests"].samples
        if s.name.endswith("_total")
    }
    assert requests[("authz.api.admin.v1.TenantService/ListTenants", "UNAUTHENTICATED")] == 1
    (pending,) = families["tessera_approvals_pending"].samples
    assert pending.value == 3 and pending.labels == {}
    failed = [
        s for s in families["tessera_audit_chain_verifications"].samples if s.labels.get("result") == "failed"
    ]
    assert failed[0].value == 1


# -- logs -------------------------------------------------------------------------------------------------


@pytest.fixture
def json_log():
    root = logging.getLogger()
    saved = (list(root.handlers), root.level)
    stream = io.StringIO()
    redactor = configure_logging("INFO", "json", stream)
    try:
        yield stream, redactor
    finally:
        for handler in list(root.handlers):
            root.removeHandler(handler)
        for handler in saved[0]:
            root.addHandler(handler)
        root.setLevel(saved[1])


def _lines(stream: io.StringIO) -> list[dict]:
    return [json.loads(line) for line in stream.getvalue().splitlines()]


def test_log_records_are_one_json_object_per_line_with_decision_fields(json_log):
    stream, _ = json_log
    log = logging.getLogger("tessera.check")
    log.warning("policy stage failed\nsecond line", extra={"decision_id": "01abc", "tenant": "demo"})
    try:
        raise RuntimeError("boom")
    except RuntimeError:
        log.exception("audit write failed")
    first, second = _lines(stream)
    assert first["level"] == "warning" and first["logger"] == "tessera.check"
    assert first["message"] == "policy stage failed\nsecond line"
    assert (first["decision_id"], first["tenant"]) == ("01abc", "demo")
    assert "RuntimeError: boom" in second["exception"]


def test_third_party_info_is_not_logged(json_log):
    stream, _ = json_log
    logging.getLogger("httpx").info("HTTP Request: GET http://127.0.0.1:9464/readyz 200 OK")
    logging.getLogger("httpx").warning("a real problem")
    logging.getLogger("tessera").info("ours")
    assert [line["message"] for line in _lines(stream)] == ["a real problem", "ours"]


def test_credentials_are_redacted_at_the_logger(json_log):
    stream, redactor = json_log
    master = Secret("the-master-key-0123456789abcdef-0123456789")
    redactor.add(master)
    token = mint(KeyRing(master), tenant="demo", agent="a")
    admin_key = "tsk_0123456789ab_" + "S" * 43
    log = logging.getLogger("tessera")
    log.info("header was Authorization: Bearer %s", token)
    log.info("token %s and key %s", token, admin_key)
    log.error("derived from %s", master.reveal().decode())
    try:
        raise ValueError(f"bad token {token}")
    except ValueError:
        log.exception("failed")
    text = stream.getvalue()
    for secret in (token, admin_key, master.reveal().decode(), "S" * 43):
        assert secret not in text
    assert "tsk_0123456789ab_[redacted]" in text  # the key id still names the key
    assert len(_lines(stream)) == 4


def test_log_level_and_format_are_validated():
    with pytest.raises(ValueError):
        configure_logging("LOUD", "json", io.StringIO())
    with pytest.raises(ValueError):
        configure_logging("INFO", "xml", io.StringIO())


# -- tracing configuration --------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("env", "on"),
    [
        ({}, False),
        ({"OTEL_EXPORTER_OTLP_ENDPOINT": "http://collector:4317"}, True),
        ({"OTEL_EXPORTER_OTLP_TRACES_ENDPOINT": "http://collector:4318/v1/traces"}, True),
        ({"OTEL_TRACES_EXPORTER": "otlp"}, True),
        ({"OTEL_TRACES_EXPORTER": "console"}, True),
        ({"OTEL_TRACES_EXPORTER": "none", "OTEL_EXPORTER_OTLP_ENDPOINT": "http://c:4317"}, False),
        ({"OTEL_SDK_DISABLED": "true", "OTEL_TRACES_EXPORTER": "otlp"}, False),
    ],
)
def test_tracing_is_off_unless_otel_variables_ask(env, on):
    assert tracing_requested(env) is on


def test_config_carries_observability_settings():
    from authz import config
    from authz.errors import ConfigError

    base = {"TESSERA_MASTER_KEY": "k" * 32}
    cfg = config.load(base)
    assert (cfg.observability.log_level, cfg.observability.log_format, cfg.observability.tracing) == (
        "INFO",
        "json",
        False,
    )
    cfg = config.load(
        base
        | {
            "TESSERA_LOG_LEVEL": "debug",
            "TESSERA_METRICS_TENANT_LABEL": "true",
            "OTEL_EXPORTER_OTLP_ENDPOINT": "http://c:4317",
        }
    )
    assert cfg.observability.log_level == "DEBUG"
    assert cfg.observability.metrics_tenant_label and cfg.observability.tracing
    with pytest.raises(ConfigError):
        config.load(base | {"TESSERA_LOG_FORMAT": "xml"})


def test_an_untraced_pipeline_has_no_tracing_wrapper():
    """With tracing off the pipeline's ``_check`` is the plain method: no span object, no extra frame."""
    from authz.check.pipeline import Pipeline

    pipeline = Pipeline(authenticator=None, store=None, directory=None, memory_key=lambda t: b"")
    assert pipeline._check.__func__ is Pipeline._check
    traced = Pipeline(
        authenticator=None, store=None, directory=None, memory_key=lambda t: b"", tracer=object()
    )
    assert traced._check.__func__ is Pipeline._check_traced


# -- dashboard and alerts ---------------------------------------------------------------------------------


def _promtool() -> str:
    binary = shutil.which("promtool")
    assert binary, (
        "promtool comes with Debian's prometheus package (apt-get install prometheus; .ci/run does)"
    )
    return binary


def test_alert_rules_pass_promtool_check_and_unit_tests():
    check = subprocess.run(
        [_promtool(), "check", "rules", str(ASSETS / "alerts.yaml")], capture_output=True, text=True
    )
    assert check.returncode == 0, check.stdout + check.stderr
    tested = subprocess.run(
        [_promtool(), "test", "rules", "alerts.test.yaml"], cwd=ASSETS, capture_output=True, text=True
    )
    assert tested.returncode == 0, tested.stdout + tested.stderr


EXPORTED = {
    "tessera_decisions_total",
    "tessera_check_duration_seconds_bucket",
    "tessera_audit_commit_duration_seconds_bucket",
    "tessera_store_errors_total",
    "tessera_approvals_pending",
    "tessera_audit_chain_verifications_total",
    "tessera_admin_requests_total",
    "tessera_admin_request_duration_seconds_bucket",
    "tessera_build_info",
    "process_cpu_seconds_total",
    "process_resident_memory_bytes",
    "up",
}


def test_dashboard_queries_parse_and_use_exported_metrics(tmp_path: Path):
    dashboard = json.loads((ASSETS / "grafana-dashboard.json").read_text())
    exprs = [t["expr"] for p in dashboard["panels"] for t in p.get("targets", ())]
    assert len(exprs) >= 12
    used = {name for e in exprs for name in re.findall(r"\b(tessera_\w+|process_\w+|up)\{", e)}
    assert used <= EXPORTED, used - EXPORTED
    assert {"tessera_decisions_total", "tessera_check_duration_seconds_bucket"} <= used
    # PromQL syntax: promtool parses each query as a recording rule (Grafana's variables substituted).
    rules = {
        "groups": [
            {
                "name": "dashboard",
                "rules": [
                    {
                        "record": f"dashboard:query{i}",
                        "expr": e.replace("$__rate_interval", "1m")
                        .replace("$check_job", "tessera-check")
                        .replace("$admin_job", "tessera-admin"),
                    }
                    for i, e in enumerate(exprs)
                ],
            }
        ]
    }
    path = tmp_path / "dashboard-rules.yaml"
    path.write_text(yaml.safe_dump(rules))
    check = subprocess.run([_promtool(), "check", "rules", str(path)], capture_output=True, text=True)
    assert check.returncode == 0, check.stdout + check.stderr


# -- Envoy's tracing --------------------------------------------------------------------------------------


def test_the_shipped_envoy_config_traces_to_an_otlp_collector(tmp_path: Path):
    from authz.local.envoy_config import (
        OTLP_CLUSTER,
        SHIPPED_CONFIG,
        render_envoy_config,
        validate_envoy_config,
    )

    shipped = yaml.safe_load(SHIPPED_CONFIG.read_text())
    hcm = shipped["static_resources"]["listeners"][0]["filter_chains"][0]["filters"][0]["typed_config"]
    provider = hcm["tracing"]["provider"]
    assert provider["name"] == "envoy.tracers.opentelemetry"
    assert provider["typed_config"]["grpc_service"]["envoy_grpc"]["cluster_name"] == OTLP_CLUSTER

    def render(**kwargs) -> dict:
        text = render_envoy_config(
            listen_port=18080,
            admin_port=19901,
            check_endpoints=[("127.0.0.1", 19191)],
            upstream=("127.0.0.1", 19000),
            **kwargs,
        )
        path = tmp_path / f"envoy-{len(kwargs)}.yaml"
        path.write_text(text)
        validate_envoy_config(path)  # the real Envoy accepts it
        return yaml.safe_load(text)

    traced = render(otlp_endpoint=("127.0.0.1", 14317))
    (collector,) = [c for c in traced["static_resources"]["clusters"] if c["name"] == OTLP_CLUSTER]
    endpoint = collector["load_assignment"]["endpoints"][0]["lb_endpoints"][0]["endpoint"]
    assert endpoint["address"]["socket_address"]["port_value"] == 14317
    plain = render()
    assert OTLP_CLUSTER not in {c["name"] for c in plain["static_resources"]["clusters"]}
    hcm = plain["static_resources"]["listeners"][0]["filter_chains"][0]["filters"][0]["typed_config"]
    assert "tracing" not in hcm


@pytest.mark.parametrize(
    ("env", "endpoint"),
    [
        ({}, None),
        ({"OTEL_EXPORTER_OTLP_ENDPOINT": "http://collector:4317"}, ("collector", 4317)),
        ({"OTEL_EXPORTER_OTLP_TRACES_ENDPOINT": "http://10.0.0.7:5317"}, ("10.0.0.7", 5317)),
        (
            {"OTEL_EXPORTER_OTLP_ENDPOINT": "http://c:4318", "OTEL_EXPORTER_OTLP_PROTOCOL": "http/protobuf"},
            None,
        ),
        ({"OTEL_EXPORTER_OTLP_ENDPOINT": "http://c:4317", "OTEL_SDK_DISABLED": "true"}, None),
    ],
)
def test_tessera_run_points_envoy_at_the_otlp_grpc_collector(monkeypatch, env, endpoint):
    from authz.cli import _otlp_endpoint

    for name in list(__import__("os").environ):
        if name.startswith("OTEL_"):
            monkeypatch.delenv(name)
    for name, value in env.items():
        monkeypatch.setenv(name, value)
    assert _otlp_endpoint() == endpoint


@contextlib.contextmanager
def otlp_http_receiver() -> Iterator[tuple[str, list]]:
    """A real OTLP/HTTP receiver on 127.0.0.1: yields its endpoint and the ``(path,
    ExportTraceServiceRequest)`` of every export it received (decoded with opentelemetry-proto)."""
    import threading
    from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

    from opentelemetry.proto.collector.trace.v1 import trace_service_pb2

    received: list = []

    class Receiver(BaseHTTPRequestHandler):
        def do_POST(self):
            body = self.rfile.read(int(self.headers["content-length"]))
            received.append((self.path, trace_service_pb2.ExportTraceServiceRequest.FromString(body)))
            self.send_response(200)
            self.send_header("content-type", "application/x-protobuf")
            self.end_headers()
            self.wfile.write(trace_service_pb2.ExportTraceServiceResponse().SerializeToString())

        def log_message(self, *args):
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Receiver)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        yield f"http://127.0.0.1:{server.server_port}", received
    finally:
        server.shutdown()


def test_otlp_http_export_reaches_a_receiver(monkeypatch):
    """OTEL_EXPORTER_OTLP_PROTOCOL=http/protobuf: spans arrive as an OTLP ExportTraceServiceRequest over
    HTTP (a real HTTP server on 127.0.0.1 decoding the body with opentelemetry-proto)."""
    from authz.observability import setup_tracing

    with otlp_http_receiver() as (endpoint, received):
        env = {
            "OTEL_EXPORTER_OTLP_ENDPOINT": endpoint,
            "OTEL_EXPORTER_OTLP_PROTOCOL": "http/protobuf",
            "OTEL_SERVICE_NAME": "tessera-check-test",
        }
        for name, value in env.items():
            monkeypatch.setenv(name, value)
        tracing = setup_tracing("tessera-check", env)
        assert tracing is not None
        with tracing.span("tessera.audit", **{"tessera.stage": "audit"}):
            pass
        tracing.shutdown()
    (path, request), *_ = received
    assert path == "/v1/traces"
    resource = request.resource_spans[0]
    service = {a.key: a.value.string_value for a in resource.resource.attributes}["service.name"]
    assert service == "tessera-check-test"
    assert [s.name for s in resource.scope_spans[0].spans] == ["tessera.audit"]


def test_a_trace_id_is_returned_only_for_sampled_traces():
    from opentelemetry.sdk.trace import TracerProvider
    from opentelemetry.sdk.trace.sampling import ALWAYS_OFF, ALWAYS_ON

    from authz.observability import current_trace_id

    assert current_trace_id() is None
    sampled = TracerProvider(sampler=ALWAYS_ON).get_tracer("t")
    with sampled.start_as_current_span("check") as span:
        assert current_trace_id() == format(span.get_span_context().trace_id, "032x")
    dropped = TracerProvider(sampler=ALWAYS_OFF).get_tracer("t")
    with dropped.start_as_current_span("check"):
        assert current_trace_id() is None


def test_envoy_config_command_turns_tracing_on_with_a_collector(tmp_path: Path):
    from authz.cli import main

    out = tmp_path / "envoy.yaml"
    args = ["envoy-config", "--mode", "local", "--output", str(out), "--validate"]
    assert main([*args, "--otlp", "otel-collector.monitoring:4317"]) == 0
    doc = yaml.safe_load(out.read_text())
    hcm = doc["static_resources"]["listeners"][0]["filter_chains"][0]["filters"][0]["typed_config"]
    assert hcm["tracing"]["provider"]["name"] == "envoy.tracers.opentelemetry"
    (collector,) = [c for c in doc["static_resources"]["clusters"] if c["name"] == "opentelemetry_collector"]
    address = collector["load_assignment"]["endpoints"][0]["lb_endpoints"][0]["endpoint"]["address"]
    assert address["socket_address"] == {"address": "otel-collector.monitoring", "port_value": 4317}
    assert collector["type"] == "STRICT_DNS"
    assert main(args) == 0
    doc = yaml.safe_load(out.read_text())
    assert "opentelemetry_collector" not in {c["name"] for c in doc["static_resources"]["clusters"]}


def test_tracing_refuses_a_clobbered_otlp_proto_with_the_command_that_mends_it(monkeypatch):
    # xds-protos ships an older opentelemetry/proto; installed last, it lacks what the OTLP exporters use.
    from opentelemetry.proto.common.v1 import common_pb2

    from authz.errors import ConfigError
    from authz.observability import setup_tracing

    monkeypatch.delattr(common_pb2, "InstrumentationScope")
    with pytest.raises(ConfigError, match="force-reinstall --no-deps opentelemetry-proto"):
        setup_tracing("tessera-check", {"OTEL_EXPORTER_OTLP_ENDPOINT": "http://127.0.0.1:4317"})


def test_build_info_names_the_package_version():
    from authz import __version__
    from authz.observability._metrics import build_info_metric

    [sample] = build_info_metric("check").samples
    assert sample.labels["version"] == __version__ and __version__ != "unknown"


@pytest.mark.parametrize(("setting", "largest"), [(None, 64), ("10", 10)])
def test_spans_are_exported_in_batches_of_64_unless_the_sdk_variable_says_otherwise(
    monkeypatch, setting, largest
):
    """Each export holds the GIL while it encodes its batch (see EXPORT_BATCH_SIZE): a real OTLP/HTTP
    receiver on 127.0.0.1 counts the spans of every export request."""
    from authz.observability import setup_tracing

    with otlp_http_receiver() as (endpoint, received):
        env = {
            "OTEL_EXPORTER_OTLP_ENDPOINT": endpoint,
            "OTEL_EXPORTER_OTLP_PROTOCOL": "http/protobuf",
            "OTEL_BSP_SCHEDULE_DELAY": "60000",  # only full batches go out before the shutdown
        }
        if setting is not None:
            env["OTEL_BSP_MAX_EXPORT_BATCH_SIZE"] = setting
        monkeypatch.delenv("OTEL_BSP_MAX_EXPORT_BATCH_SIZE", raising=False)
        for name, value in env.items():  # the SDK reads OTEL_BSP_* from the process environment
            monkeypatch.setenv(name, value)
        tracing = setup_tracing("tessera-check", env)
        assert tracing is not None
        for _ in range(300):
            with tracing.span("tessera.audit"):
                pass
        tracing.shutdown()
    batches = [sum(len(s.spans) for r in body.resource_spans for s in r.scope_spans) for _, body in received]
    assert sum(batches) == 300
    assert max(batches) == largest


@pytest.mark.parametrize("setting", ["on", "off"])
async def test_tessera_trace_stages_decides_whether_each_stage_of_a_check_has_its_span(
    tmp_path, monkeypatch, setting
):
    """A real check through the runtime `tessera serve` builds (SQLite, the demo policy), with the
    runtime's own tracer provider recording into memory instead of exporting."""
    from opentelemetry.sdk.trace.export import SimpleSpanProcessor
    from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

    from authz import config
    from authz.server.app import build_runtime
    from bench.__main__ import MASTER, TENANTS, _check_request, _token

    (tmp_path / "tenants.yaml").write_text(TENANTS)
    env = {
        "TESSERA_MASTER_KEY": MASTER,
        "TESSERA_VAR_DIR": str(tmp_path / "var"),
        "TESSERA_TENANTS_FILE": str(tmp_path / "tenants.yaml"),
        "OTEL_TRACES_EXPORTER": "console",  # turns tracing on; the spans go to memory below
        "TESSERA_TRACE_STAGES": setting,
    }
    for name, value in env.items():  # setup_tracing reads the process environment, as the SDK does
        monkeypatch.setenv(name, value)
    runtime = await build_runtime(config.load())
    try:
        assert runtime.tracing is not None
        recorded = InMemorySpanExporter()
        runtime.tracing.provider._active_span_processor._span_processors = (SimpleSpanProcessor(recorded),)
        from envoy.service.auth.v3 import external_auth_pb2

        from authz.server import wire

        request = external_auth_pb2.CheckRequest.FromString(_check_request(_token())[5:])
        call = wire.parse_request(request, deadline=None).messages[0].input
        decision = await runtime.pipeline.check(call)
        assert decision.allowed, decision
        names = [span.name for span in recorded.get_finished_spans()]
        stages = [n for n in names if n.startswith("tessera.")]
        assert names[-1] == "tools/call read_invoice"  # the call's span, in both settings
        if setting == "on":
            order = ("capability", "intent", "provenance", "policy", "budget")
            assert stages == [f"tessera.{s}" for s in order]
        else:
            assert stages == []
    finally:
        if runtime.tracing is not None:
            runtime.tracing.shutdown()
        await runtime.store.close()
