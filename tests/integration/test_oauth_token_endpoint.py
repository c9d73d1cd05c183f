"""The token endpoint (`POST /v1/oauth/token`) as OAuth clients read it, through real Envoy: RFC 6749 §5.2
error bodies, `Cache-Control: no-store` / `Pragma: no-cache` on every answer, and the per-client-address
rate limit (Envoy's local_ratelimit, 429 + Retry-After) that leaves other routes and other clients alone.

The subject tokens come from a real authorization server process (oidc-provider-mock,
tests/oauth_server.py). Each test speaks from its own loopback source address (127.0.0.x), so the
rate-limit buckets, which are per address, never mix between tests.
"""

from __future__ import annotations

from collections.abc import Iterator

import httpx
import pytest

from authz.client import CapabilityError, aexchange_token, exchange_token
from authz.local.envoy_oauth import TokenRateLimit
from authz.local.stack import StackPorts
from authz.oauth import ACCESS_TOKEN_TYPE, TOKEN_EXCHANGE_GRANT
from tests.integration.conftest import Gateway, start_gateway
from tests.oauth_server import OAuthServer

pytestmark = pytest.mark.filterwarnings("ignore::DeprecationWarning")  # authlib's own internals

AGENT = "agent-7"
#: An orchestrator acting for AGENT (RFC 8693 actor_token), allowed fewer tools.
ACTOR = "orchestrator"
#: Tokens one subject token may be exchanged for (the issuer's allowance).
MAX_EXCHANGES = 3
#: Small, so a burst is quick to send: 4 requests, then one per 30 s (Retry-After: 30).
RATE = TokenRateLimit(burst=4, window_s=120)


@pytest.fixture(scope="module")
def authorization_server() -> Iterator[OAuthServer]:
    server = OAuthServer(
        users=[(AGENT, {"tools": ["read_invoice", "list_invoices"]}), (ACTOR, {"tools": ["list_invoices"]})]
    )
    yield server
    server.close()


@pytest.fixture(scope="module")
def gw(tmp_path_factory: pytest.TempPathFactory, authorization_server: OAuthServer) -> Iterator[Gateway]:
    workdir = tmp_path_factory.mktemp("oauth-token-endpoint")
    ports = StackPorts.free()
    issuers = authorization_server.write_issuers(
        workdir / "issuers.yaml",
        listen_port=ports.listen,
        # servers: /v1/mcp/billing, beside /v1/mcp
        exchange=[
            "tools: [read_invoice, list_invoices]",
            "servers: [billing]",
            f"max_exchanges_per_jti: {MAX_EXCHANGES}",
        ],
    )
    stack, gateway = start_gateway(
        workdir,
        ports=ports,
        env={"TESSERA_OAUTH_ISSUERS_FILE": str(issuers)},
        oauth_token_rate_limit=RATE,
    )
    try:
        yield gateway
    finally:
        stack.stop()


def _client(source: str) -> httpx.Client:
    """An HTTP client whose connections come from ``source`` (a loopback address of its own)."""
    return httpx.Client(transport=httpx.HTTPTransport(local_address=source), timeout=10)


def _form(subject: str, **extra: str) -> dict[str, str]:
    return {
        "grant_type": TOKEN_EXCHANGE_GRANT,
        "subject_token": subject,
        "subject_token_type": ACCESS_TOKEN_TYPE,
        **extra,
    }


def _assert_no_store(response: httpx.Response) -> None:
    assert response.headers["cache-control"] == "no-store"
    assert response.headers["pragma"] == "no-cache"


def test_a_token_response_is_never_cached(gw, authorization_server):
    subject = authorization_server.issue(AGENT, resource=f"{gw.url}/v1/mcp")
    with _client("127.0.0.11") as http:
        response = http.post(f"{gw.url}/v1/oauth/token", data=_form(subject))
    assert response.status_code == 200, response.text
    _assert_no_store(response)
    assert response.json()["token_type"] == "Bearer"


CASES = [
    ("expired", "invalid_grant"),
    ("not-a-jwt", "invalid_grant"),
    ("no-subject-type", "invalid_request"),
    ("twice", "invalid_request"),
    ("json-body", "invalid_request"),
    ("client-credentials", "unsupported_grant_type"),
    ("widened", "invalid_scope"),
    ("unserved-resource", "invalid_target"),
    ("saml-actor", "invalid_request"),
]


