"""OAuth access tokens (JWT) through real Envoy, beside macaroons, with the official `mcp` client.

The issuer here is a stand-in (tests/oauth_issuer.py): a real HTTP JWKS endpoint and real RS256
signatures, for tokens a real authorization server would never issue (unsigned, foreign keys, claims of
any shape). The full flow with a real authorization server is tests/integration/test_oauth_flow.py.
The listener runs in OAuth resource-server mode, so a token that does not verify is a 401 challenge.
"""

from __future__ import annotations

from collections.abc import Iterator

import httpx2
import jwt
import pytest
from mcp import ClientSession
from mcp.client.streamable_http import streamable_http_client

from authz.token import attenuate
from tests.integration.conftest import Gateway, rpc_error, start_gateway
from tests.oauth_issuer import StandInIssuer

AUDIENCE = "https://gateway.example/v1/mcp"


@pytest.fixture(scope="module")
def issuer() -> Iterator[StandInIssuer]:
    server = StandInIssuer()
    yield server
    server.close()


@pytest.fixture(scope="module")
def unreachable_issuer() -> StandInIssuer:
    """A trusted issuer whose JWKS cannot be fetched: it stops before the gateway starts."""
    server = StandInIssuer()
    server.close()
    return server


@pytest.fixture(scope="module")
def oauth_tokens_gateway(
    tmp_path_factory: pytest.TempPathFactory, issuer: StandInIssuer, unreachable_issuer: StandInIssuer
) -> Iterator[Gateway]:
    workdir = tmp_path_factory.mktemp("oauth-tokens")
    issuers = workdir / "issuers.yaml"
    # The issuer's `tessera_max_calls` claim sets a per-token call budget.
    issuers.write_text(
        issuer.issuers_yaml(AUDIENCE)
        + "    max_calls_claim: tessera_max_calls\n"
        + unreachable_issuer.issuers_yaml(AUDIENCE).removeprefix("issuers:\n")
    )
    stack, gw = start_gateway(
        workdir,
        env={"TESSERA_OAUTH_ISSUERS_FILE": str(issuers)},
        oauth_authorization_servers=[issuer.issuer],
    )
    try:
        yield gw
    finally:
        stack.stop()


async def test_the_mcp_client_lists_and_calls_with_an_access_token(oauth_tokens_gateway, issuer):
    token = issuer.token(AUDIENCE, scope="read_invoice")
    async with (
        httpx2.AsyncClient(headers={"Authorization": f"Bearer {token}"}, timeout=10) as http,
        streamable_http_client(f"{oauth_tokens_gateway.url}/v1/mcp", http_client=http) as (read, write),
        ClientSession(read, write) as session,
    ):
        await session.initialize()
        assert {t.name for t in (await session.list_tools()).tools} == {"read_invoice"}
        result = await session.call_tool("read_invoice", {"invoice_id": "INV-1001"})
        assert not result.is_error
    forwarded = oauth_tokens_gateway.upstream_requests("/mcp")[-1]["headers"]
    assert forwarded["x-tessera-agent"] == ["agent-7"] and forwarded["x-tessera-tenant"] == ["demo"]
    assert "authorization" not in forwarded


def test_scopes_policy_and_expiry_apply_to_access_tokens(oauth_tokens_gateway, issuer):
    gw = oauth_tokens_gateway
    narrow = issuer.token(AUDIENCE, scope="list_invoices")
    lacking = gw.call("read_invoice", {"invoice_id": "INV-1001"}, token=narrow)
    assert lacking.status_code == 403 and lacking.json()["error"]["code"] == -32010
    challenge = lacking.headers["www-authenticate"]
    assert challenge.startswith('Bearer error="insufficient_scope", scope="read_invoice"')
    wide = issuer.token(AUDIENCE, scope="read_invoice delete_invoice")
    assert rpc_error(gw.call("delete_invoice", {"invoice_id": "INV-1001"}, token=wide))["code"] == -32012
    expired = issuer.token(AUDIENCE, scope="read_invoice", lifetime_s=-60)
    error = rpc_error(gw.call("read_invoice", {"invoice_id": "INV-1001"}, token=expired))
    assert error["code"] == -32010 and "expire" in error["data"]["reason"]


