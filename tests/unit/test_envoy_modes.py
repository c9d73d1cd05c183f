"""`tessera envoy-config`: front-proxy and sidecar bootstraps from the one renderer, valid for real Envoy."""

from __future__ import annotations

import subprocess
import sys

import pytest
import yaml

from authz.errors import ConfigError
from authz.local.envoy_config import (
    ADMIN_CLUSTER,
    CHECK_CLUSTER,
    EXT_AUTHZ_FILTER,
    LISTENER_NAME,
    TRANSCODER_FILTER,
    UPSTREAM_CLUSTER,
    render_envoy_config,
    validate_envoy_config,
)
from authz.local.envoy_modes import parse_address, render_for_mode


def _cli(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "authz.cli", "envoy-config", *args], capture_output=True, text=True, timeout=60
    )


def _named(items, name):
    return next(item for item in items if item["name"] == name)


def _endpoints(doc, cluster):
    found = _named(doc["static_resources"]["clusters"], cluster)
    return found["type"], [
        (
            e["endpoint"]["address"]["socket_address"]["address"],
            e["endpoint"]["address"]["socket_address"]["port_value"],
        )
        for group in found["load_assignment"]["endpoints"]
        for e in group["lb_endpoints"]
    ]


def _filters(doc):
    listener = _named(doc["static_resources"]["listeners"], LISTENER_NAME)
    hcm = listener["filter_chains"][0]["filters"][0]["typed_config"]
    return listener, {f["name"]: f["typed_config"] for f in hcm["http_filters"]}


def test_front_proxy_listens_everywhere_and_reaches_services_by_name(tmp_path):
    out = tmp_path / "front.yaml"
    result = _cli(
        "--mode", "front-proxy", "--check", "tessera-check.tessera.svc:9191",
        "--admin", "tessera-admin.tessera.svc:9192", "--upstream", "tools.agents.svc:8000",
        "--check-timeout-ms", "750", "--max-request-bytes", "65536", "-o", str(out), "--validate",
    )  # fmt: skip
    assert result.returncode == 0, result.stderr
    doc = yaml.safe_load(out.read_text())
    listener, filters = _filters(doc)
    assert listener["address"]["socket_address"] == {"address": "0.0.0.0", "port_value": 8080}
    # the admin interface stays on loopback in every mode
    assert doc["admin"]["address"]["socket_address"]["address"] == "127.0.0.1"
    assert _endpoints(doc, CHECK_CLUSTER) == ("STRICT_DNS", [("tessera-check.tessera.svc", 9191)])
    assert _endpoints(doc, ADMIN_CLUSTER) == ("STRICT_DNS", [("tessera-admin.tessera.svc", 9192)])
    assert _endpoints(doc, UPSTREAM_CLUSTER) == ("STRICT_DNS", [("tools.agents.svc", 8000)])
    ext_authz = filters[EXT_AUTHZ_FILTER]
    assert ext_authz["grpc_service"]["timeout"] == "0.750s"
    assert ext_authz["failure_mode_allow"] is False
    assert ext_authz["with_request_body"]["max_request_bytes"] == 65536


def test_sidecar_reaches_the_check_on_loopback(tmp_path):
    out = tmp_path / "sidecar.yaml"
    result = _cli("--mode", "sidecar", "--upstream", "127.0.0.1:3000", "-o", str(out), "--validate")
    assert result.returncode == 0, result.stderr
    doc = yaml.safe_load(out.read_text())
    listener, _ = _filters(doc)
    assert listener["address"]["socket_address"]["address"] == "0.0.0.0"
    assert _endpoints(doc, CHECK_CLUSTER) == ("STATIC", [("127.0.0.1", 9191)])
    assert _endpoints(doc, UPSTREAM_CLUSTER) == ("STATIC", [("127.0.0.1", 3000)])


def test_modes_differ_from_the_local_stack_only_in_addresses():
    """Every ext_authz and transcoder setting of a mode's config is the local stack's (one renderer)."""
    local = yaml.safe_load(
        render_envoy_config(
            listen_port=8080,
            admin_port=9901,
            check_endpoints=[("127.0.0.1", 9191)],
            upstream=("127.0.0.1", 9000),
        )
    )
    for mode in ("front-proxy", "sidecar", "local"):
        doc = yaml.safe_load(render_for_mode(mode, upstream="tools:8000" if mode == "front-proxy" else None))
        assert _filters(doc)[1][EXT_AUTHZ_FILTER] == _filters(local)[1][EXT_AUTHZ_FILTER]
        assert _filters(doc)[1][TRANSCODER_FILTER] == _filters(local)[1][TRANSCODER_FILTER]
        assert (
            _named(doc["static_resources"]["listeners"], LISTENER_NAME)["filter_chains"]
            == _named(local["static_resources"]["listeners"], LISTENER_NAME)["filter_chains"]
        )


def test_local_mode_is_what_the_local_stack_renders(tmp_path):
    # authz.local.stack.Stack renders with these arguments (default ports) and no listen_address
    assert render_for_mode("local") == render_envoy_config(
        listen_port=8080,
        admin_port=9901,
        check_endpoints=[("127.0.0.1", 9191)],
        upstream=("127.0.0.1", 9000),
        admin_endpoints=[("127.0.0.1", 9192)],
        check_timeout_ms=500,
        max_request_bytes=1048576,
    )
    path = tmp_path / "local.yaml"
    path.write_text(render_for_mode("local"))
    validate_envoy_config(path)


def test_front_proxy_without_an_upstream_is_a_usage_error():
    result = _cli("--mode", "front-proxy")
    assert result.returncode == 2
    assert "needs --upstream" in result.stderr


@pytest.mark.parametrize("text", ["tessera-check", "host:0", "host:99999", ":9191", "host:port"])
def test_bad_addresses_are_refused(text):
    with pytest.raises(ConfigError):
        parse_address(text)


def test_ipv6_literal_address():
    assert parse_address("[::1]:9191") == ("::1", 9191)


def test_mcp_servers_from_the_command_line_get_their_routes(tmp_path):
    out = tmp_path / "envoy.yaml"
    servers = ("--mcp-server", "billing=127.0.0.1:8001", "--mcp-server", "hr=hr-tools:9000")
    proc = _cli("--mode", "sidecar", "--upstream", "127.0.0.1:8000", *servers, "--output", str(out))
    assert proc.returncode == 0, proc.stderr
    doc = yaml.safe_load(out.read_text())
    clusters = {c["name"]: c for c in doc["static_resources"]["clusters"]}
    assert (
        clusters["mcp_server_billing"]["type"] == "STATIC"
        and clusters["mcp_server_hr"]["type"] == "STRICT_DNS"
    )
    hcm = doc["static_resources"]["listeners"][0]["filter_chains"][0]["filters"][0]["typed_config"]
    paths = {r["match"].get("path") for r in hcm["route_config"]["virtual_hosts"][0]["routes"]}
    assert {"/v1/mcp/billing", "/v1/mcp/hr"} <= paths
    bad = _cli("--mode", "sidecar", "--mcp-server", "billing")
    assert bad.returncode != 0 and "NAME=HOST:PORT" in bad.stderr
