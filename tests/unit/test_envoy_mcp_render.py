"""The renderer's MCP options: CORS origins, the stream idle timeout, the OAuth resource-server mode."""

from __future__ import annotations

import json

import pytest
import yaml

from authz.errors import ConfigError
from authz.local.envoy_config import render_envoy_config

BASE = {
    "listen_port": 18080,
    "admin_port": 19901,
    "check_endpoints": [("127.0.0.1", 19191)],
    "upstream": ("127.0.0.1", 19000),
}


def _routes(**kw) -> dict:
    doc = yaml.safe_load(render_envoy_config(**BASE, **kw))
    hcm = doc["static_resources"]["listeners"][0]["filter_chains"][0]["filters"][0]["typed_config"]
    vhost = hcm["route_config"]["virtual_hosts"][0]
    return vhost, {r["name"]: r for r in vhost["routes"]}


def test_cors_origins_and_idle_timeout_are_rendered():
    vhost, routes = _routes(cors_origins=["https://app.example/"], mcp_idle_timeout_ms=45_000)
    cors = vhost["typed_per_filter_config"]["envoy.filters.http.cors"]
    assert cors["allow_origin_string_match"] == [{"exact": "https://app.example"}]
    for name in ("mcp", "mcp_stream"):
        assert routes[name]["route"]["idle_timeout"] == "45.000s" and routes[name]["route"]["timeout"] == "0s"
    with pytest.raises(ConfigError):
        render_envoy_config(**BASE, cors_origins=["app.example"])
    with pytest.raises(ConfigError):
        render_envoy_config(**BASE, mcp_idle_timeout_ms=0)


def test_oauth_mode_serves_metadata_and_names_it_to_the_check():
    _, routes = _routes(
        oauth_resource="https://gw.example/v1/mcp", oauth_authorization_servers=["https://idp"]
    )
    metadata = json.loads(routes["oauth_metadata"]["direct_response"]["body"]["inline_string"])
    assert metadata == {
        "resource": "https://gw.example/v1/mcp",
        "authorization_servers": ["https://idp"],
        "bearer_methods_supported": ["header"],
        "resource_name": "Tessera",
    }
    assert routes["oauth_metadata"]["match"]["path"] == "/.well-known/oauth-protected-resource/v1/mcp"
    for name in ("mcp", "mcp_list", "tool_call"):
        extensions = routes[name]["typed_per_filter_config"]["envoy.filters.http.ext_authz"][
            "check_settings"
        ]["context_extensions"]
        assert (
            extensions["resource_metadata"]
            == "https://gw.example/.well-known/oauth-protected-resource/v1/mcp"
        )
    _, plain = _routes()
    assert "oauth_metadata" not in plain
    assert "resource_metadata" not in json.dumps(plain["mcp"])
    with pytest.raises(ConfigError):
        render_envoy_config(
            **BASE, oauth_resource="https://gw.example/v1/mcp", oauth_authorization_servers=[]
        )
    with pytest.raises(ConfigError):
        render_envoy_config(
            **BASE, oauth_resource="gw.example/v1/mcp", oauth_authorization_servers=["https://i"]
        )


def test_envoy_config_command_passes_the_mcp_options(tmp_path):
    from authz.cli import main

    out = tmp_path / "envoy.yaml"
    code = main(
        [
            "envoy-config",
            "--mode",
            "local",
            "--cors-origin",
            "https://app.example",
            "--mcp-idle-timeout-ms",
            "60000",
            "--oauth-resource",
            "https://gw.example/v1/mcp",
            "--oauth-authorization-server",
            "https://idp.example",
            "-o",
            str(out),
        ]
    )
    assert code == 0
    text = out.read_text()
    assert "https://app.example" in text and "idle_timeout: 60.000s" in text
    assert "/.well-known/oauth-protected-resource/v1/mcp" in text and "https://idp.example" in text


def test_the_local_replies_of_a_withheld_list_carry_cors_headers_for_the_rendered_origins_only():
    text = render_envoy_config(**BASE, cors_origins=["https://a.example", "http://b.example:8080"])
    doc = yaml.safe_load(text)
    hcm = doc["static_resources"]["listeners"][0]["filter_chains"][0]["filters"][0]["typed_config"]
    patterns = {
        json.dumps(item["header_filter"]["header"]["string_match"])
        for mapper in hcm["local_reply_config"]["mappers"]
        for item in mapper["filter"]["and_filter"]["filters"]
        if item.get("header_filter", {}).get("header", {}).get("name") == "origin"
    }
    assert len(patterns) == 1
    regex = json.loads(patterns.pop())["safe_regex"]["regex"]
    import re

    assert re.fullmatch(regex, "https://a.example") and re.fullmatch(regex, "http://b.example:8080")
    assert not re.fullmatch(regex, "https://aXexample") and not re.fullmatch(regex, "http://evil.example")


def test_more_mcp_servers_get_their_own_routes_and_cluster_and_envoy_accepts_them(tmp_path):
    from authz.local.envoy_config import validate_envoy_config

    text = render_envoy_config(
        **BASE, mcp_servers={"billing": ("127.0.0.1", 19100)}, mcp_idle_timeout_ms=9000
    )
    path = tmp_path / "envoy.yaml"
    path.write_text(text)
    validate_envoy_config(path)
    doc = yaml.safe_load(text)
    hcm = doc["static_resources"]["listeners"][0]["filter_chains"][0]["filters"][0]["typed_config"]
    routes = {r["name"]: r for r in hcm["route_config"]["virtual_hosts"][0]["routes"]}
    for name in ("mcp_list", "mcp_stream", "mcp", "mcp_preflight"):
        route = routes[f"{name}@billing"]
        assert route["match"]["path"] == "/v1/mcp/billing"
        assert route["route"]["cluster"] == "mcp_server_billing"
        extensions = route["typed_per_filter_config"]["envoy.filters.http.ext_authz"]["check_settings"]
        assert extensions["context_extensions"] == {"route": "mcp", "server": "billing"}
        assert "server" not in json.dumps(routes[name]["typed_per_filter_config"])  # the default endpoint
    assert routes["mcp@billing"]["route"]["idle_timeout"] == "9.000s"
    cluster = next(c for c in doc["static_resources"]["clusters"] if c["name"] == "mcp_server_billing")
    address = cluster["load_assignment"]["endpoints"][0]["lb_endpoints"][0]["endpoint"]["address"]
    assert address["socket_address"] == {"address": "127.0.0.1", "port_value": 19100}
    with pytest.raises(ConfigError):
        render_envoy_config(**BASE, mcp_servers={"Bad/Name": ("127.0.0.1", 1)})