@pytest.mark.parametrize(("case", "error"), CASES)
def test_errors_are_rfc_6749_bodies(gw, authorization_server, case, error):
    resource = f"{gw.url}/v1/mcp"
    url = f"{gw.url}/v1/oauth/token"
    # One source address per case: each has a bucket of its own.
    with _client(f"127.0.0.{30 + CASES.index((case, error))}") as http:
        if case == "expired":
            response = http.post(
                url, data=_form(authorization_server.issue(AGENT, resource=resource, lifetime_s=-60))
            )
        elif case == "not-a-jwt":
            response = http.post(url, data=_form("not-a-token"))
        elif case == "no-subject-type":
            form = _form(authorization_server.issue(AGENT, resource=resource))
            del form["subject_token_type"]
            response = http.post(url, data=form)
        elif case == "twice":
            response = http.post(
                url,
                content=f"grant_type={TOKEN_EXCHANGE_GRANT}&grant_type={TOKEN_EXCHANGE_GRANT}",
                headers={"content-type": "application/x-www-form-urlencoded"},
            )
        elif case == "json-body":
            response = http.post(url, json=_form("x"))
        elif case == "client-credentials":
            response = http.post(url, data={"grant_type": "client_credentials"})
        elif case == "unserved-resource":
            subject = authorization_server.issue(AGENT, resource=resource)
            response = http.post(url, data=_form(subject, resource=f"{resource}/payroll"))
        elif case == "saml-actor":
            subject = authorization_server.issue(AGENT, resource=resource)
            form = _form(
                subject, actor_token="PHNhbWw+", actor_token_type="urn:ietf:params:oauth:token-type:saml2"
            )
            response = http.post(url, data=form)
        else:
            subject = authorization_server.issue(AGENT, resource=resource)
            response = http.post(url, data=_form(subject, scope="read_invoice delete_invoice"))
    assert response.status_code == 400, response.text
    assert response.headers["content-type"] == "application/json"
    _assert_no_store(response)
    body = response.json()
    # Exactly the two members of RFC 6749 §5.2 (error_uri is optional and not sent), nothing of gRPC.
    assert set(body) == {"error", "error_description"}, body
    assert body["error"] == error
    assert isinstance(body["error_description"], str) and body["error_description"]
    assert "grpc-status" not in response.headers
    if case == "widened":
        assert "delete_invoice" in body["error_description"]


def test_a_description_with_quotes_and_backslashes_stays_valid_json(gw, authorization_server):
    # The refused scope is echoed in the description, JSON-escaped by the transcoder; the rewritten
    # body must still parse and carry it unchanged.
    subject = authorization_server.issue(AGENT, resource=f"{gw.url}/v1/mcp")
    with _client("127.0.0.13") as http:
        response = http.post(f"{gw.url}/v1/oauth/token", data=_form(subject, scope='read_invoice a"b\\c'))
    assert response.status_code == 400
    body = response.json()
    assert body["error"] == "invalid_scope" and 'a"b\\c' in body["error_description"]


def test_a_burst_beyond_the_bucket_gets_429_and_other_routes_and_clients_do_not(gw, authorization_server):
    url = f"{gw.url}/v1/oauth/token"
    with _client("127.0.0.21") as http:
        answers = [http.post(url, data={"grant_type": "client_credentials"}) for _ in range(RATE.burst)]
        # Within the burst: the admin service answered each (a refusal, but not a rate limit).
        assert [a.status_code for a in answers] == [400] * RATE.burst
        limited = http.post(url, data={"grant_type": "client_credentials"})
        assert limited.status_code == 429, limited.text
        assert limited.headers["retry-after"] == str(RATE.retry_after_s) == "30"
        assert limited.headers["content-type"] == "application/json"
        _assert_no_store(limited)
        body = limited.json()
        assert set(body) == {"error", "error_description"} and body["error"] == "temporarily_unavailable"
        # The same address on another route: the MCP endpoint is not limited.
        token = gw.token(tools=["read_invoice"])
        call = http.post(
            f"{gw.url}/v1/mcp",
            json={
                "jsonrpc": "2.0",
                "id": 1,
                "method": "tools/call",
                "params": {"name": "read_invoice", "arguments": {"invoice_id": "INV-1001"}},
            },
            headers={"authorization": f"Bearer {token}", "accept": "application/json, text/event-stream"},
        )
        assert call.status_code == 200 and "result" in call.json(), call.text
    # Another client address still gets its token.
    subject = authorization_server.issue(AGENT, resource=f"{gw.url}/v1/mcp")
    with _client("127.0.0.22") as http:
        response = http.post(url, data=_form(subject))
    assert response.status_code == 200, response.text


