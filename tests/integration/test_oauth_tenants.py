"""Authorization servers per tenant through real Envoy: each tenant's resource (its own host) publishes
metadata naming only the servers that tenant trusts, and a token of another tenant is refused there.

Two stand-in issuers (tests/oauth_issuer.py: real JWKS over HTTP, real RS256 signatures), one per
tenant; each tenant's resource has a host name of its own (`127.0.0.1` for demo, `localhost` for acme:
two names the demo tool server accepts), told apart by the Host header as a DNS name per tenant would.
"""

from __future__ import annotations

from collections.abc import Iterator

import httpx
import pytest

from authz.local.stack import StackPorts
from tests.integration.conftest import Gateway, start_gateway
from tests.oauth_issuer import StandInIssuer

READ = {"invoice_id": "INV-1001"}
HOSTS = {"demo": "127.0.0.1", "acme": "localhost"}


@pytest.fixture(scope="module")
def issuers() -> Iterator[dict[str, StandInIssuer]]:
    servers = {"demo": StandInIssuer(), "acme": StandInIssuer()}
    yield servers
    for server in servers.values():
        server.close()


@pytest.fixture(scope="module")
def tenants_gateway(
    tmp_path_factory: pytest.TempPathFactory, issuers: dict[str, StandInIssuer]
) -> Iterator[Gateway]:
    workdir = tmp_path_factory.mktemp("oauth-tenants")
    ports = StackPorts.free()
    resources = {t: f"http://{HOSTS[t]}:{ports.listen}/v1/mcp" for t in issuers}
    issuers_file = workdir / "issuers.yaml"
    issuers_file.write_text(
        "issuers:\n"
        + "".join(
            issuer.issuers_yaml(resources[tenant], tenant).removeprefix("issuers:\n")
            for tenant, issuer in issuers.items()
        )
    )
    stack, gw = start_gateway(
        workdir,
        ports=ports,
        env={"TESSERA_OAUTH_ISSUERS_FILE": str(issuers_file)},
        oauth_tenants={t: (resources[t], [issuers[t].issuer]) for t in issuers},
    )
    try:
        yield gw
    finally:
        stack.stop()


def _host(gw: Gateway, tenant: str) -> dict[str, str]:
    return {"host": f"{HOSTS[tenant]}:{gw.stack.ports.listen}"}


def _resource(gw: Gateway, tenant: str) -> str:
    return f"http://{HOSTS[tenant]}:{gw.stack.ports.listen}/v1/mcp"


def test_each_tenants_metadata_names_only_its_own_authorization_servers(tenants_gateway, issuers):
    for tenant, issuer in issuers.items():
        response = httpx.get(
            f"{tenants_gateway.url}/.well-known/oauth-protected-resource/v1/mcp",
            headers=_host(tenants_gateway, tenant),
            timeout=10,
        )
        assert response.status_code == 200
        metadata = response.json()
        assert metadata["authorization_servers"] == [issuer.issuer]
        assert metadata["resource"] == _resource(tenants_gateway, tenant)


def test_a_request_without_a_token_is_sent_to_its_tenants_metadata(tenants_gateway):
    response = tenants_gateway.call("read_invoice", READ, headers=_host(tenants_gateway, "acme"))
    assert response.status_code == 401
    port = tenants_gateway.stack.ports.listen
    expected = f"http://localhost:{port}/.well-known/oauth-protected-resource/v1/mcp"
    assert response.headers["www-authenticate"] == f'Bearer resource_metadata="{expected}"'


def test_a_token_from_another_tenants_issuer_is_refused(tenants_gateway, issuers):
    gw = tenants_gateway
    own = issuers["demo"].token(_resource(gw, "demo"), scope="read_invoice")
    first = gw.call("read_invoice", READ, token=own, headers=_host(gw, "demo"))
    assert first.status_code == 200 and "result" in first.json(), (first.status_code, first.text)
    # acme's issuer, signed with its published key, audience acme's resource: a valid acme token, on
    # demo's resource. Its tenant is acme, and demo's host pins every check to demo.
    # Not a credential for this resource: the 401 challenge, naming demo's metadata (and so its servers).
    foreign = issuers["acme"].token(_resource(gw, "acme"), scope="read_invoice")
    response = gw.call("read_invoice", READ, token=foreign, headers=_host(gw, "demo"))
    assert response.status_code == 401, response.text
    challenge = response.headers["www-authenticate"]
    assert (
        'error="invalid_token"' in challenge and f"127.0.0.1:{gw.stack.ports.listen}/.well-known" in challenge
    )
    error = response.json()["error"]
    assert error["code"] == -32010 and "tenant" in error["data"]["reason"]
    # demo's token on acme's host: refused the same way
    response = gw.call("read_invoice", READ, token=own, headers=_host(gw, "acme"))
    assert response.status_code == 401 and response.json()["error"]["code"] == -32010
