"""Helpers for the official ``mcp`` SDK: headers, per-call ``_meta`` and ``MCPError`` → typed errors."""

from __future__ import annotations

import base64
import json
from urllib.parse import unquote

import pytest

from authz.client import (
    BudgetError,
    CapabilityError,
    GatewayError,
    PolicyError,
    ProtocolError,
    error_from_mcp,
    mcp_errors,
    mcp_headers,
    mcp_http_client,
    tessera_meta,
)

mcp_exceptions = pytest.importorskip("mcp.shared.exceptions")
httpx2 = pytest.importorskip("httpx2")
MCPError = mcp_exceptions.MCPError


def test_headers_carry_token_prompt_approval_and_provenance():
    entries = [{"id": "m1", "tag": "00"}]
    headers = mcp_headers("tok", intent_prompt="zahle 5 € an Müller", approval_id="ap-1", provenance=entries)
    assert headers["Authorization"] == "Bearer tok"
    assert (
        unquote(headers["X-Intent-Prompt"]) == "zahle 5 € an Müller" and headers["X-Intent-Prompt"].isascii()
    )
    assert headers["X-Approval-Id"] == "ap-1"
    raw = headers["X-Memory-Provenance"]
    assert json.loads(base64.urlsafe_b64decode(raw + "=" * (-len(raw) % 4))) == entries
    assert mcp_headers(None) == {}


def test_meta_uses_the_gateways_keys():
    assert tessera_meta(intent_prompt="p", approval_id="a", provenance=[{"id": "m"}], other=1) == {
        "tessera/intent-prompt": "p",
        "tessera/approval-id": "a",
        "tessera/provenance": [{"id": "m"}],
        "other": 1,
    }
    assert tessera_meta() == {}


async def test_http_client_has_the_headers():
    async with mcp_http_client("tok", intent_prompt="hi", headers={"x-trace": "1"}, timeout=3) as client:
        assert isinstance(client, httpx2.AsyncClient)
        assert client.headers["authorization"] == "Bearer tok"
        assert client.headers["x-intent-prompt"] == "hi" and client.headers["x-trace"] == "1"
        assert client.timeout.read == 3


def test_mcp_errors_become_typed():
    data = {"check": "policy", "reason": "no deletes", "decision_id": "d1"}
    error = error_from_mcp(MCPError(-32012, "denied by policy", data))
    assert type(error) is PolicyError and (error.reason, error.decision_id) == ("no deletes", "d1")
    assert type(error_from_mcp(MCPError(-32013, "budget", {"scope": "s", "limit": 1}))) is BudgetError
    other = error_from_mcp(MCPError(-32601, "Method not found"))
    assert type(other) is ProtocolError and other.code == -32601


def test_context_manager_translates_and_chains():
    original = MCPError(-32010, "capability check failed", {"check": "capability"})
    with pytest.raises(CapabilityError) as info, mcp_errors():
        raise original
    assert info.value.__cause__ is original


def test_context_manager_unwraps_a_single_error_group():
    original = MCPError(-32012, "denied by policy")
    with pytest.raises(PolicyError), mcp_errors():
        raise BaseExceptionGroup("task group", [ExceptionGroup("inner", [original])])
    several = ExceptionGroup("two", [MCPError(-32012, "a"), MCPError(-32013, "b")])
    with pytest.raises(ExceptionGroup), mcp_errors():
        raise several


def test_transport_errors_become_gateway_errors():
    request = httpx2.Request("POST", "http://gw/v1/mcp")
    with pytest.raises(GatewayError) as info, mcp_errors():
        raise httpx2.ConnectError("refused", request=request)
    assert info.value.http_status is None
    response = httpx2.Response(503, request=request)
    with pytest.raises(GatewayError) as info, mcp_errors():
        raise httpx2.HTTPStatusError("503", request=request, response=response)
    assert info.value.http_status == 503


def test_other_exceptions_pass_through():
    with pytest.raises(KeyError), mcp_errors():
        raise KeyError("x")
    assert isinstance(error_from_mcp(RuntimeError("boom")), ProtocolError)