def _events(gw: Gateway) -> list[dict]:
    """Every event of tenant demo, page by page over REST."""
    events: list[dict] = []
    token = ""
    while True:
        page = httpx.get(
            f"{gw.url}/v1/admin/tenants/demo/audit/events",
            headers={"authorization": f"Bearer {gw.stack.admin_key}"},
            params={"page_size": 100, "page_token": token},
            timeout=10,
        )
        assert page.status_code == 200, page.text
        events += page.json().get("events", [])
        token = page.json().get("next_page_token") or ""
        if not token:
            return events


def _exchange_events(gw: Gateway) -> list[dict]:
    events = _events(gw)
    return [e["event"] for e in events if e["event"].get("api", {}).get("operation") == "token.exchange"]


def test_a_resource_binds_the_exchange_to_a_served_server_and_is_audited(gw, authorization_server):
    subject = authorization_server.issue(AGENT, resource=f"{gw.url}/v1/mcp")
    with _client("127.0.0.14") as http:
        response = http.post(
            f"{gw.url}/v1/oauth/token", data=_form(subject, resource=f"{gw.url}/v1/mcp/billing")
        )
    assert response.status_code == 200, response.text
    details = _exchange_events(gw)[-1]["tessera"]["details"]
    assert details["servers"] == ["billing"] and details["act"] is None
    # Bound to billing: a call at the main endpoint (/v1/mcp, server `default`) is refused.
    capability = response.json()["access_token"]
    refused = gw.call("read_invoice", {"invoice_id": "INV-1001"}, token=capability).json()
    assert refused["error"]["code"] == -32010 and "server" in refused["error"]["data"]["reason"]
    # Bound to the main endpoint (RFC 8707 resource = /v1/mcp): the call passes.
    subject = authorization_server.issue(AGENT, resource=f"{gw.url}/v1/mcp")
    with _client("127.0.0.14") as http:
        main = http.post(f"{gw.url}/v1/oauth/token", data=_form(subject, resource=f"{gw.url}/v1/mcp"))
    assert main.status_code == 200, main.text
    allowed = gw.call("read_invoice", {"invoice_id": "INV-1001"}, token=main.json()["access_token"]).json()
    assert "result" in allowed, allowed


def test_repeated_resources_bind_the_union_and_one_unserved_refuses_the_request(gw, authorization_server):
    """RFC 8693 §2.1: ``resource`` and ``audience`` may repeat; the token is bound to every server named,
    and one the tenant does not serve refuses the whole request (invalid_target)."""
    resource = f"{gw.url}/v1/mcp"
    with _client("127.0.0.19") as http:
        subject = authorization_server.issue(AGENT, resource=resource)
        both = http.post(
            f"{gw.url}/v1/oauth/token",
            data=_form(subject) | {"resource": [resource, f"{resource}/billing"], "audience": ["billing"]},
        )
        assert both.status_code == 200, both.text
        assert _exchange_events(gw)[-1]["tessera"]["details"]["servers"] == ["default", "billing"]
        # Bound to default and billing: the main endpoint still serves it.
        allowed = gw.call("read_invoice", {"invoice_id": "INV-1001"}, token=both.json()["access_token"])
        assert "result" in allowed.json(), allowed.text
        subject = authorization_server.issue(AGENT, resource=resource)
        one_unserved = http.post(
            f"{gw.url}/v1/oauth/token",
            data=_form(subject) | {"resource": [f"{resource}/billing", f"{resource}/payroll"]},
        )
    assert one_unserved.status_code == 400, one_unserved.text
    assert one_unserved.json()["error"] == "invalid_target"
    assert "payroll" in one_unserved.json()["error_description"]


