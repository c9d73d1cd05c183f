"""The MCP authorization flow end to end: a real authorization server process (oidc-provider-mock, see
tests/oauth_server.py), the official `mcp` client's OAuth provider, real Envoy in OAuth mode, Tessera;
and the token exchange (`POST /v1/oauth/token`) of that server's access tokens for capability tokens.

The client starts without credentials; Tessera's 401 names the protected-resource metadata (RFC 9728),
the client discovers the authorization server from it, reads its metadata, registers itself (RFC 7591),
has the user log in (the redirect handler submits the server's login form), exchanges the code for a
JWT access token bound to the resource (RFC 8707) and calls a tool. Tessera fetched the server's JWKS
through its outbound client (the local stack's TESSERA_OUTBOUND_ALLOW admits loopback).
"""

from __future__ import annotations

from collections.abc import Iterator

import httpx
import httpx2
import jwt
import pytest
from mcp import ClientSession
from mcp.client.auth import AuthorizationCodeResult, OAuthClientProvider
from mcp.client.streamable_http import streamable_http_client
from mcp.shared.auth import OAuthClientInformationFull, OAuthClientMetadata, OAuthToken

from authz.client import CapabilityError, attenuate, exchange_token
from authz.local.stack import StackPorts
from authz.oauth import ACCESS_TOKEN_TYPE, TOKEN_EXCHANGE_GRANT
from tests.integration.conftest import Gateway, rpc_error, start_gateway
from tests.oauth_server import OAuthServer

# authlib, under oidc-provider-mock, warns about its own deprecated internals.
pytestmark = pytest.mark.filterwarnings("ignore::DeprecationWarning")

AGENT = "agent-7"
AGENT_TOOLS = ["read_invoice", "list_invoices"]


class MemoryStorage:
    """The client's token and registration store (the SDK's TokenStorage protocol), in memory."""

    def __init__(self) -> None:
        self.tokens: OAuthToken | None = None
        self.client_info: OAuthClientInformationFull | None = None

    async def get_tokens(self) -> OAuthToken | None:
        return self.tokens

    async def set_tokens(self, tokens: OAuthToken) -> None:
        self.tokens = tokens

    async def get_client_info(self) -> OAuthClientInformationFull | None:
        return self.client_info

    async def set_client_info(self, client_info: OAuthClientInformationFull) -> None:
        self.client_info = client_info


@pytest.fixture(scope="module")
def authorization_server() -> Iterator[OAuthServer]:
    server = OAuthServer(users=[(AGENT, {"tools": AGENT_TOOLS})])
    yield server
    server.close()


@pytest.fixture(scope="module")
def flow_gateway(
    tmp_path_factory: pytest.TempPathFactory, authorization_server: OAuthServer
) -> Iterator[Gateway]:
    workdir = tmp_path_factory.mktemp("oauth-flow")
    ports = StackPorts.free()
    issuers = authorization_server.write_issuers(
        workdir / "issuers.yaml",
        listen_port=ports.listen,
        exchange=["tools: [read_invoice, list_invoices, transfer_funds]", "max_ttl_s: 600", "max_calls: 20"],
    )
    stack, gw = start_gateway(
        workdir,
        ports=ports,
        # The JWKS is fetched through the outbound client: the local stack's allowlist (loopback) lets
        # it reach this server (tests/unit/test_oauth_tokens.py shows a fetch the rules refuse).
        env={"TESSERA_OAUTH_ISSUERS_FILE": str(issuers)},
        oauth_authorization_servers=[authorization_server.issuer],
    )
    try:
        yield gw
    finally:
        stack.stop()


async def test_the_mcp_client_discovers_logs_in_and_calls_through_envoy(flow_gateway, authorization_server):
    storage = MemoryStorage()
    redirected: list[AuthorizationCodeResult] = []

    async def redirect_handler(url: str) -> None:
        code, state = await authorization_server.log_in(url, AGENT)
        redirected.append(AuthorizationCodeResult(code=code, state=state))

    async def callback_handler() -> AuthorizationCodeResult:
        return redirected.pop()

    oauth = OAuthClientProvider(
        server_url=f"{flow_gateway.url}/v1/mcp",
        client_metadata=OAuthClientMetadata(
            client_name="tessera-test-agent",
            redirect_uris=["http://127.0.0.1:1/callback"],
            grant_types=["authorization_code"],
            response_types=["code"],
            token_endpoint_auth_method="client_secret_post",
        ),
        storage=storage,
        redirect_handler=redirect_handler,
        callback_handler=callback_handler,
    )
    async with (
        httpx2.AsyncClient(auth=oauth, timeout=20) as http,
        streamable_http_client(f"{flow_gateway.url}/v1/mcp", http_client=http) as (read, write),
        ClientSession(read, write) as session,
    ):
        await session.initialize()
        assert {t.name for t in (await session.list_tools()).tools} == set(AGENT_TOOLS)
        result = await session.call_tool("read_invoice", {"invoice_id": "INV-1001"})
        assert not result.is_error

    # The flow really ran: the client registered and holds a JWT issued by the server for this resource.
    assert storage.client_info is not None and storage.client_info.client_id
    claims = jwt.decode(storage.tokens.access_token, options={"verify_signature": False})
    assert claims["iss"] == authorization_server.issuer and claims["sub"] == AGENT
    assert claims["aud"] == f"{flow_gateway.url}/v1/mcp"
    forwarded = flow_gateway.upstream_requests("/mcp")[-1]["headers"]
    assert forwarded["x-tessera-agent"] == [AGENT] and forwarded["x-tessera-tenant"] == ["demo"]

    # The same token, outside the tools its claims name: 403 insufficient_scope, not a call.
    denied = flow_gateway.call(
        "delete_invoice", {"invoice_id": "INV-1001"}, token=storage.tokens.access_token
    )
    assert denied.status_code == 403 and 'error="insufficient_scope"' in denied.headers["www-authenticate"]


