"""Streams, sessions and browsers through real Envoy: long SSE tool calls, idle streams, CORS preflight,
GET/DELETE denials with HTTP statuses. The demo upstream answers MCP POSTs as text/event-stream here
(``--sse``) and offers ``slow_report`` (``--slow-tool``)."""

from __future__ import annotations

import json
from collections.abc import Iterator

import httpx
import httpx2
import pytest
from mcp import ClientSession
from mcp.client.streamable_http import streamable_http_client

from tests.integration.conftest import Gateway, start_gateway

ALLOWED_ORIGIN = "http://app.example"
IDLE_TIMEOUT_MS = 3000

ALLOW_ALL = """
package tessera
import rego.v1
decision := {"allow": true, "reason": "streams tenant"}
"""


@pytest.fixture(scope="module")
def streams(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Gateway]:
    workdir = tmp_path_factory.mktemp("streams")
    (workdir / "allow.rego").write_text(ALLOW_ALL)
    tenants = workdir / "tenants.yaml"
    tenants.write_text(
        f'tenants:\n  streams:\n    intent:\n      mode: "off"\n    policy: {workdir / "allow.rego"}\n'
    )
    stack, gw = start_gateway(
        workdir,
        env={"TESSERA_TENANTS_FILE": str(tenants)},
        upstream_args=("--sse", "--slow-tool", "--allow-origin", ALLOWED_ORIGIN),
        cors_origins=[ALLOWED_ORIGIN],
        mcp_idle_timeout_ms=IDLE_TIMEOUT_MS,
    )
    try:
        yield gw
    finally:
        stack.stop()


def _token(gw: Gateway, **caveats) -> str:
    return gw.token("streams", **caveats)


async def test_an_sse_framed_tools_list_is_filtered(streams: Gateway):
    token = _token(streams, tools=["read_invoice", "slow_report"])
    response = streams.mcp({"jsonrpc": "2.0", "id": 5, "method": "tools/list"}, token)
    assert response.headers["content-type"].startswith("text/event-stream"), response.headers
    data = [line[5:].strip() for line in response.text.splitlines() if line.startswith("data:")]
    assert len(data) == 1
    assert {t["name"] for t in json.loads(data[0])["result"]["tools"]} == {"read_invoice", "slow_report"}
    async with (
        httpx2.AsyncClient(headers={"Authorization": f"Bearer {token}"}, timeout=30) as http,
        streamable_http_client(f"{streams.url}/v1/mcp", http_client=http) as (read, write),
        ClientSession(read, write) as session,
    ):
        init = await session.initialize()
        # listChanged is the server's to announce; the gateway passes the capability unchanged.
        assert init.capabilities.tools is not None
        assert {t.name for t in (await session.list_tools()).tools} == {"read_invoice", "slow_report"}


async def _slow_call(gw: Gateway, seconds: float, progress_every: float) -> tuple[object, list[float]]:
    progress: list[float] = []

    async def on_progress(value: float, total: float | None, message: str | None) -> None:
        progress.append(value)

    async with (
        httpx2.AsyncClient(headers={"Authorization": f"Bearer {_token(gw)}"}, timeout=120) as http,
        streamable_http_client(f"{gw.url}/v1/mcp", http_client=http) as (read, write),
        ClientSession(read, write) as session,
    ):
        await session.initialize()
        await session.list_tools()  # the client validates results against the listed schema
        result = await session.call_tool(
            "slow_report",
            {"seconds": seconds, "progress_every": progress_every},
            progress_callback=on_progress,
        )
        return result, progress


async def test_a_tool_call_longer_than_the_old_30s_route_timeout_completes_once(streams: Gateway):
    streams.clear_upstream()
    result, progress = await _slow_call(streams, 31, 2)
    assert not result.is_error and result.structured_content == {"seconds": 31.0, "status": "done"}
    assert progress == sorted(progress) and progress[-1] == 31 and len(progress) == len(set(progress))
    calls = [r for r in streams.upstream_requests("/mcp") if r["method"] == "POST"]
    # initialize, notifications/initialized, tools/list and the one tools/call: no retry, no re-send
    assert len(calls) == 4


def test_a_stream_silent_for_longer_than_the_idle_timeout_is_ended(streams: Gateway):
    body = {
        "jsonrpc": "2.0",
        "id": 9,
        "method": "tools/call",
        "params": {"name": "slow_report", "arguments": {"seconds": IDLE_TIMEOUT_MS / 1000 + 3}},
    }
    ended = False
    try:
        response = streams.mcp(body, _token(streams))
        ended = response.status_code == 504 or '"done"' not in response.text
    except httpx.HTTPError:
        ended = True
    assert ended


def _preflight(gw: Gateway, origin: str) -> httpx.Response:
    return httpx.options(
        f"{gw.url}/v1/mcp",
        headers={
            "origin": origin,
            "access-control-request-method": "POST",
            "access-control-request-headers": "authorization, content-type, mcp-protocol-version",
        },
        timeout=10,
    )


def _checks(gw: Gateway) -> int:
    stats = gw.stack.envoy.stats("http.tessera_ingress.ext_authz.tessera.")
    return sum(int(v) for k, v in stats.items() if k.endswith((".ok", ".denied", ".error")))


def test_a_preflight_from_an_allowed_origin_passes_without_a_token_or_a_check(streams: Gateway):
    before = _checks(streams)
    response = _preflight(streams, ALLOWED_ORIGIN)
    assert response.status_code == 200
    assert response.headers["access-control-allow-origin"] == ALLOWED_ORIGIN
    assert "POST" in response.headers["access-control-allow-methods"]
    allowed = response.headers["access-control-allow-headers"]
    assert "mcp-protocol-version" in allowed and "authorization" in allowed
    assert _checks(streams) == before
    # The real request then exposes the MCP headers to the page.
    listed = streams.mcp(
        {"jsonrpc": "2.0", "id": 1, "method": "tools/list"},
        _token(streams),
        headers={"origin": ALLOWED_ORIGIN},
    )
    assert listed.headers["access-control-allow-origin"] == ALLOWED_ORIGIN
    exposed = listed.headers["access-control-expose-headers"]
    assert "mcp-session-id" in exposed and "mcp-protocol-version" in exposed


def test_a_preflight_from_another_origin_does_not_pass(streams: Gateway):
    streams.clear_upstream()
    response = _preflight(streams, "http://evil.example")
    assert "access-control-allow-origin" not in response.headers
    assert streams.upstream_requests("/mcp") == []


@pytest.mark.parametrize("method", ["GET", "DELETE"])
def test_a_denied_get_or_delete_is_an_http_401_not_a_json_rpc_200(streams: Gateway, method: str):
    streams.clear_upstream()
    response = httpx.request(
        method, f"{streams.url}/v1/mcp", headers={"accept": "text/event-stream"}, timeout=10
    )
    assert response.status_code == 401
    assert response.headers["www-authenticate"].startswith("Bearer ")
    assert response.json()["error"]["code"] == -32010
    assert streams.upstream_requests("/mcp") == []
    # With a valid token the request reaches the MCP server (which has no GET stream: 405).
    allowed = httpx.request(
        method,
        f"{streams.url}/v1/mcp",
        headers={"accept": "text/event-stream", "authorization": f"Bearer {_token(streams)}"},
        timeout=10,
    )
    assert allowed.status_code != 401 and len(streams.upstream_requests("/mcp")) == 1
