"""The SDK's token exchange (authz.client.exchange_token): the request it sends and how it reads each
answer, against a real HTTP server on 127.0.0.1 answering as the gateway would."""

from __future__ import annotations

import json
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import parse_qs

import pytest

from authz.client import CapabilityError, GatewayError, UnavailableError, aexchange_token, exchange_token


class Answers:
    def __init__(self) -> None:
        self.status = 200
        self.body: Any = {}
        self.headers: dict[str, str] = {}
        self.requests: list[tuple[str, str, dict[str, list[str]]]] = []


@pytest.fixture
def gateway() -> Iterator[tuple[str, Answers]]:
    answers = Answers()

    class Handler(BaseHTTPRequestHandler):
        def do_POST(self) -> None:
            length = int(self.headers["content-length"])
            form = parse_qs(self.rfile.read(length).decode())
            answers.requests.append((self.path, self.headers["content-type"], form))
            body = json.dumps(answers.body).encode() if not isinstance(answers.body, bytes) else answers.body
            self.send_response(answers.status)
            self.send_header("content-type", "application/json")
            self.send_header("content-length", str(len(body)))
            for name, value in answers.headers.items():
                self.send_header(name, value)
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, *args: Any) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.server_address[1]}", answers
    server.shutdown()
    server.server_close()


def _refusal(error: str) -> dict:
    """The gateway's RFC 6749 §5.2 error body."""
    return {"error": error, "error_description": f"refused: {error}"}


def test_the_request_is_an_rfc_8693_form_and_the_token_comes_back(gateway):
    url, answers = gateway
    answers.body = {"access_token": "macaroon", "token_type": "Bearer"}
    assert exchange_token(url + "/v1/mcp", "eyJ.jwt.sig", tools=["a", "b"]) == "macaroon"
    path, content_type, form = answers.requests[-1]
    assert path == "/v1/oauth/token" and content_type == "application/x-www-form-urlencoded"
    assert form == {
        "grant_type": ["urn:ietf:params:oauth:grant-type:token-exchange"],
        "subject_token": ["eyJ.jwt.sig"],
        "subject_token_type": ["urn:ietf:params:oauth:token-type:access_token"],
        "scope": ["a b"],
    }


@pytest.mark.parametrize("suffix", ["", "/", "/v1/mcp", "/v1/mcp/", "/v1/mcp/billing"])
def test_any_of_the_gateways_mcp_endpoints_posts_to_its_token_endpoint(gateway, suffix):
    url, answers = gateway
    answers.body = {"access_token": "macaroon", "token_type": "Bearer"}
    assert exchange_token(url + suffix, "eyJ.jwt.sig") == "macaroon"
    assert answers.requests[-1][0] == "/v1/oauth/token"


async def test_resource_and_audience_are_sent_once_per_value(gateway):
    url, answers = gateway
    answers.body = {"access_token": "macaroon", "token_type": "Bearer"}
    mcp = "https://gw.example.com/v1/mcp"
    exchange_token(url, "eyJ.jwt.sig", resource=[mcp, mcp + "/billing"], audience="billing")
    form = answers.requests[-1][2]
    assert form["resource"] == [mcp, mcp + "/billing"] and form["audience"] == ["billing"]
    await aexchange_token(url, "eyJ.jwt.sig", audience=("billing", "payroll"))
    form = answers.requests[-1][2]
    assert form["audience"] == ["billing", "payroll"] and "resource" not in form
    exchange_token(url, "eyJ.jwt.sig")
    assert "resource" not in answers.requests[-1][2] and "audience" not in answers.requests[-1][2]
    for bad in ([], [""], " ", [mcp, 3]):
        with pytest.raises(ValueError, match="resource"):
            exchange_token(url, "eyJ.jwt.sig", resource=bad)
    assert len(answers.requests) == 3  # nothing sent for a bad value


async def test_answers_map_to_the_sdk_errors(gateway):
    url, answers = gateway
    answers.status, answers.body = 400, _refusal("invalid_scope")
    with pytest.raises(CapabilityError) as refused:
        exchange_token(url, "eyJ.jwt.sig")
    assert refused.value.data["error"] == "invalid_scope" and refused.value.reason == "refused: invalid_scope"
    answers.status, answers.body = 503, _refusal("temporarily_unavailable")
    with pytest.raises(UnavailableError):
        await aexchange_token(url, "eyJ.jwt.sig")
    # Envoy's rate limit: 429 + Retry-After, which the error carries on.
    answers.status, answers.body = 429, _refusal("temporarily_unavailable")
    answers.headers = {"retry-after": "12"}
    with pytest.raises(UnavailableError) as limited:
        exchange_token(url, "eyJ.jwt.sig")
    assert limited.value.data["retry_after_ms"] == 12_000
    answers.headers = {}
    answers.status, answers.body = 502, b"upstream connect error"
    with pytest.raises(GatewayError) as broken:
        exchange_token(url, "eyJ.jwt.sig")
    assert broken.value.http_status == 502
    with pytest.raises(ValueError):
        exchange_token(url, "eyJ.jwt.sig", tools="a")


@pytest.mark.parametrize("tools", [["read invoice"], ["a", ""], ["a\tb"], [None], ["ok", 3]])
def test_a_tool_name_scope_cannot_carry_is_refused_before_any_request(gateway, tools):
    url, answers = gateway
    with pytest.raises(ValueError, match="tool names"):
        exchange_token(url, "eyJ.jwt.sig", tools=tools)
    assert answers.requests == []
