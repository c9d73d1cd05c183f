"""The chart's observability values: both services scraped, traces configured, Envoy tracing rendered.

Rendered with the real pinned `helm`; the Envoy config comes from the chart's own init-container command
and passes `envoy --mode validate`.
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import kubernetes_validate
import pytest
import yaml

from authz.local.envoy_config import OTLP_CLUSTER, validate_envoy_config
from tests.deploy.chart import (
    CHART,
    KUBERNETES_VERSION,
    VALUES_DIR,
    container,
    find,
    helm,
    one,
    pod_specs,
    render,
)

POSTGRES = VALUES_DIR / "postgres-replicas.yaml"
TRACING = (
    "tracing.enabled=true",
    "tracing.otlpEndpoint=http://otel-collector.observability:4317",
    "tracing.envoyCollector=otel-collector.observability:4317",
)


def _env(c: dict) -> dict[str, str]:
    return {e["name"]: e.get("value") for e in c.get("env", ())}


def _service_ports(service: dict) -> dict[str, int]:
    return {p["name"]: p["port"] for p in service["spec"]["ports"]}


def _monitors(docs: list[dict]) -> dict[str, dict]:
    return {m["metadata"]["name"]: m for m in find(docs, "ServiceMonitor")}


def _selected_services(docs: list[dict], monitor: dict) -> list[dict]:
    wanted = monitor["spec"]["selector"]["matchLabels"]
    return [
        s
        for s in find(docs, "Service")
        if all(s["metadata"]["labels"].get(k) == v for k, v in wanted.items())
    ]


@pytest.mark.parametrize("values", [None, POSTGRES], ids=["sqlite", "postgres-replicas"])
def test_service_monitors_scrape_the_check_and_the_admin_metrics_ports(values):
    docs = render(values, "serviceMonitor.enabled=true")
    monitors = _monitors(docs)
    assert set(monitors) == {"t-tessera-authz-check", "t-tessera-authz-admin"}
    jobs = {}
    for name, monitor in monitors.items():
        [endpoint] = monitor["spec"]["endpoints"]
        jobs[name] = endpoint["relabelings"][0]["replacement"]
        # the port the monitor scrapes exists on a Service it selects, and that Service's pods listen
        # on it: a container port of the same name
        services = [s for s in _selected_services(docs, monitor) if endpoint["port"] in _service_ports(s)]
        assert services, f"{name}: no selected Service has port {endpoint['port']}"
        component = monitor["spec"]["selector"]["matchLabels"]["app.kubernetes.io/component"]
        spec = dict(pod_specs(docs))[f"t-tessera-authz-{component}"]
        names = {p["name"] for c in spec["containers"] for p in c.get("ports", ())}
        assert endpoint["port"] in names
    assert jobs == {"t-tessera-authz-check": "tessera-check", "t-tessera-authz-admin": "tessera-admin"}
    # the admin container is told the port its Service and monitor use
    spec = dict(pod_specs(docs))["t-tessera-authz-admin" if values else "t-tessera-authz-check"]
    admin = container(spec, "admin")
    assert _env(admin)["TESSERA_ADMIN_METRICS_PORT"] == "9465"
    assert {"name": "http-admin-mx", "containerPort": 9465} in admin["ports"]


def test_network_policy_lets_the_monitoring_namespaces_reach_the_admin_metrics():
    docs = render(POSTGRES, "networkPolicy.metricsFromNamespaces={monitoring}")
    policy = one(docs, "NetworkPolicy", "t-tessera-authz-admin")
    rules = [r for r in policy["spec"]["ingress"] if {"port": 9465, "protocol": "TCP"} in r["ports"]]
    assert len(rules) == 1
    assert rules[0]["from"] == [
        {"namespaceSelector": {"matchLabels": {"kubernetes.io/metadata.name": "monitoring"}}}
    ]
    # SQLite: the admin service lives in the check pod; its metrics port opens there
    docs = render(None)
    check = one(docs, "NetworkPolicy", "t-tessera-authz-check")
    assert any({"port": 9465, "protocol": "TCP"} in r["ports"] for r in check["spec"]["ingress"])


def test_tracing_off_by_default_sets_no_otel_variables_and_no_envoy_collector():
    for _, spec in pod_specs(render(None)):
        for c in [*spec.get("initContainers", ()), *spec["containers"]]:
            assert not [k for k in _env(c) if k.startswith("OTEL_")], c["name"]
            assert "--otlp" not in c.get("args", ()), c["name"]


@pytest.mark.parametrize("values", [None, POSTGRES], ids=["sqlite", "postgres-replicas"])
def test_tracing_configures_both_services_and_envoy(values, tmp_path):
    docs = render(values, *TRACING)
    specs = dict(pod_specs(docs))
    check = container(specs["t-tessera-authz-check"], "check")
    admin = container(specs["t-tessera-authz-admin" if values else "t-tessera-authz-check"], "admin")
    for c, service in ((check, "tessera-check"), (admin, "tessera-admin")):
        env = _env(c)
        assert env["OTEL_SERVICE_NAME"] == service
        assert env["OTEL_TRACES_EXPORTER"] == "otlp"
        assert env["OTEL_EXPORTER_OTLP_ENDPOINT"] == "http://otel-collector.observability:4317"
        assert env["OTEL_TRACES_SAMPLER"] == "parentbased_traceidratio"
        assert env["OTEL_TRACES_SAMPLER_ARG"] == "0.05"
    for d in docs:
        if d["kind"] not in ("ServiceMonitor", "AuthorizationPolicy", "PrometheusRule"):
            kubernetes_validate.validate(d, KUBERNETES_VERSION, strict=True)
    # Envoy: the init container's own command renders a config whose OTLP cluster points at the collector
    init = container(specs["t-tessera-authz-gateway"], "envoy-config")
    args = list(init["args"])
    assert args[args.index("--otlp") + 1] == "otel-collector.observability:4317"
    out = tmp_path / "envoy.yaml"
    args[args.index("--output") + 1] = str(out)
    proc = subprocess.run(
        [sys.executable, "-m", "authz.cli", *args], capture_output=True, text=True, timeout=60
    )
    assert proc.returncode == 0, proc.stderr
    validate_envoy_config(out)
    clusters = yaml.safe_load(out.read_text())["static_resources"]["clusters"]
    [otlp] = [c for c in clusters if c["name"] == OTLP_CLUSTER]
    endpoint = otlp["load_assignment"]["endpoints"][0]["lb_endpoints"][0]["endpoint"]["address"]
    assert endpoint["socket_address"] == {"address": "otel-collector.observability", "port_value": 4317}


def test_tracing_without_an_endpoint_fails_with_a_message_that_names_it(tmp_path: Path):
    proc = helm("template", "t", str(CHART), "--set", "tracing.enabled=true", check=False)
    assert proc.returncode != 0
    assert "tracing.enabled needs tracing.otlpEndpoint" in proc.stderr
    proc = helm("template", "t", str(CHART), "--set", "tracing.sampler=sometimes", check=False)
    assert proc.returncode != 0
    assert "/tracing/sampler" in proc.stderr


def _receipt_settings(c: dict) -> dict[str, str]:
    return {k: v for k, v in _env(c).items() if k.startswith("TESSERA_RECEIPT")}


@pytest.mark.parametrize("values", [None, POSTGRES], ids=["sqlite", "postgres-replicas"])
def test_receipt_settings_reach_check_and_admin_alike_and_load(values, tmp_path: Path):
    """Receipts verified by tool servers against the admin service's published keys: the check service
    that signs and the admin service that publishes must be given the same key ids and lifetime."""
    from authz.config import load

    docs = render(values, "receipts.kids={r2,r1}", "receipts.ttlS=120")
    specs = dict(pod_specs(docs))
    check = container(specs["t-tessera-authz-check"], "check")
    admin = container(specs["t-tessera-authz-admin" if values else "t-tessera-authz-check"], "admin")
    settings = _receipt_settings(check)
    assert settings == {
        "TESSERA_RECEIPTS": "true",
        "TESSERA_RECEIPT_KIDS": "r2,r1",
        "TESSERA_RECEIPT_TTL_S": "120",
    }
    assert _receipt_settings(admin) == settings
    config = load({**settings, "TESSERA_MASTER_KEY": "m" * 32, "TESSERA_VAR_DIR": str(tmp_path)})
    assert (config.receipts.enabled, config.receipts.kids, config.receipts.ttl_s) == (True, ("r2", "r1"), 120)
    # Off, and the defaults (no key ids rendered: Tessera's own default r1)
    off = container(dict(pod_specs(render(None, "receipts.enabled=false")))["t-tessera-authz-check"], "check")
    assert _receipt_settings(off) == {"TESSERA_RECEIPTS": "false", "TESSERA_RECEIPT_TTL_S": "60"}


def test_receipt_values_out_of_range_fail_at_render():
    for bad, where in (("receipts.ttlS=0", "/receipts/ttlS"), ("receipts.kids={a b}", "/receipts/kids/0")):
        proc = helm("template", "t", str(CHART), "--set", bad, check=False)
        assert proc.returncode != 0, bad
        assert where in proc.stderr, proc.stderr
