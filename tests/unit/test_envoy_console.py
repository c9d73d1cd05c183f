"""The console's /console route and cluster in the rendered Envoy config (authz.local.envoy_console)."""

from __future__ import annotations

from pathlib import Path

import yaml

from authz.local.envoy_config import render_envoy_config, validate_envoy_config

BASE = {
    "listen_port": 18080,
    "admin_port": 19901,
    "check_endpoints": [("127.0.0.1", 19191)],
    "upstream": ("127.0.0.1", 19000),
}


def _vhost(doc: dict) -> dict:
    listener = doc["static_resources"]["listeners"][0]
    hcm = listener["filter_chains"][0]["filters"][0]["typed_config"]
    return hcm["route_config"]["virtual_hosts"][0]


def test_console_route_before_the_catch_all_with_the_check_and_transcoder_off(tmp_path: Path) -> None:
    text = render_envoy_config(**BASE, console_endpoint=("127.0.0.1", 19470))
    doc = yaml.safe_load(text)
    names = [r.get("name") for r in _vhost(doc)["routes"]]
    assert names.index("console") == names.index("not_found") - 1
    route = _vhost(doc)["routes"][names.index("console")]
    assert route["match"] == {"path_separated_prefix": "/console"}
    assert route["route"]["cluster"] == "tessera_console"
    per_route = route["typed_per_filter_config"]
    assert per_route["envoy.filters.http.ext_authz"]["disabled"] is True
    assert per_route["envoy.filters.http.grpc_json_transcoder"]["disabled"] is True
    (cluster,) = [c for c in doc["static_resources"]["clusters"] if c["name"] == "tessera_console"]
    address = cluster["load_assignment"]["endpoints"][0]["lb_endpoints"][0]["endpoint"]["address"]
    assert address["socket_address"] == {"address": "127.0.0.1", "port_value": 19470}
    path = tmp_path / "envoy.yaml"
    path.write_text(text)
    validate_envoy_config(path)


def test_no_console_no_route() -> None:
    doc = yaml.safe_load(render_envoy_config(**BASE))
    assert "console" not in [r.get("name") for r in _vhost(doc)["routes"]]
    assert "tessera_console" not in [c["name"] for c in doc["static_resources"]["clusters"]]


def test_envoy_config_command_routes_the_console_to_a_service_name(tmp_path: Path) -> None:
    from authz.cli import main

    out = tmp_path / "front.yaml"
    assert main(["envoy-config", "--mode", "front-proxy", "--upstream", "tools:9000", "--console",
                 "tessera-console:9470", "--output", str(out)]) == 0  # fmt: skip
    doc = yaml.safe_load(out.read_text())
    (cluster,) = [c for c in doc["static_resources"]["clusters"] if c["name"] == "tessera_console"]
    assert cluster["type"] == "STRICT_DNS"
    assert "console" in [r.get("name") for r in _vhost(doc)["routes"]]