async def test_the_sdk_sends_repeatable_resource_and_audience(gw, authorization_server):
    """``authz.client.exchange_token`` / ``aexchange_token`` send RFC 8693 ``resource`` and ``audience``
    (each one value or several): the token is bound to every server named, and an unserved one is the
    SDK's CapabilityError with ``invalid_target``. (The SDK speaks from 127.0.0.1, which no other test
    here uses for the token route, so its rate-limit bucket is its own: three requests.)"""
    resource = f"{gw.url}/v1/mcp"
    both = exchange_token(
        gw.url,
        authorization_server.issue(AGENT, resource=resource),
        resource=[resource, f"{resource}/billing"],
        audience="billing",
    )
    assert _exchange_events(gw)[-1]["tessera"]["details"]["servers"] == ["default", "billing"]
    assert "result" in gw.call("read_invoice", {"invoice_id": "INV-1001"}, token=both).json()
    billing = await aexchange_token(
        gw.url + "/v1/mcp", authorization_server.issue(AGENT, resource=resource), audience=["billing"]
    )
    assert _exchange_events(gw)[-1]["tessera"]["details"]["servers"] == ["billing"]
    refused = gw.call("read_invoice", {"invoice_id": "INV-1001"}, token=billing).json()
    assert refused["error"]["code"] == -32010 and "server" in refused["error"]["data"]["reason"]
    with pytest.raises(CapabilityError) as unserved:
        exchange_token(
            gw.url,
            authorization_server.issue(AGENT, resource=resource),
            resource=[f"{resource}/billing", f"{resource}/payroll"],
        )
    assert unserved.value.data["error"] == "invalid_target" and "payroll" in unserved.value.reason


def test_an_actor_token_delegates_no_wider_than_both_and_is_recorded(gw, authorization_server):
    resource = f"{gw.url}/v1/mcp"
    subject = authorization_server.issue(AGENT, resource=resource)
    actor = authorization_server.issue(ACTOR, resource=resource)
    with _client("127.0.0.15") as http:
        response = http.post(
            f"{gw.url}/v1/oauth/token",
            data=_form(subject, actor_token=actor, actor_token_type=ACCESS_TOKEN_TYPE),
        )
    assert response.status_code == 200, response.text
    body = response.json()
    # The agent may read and list, its orchestrator only list: the token lists.
    assert body["scope"] == "list_invoices"
    capability = body["access_token"]
    assert "result" in gw.call("list_invoices", {}, token=capability).json()
    denied = gw.call("read_invoice", {"invoice_id": "INV-1001"}, token=capability).json()
    assert denied["error"]["code"] == -32010
    # The tenant's chain says who acted for whom.
    details = _exchange_events(gw)[-1]["tessera"]["details"]
    assert details["agent"] == AGENT and details["servers"] is None
    assert details["act"]["agent"] == ACTOR and details["act"]["issuer"] == authorization_server.issuer


def test_a_subject_token_is_exchanged_at_most_the_allowed_times(gw, authorization_server):
    subject = authorization_server.issue(AGENT, resource=f"{gw.url}/v1/mcp")
    with _client("127.0.0.16") as http:
        answers = [
            http.post(f"{gw.url}/v1/oauth/token", data=_form(subject)) for _ in range(MAX_EXCHANGES + 1)
        ]
    assert [a.status_code for a in answers] == [200] * MAX_EXCHANGES + [400], answers[-1].text
    assert answers[-1].json()["error"] == "invalid_grant"
    assert f"{MAX_EXCHANGES} times" in answers[-1].json()["error_description"]
    # The refusal is in the tenant's chain; another token of the same agent is counted apart.
    events = _events(gw)
    refused = [
        e["event"]["tessera"] for e in events if e["event"]["api"]["operation"] == "token.exchange.refused"
    ]
    assert refused and "times" in refused[-1]["details"]["reason"]
    other = authorization_server.issue(AGENT, resource=f"{gw.url}/v1/mcp")
    with _client("127.0.0.17") as http:  # 127.0.0.16 spent its rate-limit burst
        assert http.post(f"{gw.url}/v1/oauth/token", data=_form(other)).status_code == 200


def test_envoys_own_503_when_the_admin_service_is_down_is_an_rfc_body_too(tmp_path):
    # No admin service behind the route: Envoy answers 503 itself (upstream connect failure, a plain
    # text local reply); the client still gets the RFC 6749 shape and the no-store headers.
    stack, gateway = start_gateway(tmp_path, start_admin=False, upstream_receipts=False)
    try:
        with _client("127.0.0.18") as http:
            response = http.post(f"{gateway.url}/v1/oauth/token", data=_form("eyJ.x.y"))
    finally:
        stack.stop()
    assert response.status_code == 503, response.text
    assert response.headers["content-type"] == "application/json"
    _assert_no_store(response)
    body = response.json()
    assert set(body) == {"error", "error_description"} and body["error"] == "temporarily_unavailable"
