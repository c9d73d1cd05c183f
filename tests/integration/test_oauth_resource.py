"""OAuth resource-server mode through real Envoy: RFC 9728 metadata and the 401 discovery challenge.

Only the discovery half of the MCP authorization spec: Tessera names its authorization servers and
answers a caller without a verifying token with 401 + ``WWW-Authenticate: Bearer resource_metadata``;
denials of a verified token keep the JSON-RPC contract. (OAuth access tokens are not accepted yet.)
"""

from __future__ import annotations

from collections.abc import Iterator
from datetime import UTC, datetime, timedelta

import httpx
import pytest

from tests.integration.conftest import Gateway, rpc_error, start_gateway

ISSUER = "https://login.example.com/tenant-a"
CALL = {
    "jsonrpc": "2.0",
    "id": 5,
    "method": "tools/call",
    "params": {"name": "read_invoice", "arguments": {}},
}


@pytest.fixture(scope="module")
def oauth_gateway(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Gateway]:
    stack, gw = start_gateway(tmp_path_factory.mktemp("oauth"), oauth_authorization_servers=[ISSUER])
    try:
        yield gw
    finally:
        stack.stop()


def _metadata_url(gw: Gateway) -> str:
    return f"{gw.url}/.well-known/oauth-protected-resource/v1/mcp"


def test_protected_resource_metadata_names_the_resource_and_its_authorization_servers(oauth_gateway):
    for url in (_metadata_url(oauth_gateway), f"{oauth_gateway.url}/.well-known/oauth-protected-resource"):
        response = httpx.get(url, timeout=10)
        assert response.status_code == 200 and response.headers["content-type"] == "application/json"
        metadata = response.json()
        assert metadata["resource"] == f"{oauth_gateway.url}/v1/mcp"
        assert metadata["authorization_servers"] == [ISSUER]
        assert metadata["bearer_methods_supported"] == ["header"]


def test_a_request_without_a_token_gets_401_naming_the_metadata(oauth_gateway):
    response = oauth_gateway.mcp(CALL, None)
    assert response.status_code == 401
    assert (
        response.headers["www-authenticate"] == f'Bearer resource_metadata="{_metadata_url(oauth_gateway)}"'
    )
    assert response.json()["id"] == 5 and response.json()["error"]["code"] == -32010


def test_a_token_that_does_not_verify_gets_401_invalid_token(oauth_gateway):
    forged = oauth_gateway.token()[:-4] + "AAAA"
    response = oauth_gateway.mcp(CALL, forged)
    assert response.status_code == 401
    challenge = response.headers["www-authenticate"]
    assert challenge.startswith(f'Bearer resource_metadata="{_metadata_url(oauth_gateway)}"')
    assert 'error="invalid_token"' in challenge


def test_denials_after_authentication_keep_the_json_rpc_contract(oauth_gateway):
    expired = oauth_gateway.token(expires=datetime.now(UTC) - timedelta(minutes=1))
    assert rpc_error(oauth_gateway.mcp(CALL, expired))["code"] == -32010
    denied = oauth_gateway.call("delete_invoice", {"invoice_id": "INV-1001"}, token=oauth_gateway.token())
    assert rpc_error(denied)["code"] == -32012
    allowed = oauth_gateway.call("read_invoice", {"invoice_id": "INV-1001"}, token=oauth_gateway.token())
    assert "result" in allowed.json()


def test_the_default_listener_keeps_intentgate_compatible_denials(gateway: Gateway):
    assert rpc_error(gateway.mcp(CALL, None))["code"] == -32010
    assert httpx.get(f"{gateway.url}/.well-known/oauth-protected-resource", timeout=10).status_code == 404