def test_a_token_of_the_real_server_for_another_resource_is_refused(flow_gateway, authorization_server):
    # Issued by the same server and signed with its published key, but for another resource (RFC 8707).
    token = authorization_server.issue(AGENT, resource="https://elsewhere.example/v1/mcp")
    response = flow_gateway.call("read_invoice", {"invoice_id": "INV-1001"}, token=token)
    assert response.status_code == 401 and 'error="invalid_token"' in response.headers["www-authenticate"]
    assert response.json()["error"]["code"] == -32010


def test_an_expired_token_of_the_real_server_is_refused(flow_gateway, authorization_server):
    token = authorization_server.issue(AGENT, resource=f"{flow_gateway.url}/v1/mcp", lifetime_s=-60)
    error = rpc_error(flow_gateway.call("read_invoice", {"invoice_id": "INV-1001"}, token=token))
    assert error["code"] == -32010 and "expire" in error["data"]["reason"]


def _exchange(gw: Gateway, subject: str, **extra: str) -> httpx.Response:
    form = {
        "grant_type": TOKEN_EXCHANGE_GRANT,
        "subject_token": subject,
        "subject_token_type": ACCESS_TOKEN_TYPE,
        **extra,
    }
    return httpx.post(f"{gw.url}/v1/oauth/token", data=form, timeout=10)


def test_token_exchange_then_offline_attenuation_then_calls_through_envoy(flow_gateway, authorization_server):
    gw = flow_gateway
    subject = authorization_server.issue(AGENT, resource=f"{gw.url}/v1/mcp")
    response = _exchange(gw, subject)
    assert response.status_code == 200, response.text
    assert response.headers["content-type"].startswith("application/json")
    body = response.json()
    assert body["issued_token_type"] == ACCESS_TOKEN_TYPE and body["token_type"] == "Bearer"
    assert 0 < body["expires_in"] <= 600  # the allowance's cap
    # The user's claims (read_invoice, list_invoices) ∩ the allowance (those and transfer_funds).
    assert body["scope"].split() == ["list_invoices", "read_invoice"]
    capability = body["access_token"]
    assert not capability.startswith("eyJ")  # a macaroon, not the JWT

    allowed = gw.call("read_invoice", {"invoice_id": "INV-1001"}, token=capability)
    assert "result" in allowed.json(), allowed.text
    # A sub-agent's token, attenuated offline with the SDK: no call to Tessera to make it.
    sub_agent = attenuate(capability, tools=["list_invoices"])
    assert "result" in gw.call("list_invoices", {}, token=sub_agent).json()
    outside = gw.call("read_invoice", {"invoice_id": "INV-1001"}, token=sub_agent)
    assert outside.status_code == 403 and 'error="insufficient_scope"' in outside.headers["www-authenticate"]

    # The exchange is in the tenant's audit chain, as the agent it was issued to.
    events = httpx.get(
        f"{gw.url}/v1/admin/tenants/demo/audit/events",
        headers={"authorization": f"Bearer {gw.stack.admin_key}"},
        params={"page_size": 1000},
        timeout=10,
    ).json()["events"]
    exchanges = [e["event"] for e in events if "token.exchange" in str(e["event"])]
    assert exchanges and AGENT in str(exchanges[-1]) and authorization_server.issuer in str(exchanges[-1])


@pytest.mark.parametrize(
    ("case", "error"),
    [("widened", "invalid_scope"), ("expired", "invalid_grant"), ("wrong-grant", "unsupported_grant_type")],
)
def test_exchanges_that_would_widen_or_do_not_verify_are_refused(
    flow_gateway, authorization_server, case, error
):
    gw = flow_gateway
    resource = f"{gw.url}/v1/mcp"
    if case == "widened":  # delete_invoice: in neither the user's claims nor the allowance
        response = _exchange(
            gw, authorization_server.issue(AGENT, resource=resource), scope="read_invoice delete_invoice"
        )
    elif case == "expired":
        response = _exchange(gw, authorization_server.issue(AGENT, resource=resource, lifetime_s=-60))
    else:
        subject = authorization_server.issue(AGENT, resource=resource)
        response = httpx.post(
            f"{gw.url}/v1/oauth/token",
            data={"grant_type": "client_credentials", "subject_token": subject},
            timeout=10,
        )
    assert response.status_code == 400, response.text
    assert response.json()["error"] == error  # RFC 6749 §5.2 (tests/integration/test_oauth_token_endpoint.py)
    assert "access_token" not in response.text
    if case == "widened":  # the subject verified: the attempt is in the tenant's chain
        events = httpx.get(
            f"{gw.url}/v1/admin/tenants/demo/audit/events",
            headers={"authorization": f"Bearer {gw.stack.admin_key}"},
            params={"page_size": 1000},
            timeout=10,
        ).json()["events"]
        refused = [e["event"] for e in events if "token.exchange.refused" in str(e["event"])]
        assert refused and "invalid_scope" in str(refused[-1]) and "delete_invoice" in str(refused[-1])


def test_the_sdk_exchanges_and_a_widened_exchange_raises(flow_gateway, authorization_server):
    gw = flow_gateway
    subject = authorization_server.issue(AGENT, resource=f"{gw.url}/v1/mcp")
    capability = exchange_token(gw.url, subject, tools=["list_invoices"])
    assert "result" in gw.call("list_invoices", {}, token=capability).json()
    with pytest.raises(CapabilityError) as refused:
        exchange_token(gw.url, subject, tools=["list_invoices", "delete_invoice"])
    assert refused.value.data["error"] == "invalid_scope" and "delete_invoice" in refused.value.reason
