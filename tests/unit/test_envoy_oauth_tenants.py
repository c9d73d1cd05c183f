"""Per-tenant OAuth in the rendered Envoy config: a virtual host per tenant resource, every check pinned
to the tenant, metadata naming only that tenant's authorization servers; validated by real Envoy."""

from __future__ import annotations

import json

import pytest
import yaml

from authz.errors import ConfigError
from authz.local.envoy_config import render_envoy_config, validate_envoy_config
from authz.local.envoy_modes import parse_oauth_tenants

BASE = {
    "listen_port": 18080,
    "admin_port": 19901,
    "check_endpoints": [("127.0.0.1", 19191)],
    "upstream": ("127.0.0.1", 19000),
}
TENANTS = {
    "acme": ("https://acme.gw.example/v1/mcp", ["https://login.acme.example"]),
    "globex": ("https://globex.gw.example:8443/v1/mcp", ["https://idp.globex.example", "https://b.example"]),
}


def _vhosts(text: str) -> dict[str, dict]:
    doc = yaml.safe_load(text)
    hcm = doc["static_resources"]["listeners"][0]["filter_chains"][0]["filters"][0]["typed_config"]
    return {v["name"]: v for v in hcm["route_config"]["virtual_hosts"]}


def test_each_tenant_gets_its_own_pinned_virtual_host(tmp_path):
    text = render_envoy_config(**BASE, oauth_tenants=TENANTS)
    vhosts = _vhosts(text)
    assert vhosts["tenant_acme"]["domains"] == ["acme.gw.example"]
    assert vhosts["tenant_globex"]["domains"] == ["globex.gw.example:8443", "globex.gw.example"]
    for tenant, (resource, servers) in TENANTS.items():
        routes = {r["name"]: r for r in vhosts[f"tenant_{tenant}"]["routes"]}
        metadata = json.loads(routes["oauth_metadata"]["direct_response"]["body"]["inline_string"])
        assert metadata["resource"] == resource and metadata["authorization_servers"] == servers
        context = routes["mcp"]["typed_per_filter_config"]["envoy.filters.http.ext_authz"]["check_settings"]
        assert context["context_extensions"]["tenant"] == tenant
        assert context["context_extensions"]["resource_metadata"].endswith(
            "/.well-known/oauth-protected-resource/v1/mcp"
        )
    # The catch-all host stays as it was: no tenant pinned, no OAuth mode.
    shared = {r["name"]: r for r in vhosts["tessera"]["routes"]}
    assert "oauth_metadata" not in shared
    assert "tenant" not in json.dumps(shared["mcp"]["typed_per_filter_config"])
    path = tmp_path / "envoy.yaml"
    path.write_text(text)
    validate_envoy_config(path)


@pytest.mark.parametrize(
    "tenants",
    [
        {"bad name!": ("https://a.example/v1/mcp", ["https://i.example"])},
        {"a": ("a.example/v1/mcp", ["https://i.example"])},
        {"a": ("https://a.example/v1/mcp", [])},
        {"a": ("https://s.example/v1/mcp", ["https://i"]), "b": ("https://s.example/v1/mcp", ["https://j"])},
    ],
)
def test_bad_per_tenant_settings_are_refused(tenants):
    with pytest.raises(ConfigError):
        render_envoy_config(**BASE, oauth_tenants=tenants)


def test_the_command_line_form():
    assert parse_oauth_tenants(["acme,https://acme.gw/v1/mcp,https://idp.acme,https://idp2"]) == {
        "acme": ("https://acme.gw/v1/mcp", ["https://idp.acme", "https://idp2"])
    }
    for bad in (
        ["acme,https://acme.gw/v1/mcp"],
        ["a,https://x/v1/mcp,https://i", "a,https://y/v1/mcp,https://j"],
    ):
        with pytest.raises(ConfigError):
            parse_oauth_tenants(bad)