@pytest.mark.parametrize("case", ["wrong-audience", "wrong-issuer", "unknown-key", "unsigned"])
def test_access_tokens_that_do_not_verify_get_the_401_challenge(oauth_tokens_gateway, issuer, case):
    if case == "wrong-audience":
        token = issuer.token("https://elsewhere.example/v1/mcp", scope="read_invoice")
    elif case == "wrong-issuer":
        token = issuer.token(AUDIENCE, scope="read_invoice", iss="https://evil.example")
    elif case == "unsigned":
        claims = {"iss": issuer.issuer, "aud": AUDIENCE, "exp": 2**31, "scope": "read_invoice"}
        token = jwt.encode(claims, None, algorithm="none", headers={"kid": issuer.current})
    else:
        other = StandInIssuer()
        try:
            token = other.token(AUDIENCE, scope="read_invoice", iss=issuer.issuer)
        finally:
            other.close()
    response = oauth_tokens_gateway.call("read_invoice", {"invoice_id": "INV-1001"}, token=token)
    assert response.status_code == 401
    assert 'error="invalid_token"' in response.headers["www-authenticate"]
    assert response.json()["error"]["code"] == -32010


def test_macaroons_work_beside_access_tokens(oauth_tokens_gateway):
    token = oauth_tokens_gateway.token()
    assert (
        "result" in oauth_tokens_gateway.call("read_invoice", {"invoice_id": "INV-1001"}, token=token).json()
    )


def test_a_prompt_or_resource_outside_the_token_gets_the_insufficient_scope_403(oauth_tokens_gateway):
    """Like a tool outside ``tools``: a prompt outside ``prompts`` or a resource outside ``resources`` is
    HTTP 403 naming the scope the token lacks; what the caveats admit still reaches the server."""
    gw = oauth_tokens_gateway
    token = attenuate(gw.token(), ["prompts = summary", "resources = file:///public/"])
    cases = [
        ("prompts/get", {"name": "secret-plan"}, "prompts:secret-plan"),
        ("resources/read", {"uri": "file:///hr/pay.csv"}, "resources:file:///hr/pay.csv"),
        ("resources/subscribe", {"uri": "file:///hr/pay.csv"}, "resources:file:///hr/pay.csv"),
    ]
    for method, params, scope in cases:
        denied = gw.mcp({"jsonrpc": "2.0", "id": 5, "method": method, "params": params}, token)
        assert denied.status_code == 403, (method, denied.status_code, denied.text)
        assert denied.json()["error"]["code"] == -32010 and denied.json()["id"] == 5
        challenge = denied.headers["www-authenticate"]
        assert challenge.startswith(f'Bearer error="insufficient_scope", scope="{scope}", resource_metadata=')
    # A URI that cannot be written as a scope token is not echoed into the header; still a 403.
    quoted = gw.mcp(
        {"jsonrpc": "2.0", "id": 6, "method": "resources/read", "params": {"uri": 'file:///x" y'}}, token
    )
    assert quoted.status_code == 403 and "scope=" not in quoted.headers["www-authenticate"]
    for method, params in [
        ("prompts/get", {"name": "summary"}),
        ("resources/read", {"uri": "file:///public/a"}),
    ]:
        admitted = gw.mcp({"jsonrpc": "2.0", "id": 7, "method": method, "params": params}, token)
        assert admitted.status_code == 200 and "www-authenticate" not in admitted.headers, method
        assert admitted.json().get("error", {}).get("code") != -32010, method


def test_a_budget_claim_limits_the_calls_of_its_token(oauth_tokens_gateway, issuer):
    token = issuer.token(AUDIENCE, scope="read_invoice", tessera_max_calls=2)
    for _ in range(2):
        assert (
            "result"
            in oauth_tokens_gateway.call("read_invoice", {"invoice_id": "INV-1001"}, token=token).json()
        )
    error = rpc_error(oauth_tokens_gateway.call("read_invoice", {"invoice_id": "INV-1001"}, token=token))
    assert error["code"] == -32013


def test_an_issuer_whose_keys_cannot_be_fetched_fails_closed(oauth_tokens_gateway, unreachable_issuer):
    # Signed with the unreachable issuer's real key: Tessera cannot check it, so it is not let through,
    # and the caller is told authorization is unavailable rather than that its token is bad.
    token = unreachable_issuer.token(AUDIENCE, scope="read_invoice")
    error = rpc_error(oauth_tokens_gateway.call("read_invoice", {"invoice_id": "INV-1001"}, token=token))
    assert error["code"] == -32018 and "could not be fetched" in error["data"]["reason"]
