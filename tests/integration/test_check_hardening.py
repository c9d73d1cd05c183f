"""Issue 13 through the real stack (Envoy, check service, demo upstream): hostile bodies are answered
with protocol errors instead of tracebacks, tool calls pass only with POST, and tokenless floods do not
grow the ``_gateway`` audit chain one event per request."""

from __future__ import annotations

import asyncio
import json

import httpx

from authz.storage import open_store
from tests.integration.conftest import Gateway, rpc_error

CALL = {"jsonrpc": "2.0", "id": 7, "method": "tools/call", "params": {"name": "read_invoice"}}


def test_deep_nesting_is_a_protocol_error_with_the_id(gateway: Gateway):
    token = gateway.token()
    # 100 levels parse (the id is read and echoed); 5,000 levels exceed the parser's own recursion
    # limit, which used to surface as a 503 with a traceback and is now the same -32600.
    for depth, echoed in ((100, 7), (5_000, None)):
        nested = "[" * depth + "]" * depth
        raw = (
            '{"jsonrpc":"2.0","id":7,"method":"tools/call","params":{"name":"read_invoice",'
            f'"arguments":{{"invoice_id":"INV-1001","x":{nested}}}}}}}'
        ).encode()
        response = gateway.mcp(None, token, raw=raw)
        error = rpc_error(response)
        assert error["code"] == -32600 and "nested deeper than 64" in error["message"]
        assert response.json()["id"] == echoed


def test_oversized_batches_are_refused(gateway: Gateway):
    batch = [{"jsonrpc": "2.0", "id": i, "method": "ping"} for i in range(101)]
    response = gateway.mcp(batch, gateway.token())
    error = rpc_error(response)
    assert error["code"] == -32600 and "at most 100 messages" in error["message"]


def test_a_tokenless_large_body_is_denied_on_the_token_without_being_read(gateway: Gateway):
    keys = ",".join(f'"k{i}":0' for i in range(50_000))  # ~600 KB, one object, garbage at the end
    raw = '{"jsonrpc":"2.0","id":9,"method":"tools/call","params":{"name":"x","arguments":{' + keys + "}}}"
    response = gateway.mcp(None, None, raw=raw.encode() + b"trailing garbage")
    body = response.json()
    assert response.status_code == 200 and body["id"] is None  # the id was not read: nor was the body
    assert body["error"]["code"] == -32010


def test_tool_calls_with_get_or_delete_are_denied_and_never_forwarded(gateway: Gateway):
    gateway.clear_upstream()
    token = gateway.token()
    call = dict(CALL, params={"name": "delete_invoice", "arguments": {"invoice_id": "INV-1001"}})
    for method in ("GET", "DELETE"):
        response = httpx.request(
            method,
            f"{gateway.url}/v1/mcp",
            content=json.dumps(call).encode(),
            headers={"authorization": f"Bearer {token}", "content-type": "application/json"},
            timeout=10,
        )
        error = rpc_error(response)
        assert error["code"] == -32600 and f"not {method}" in error["message"]
    assert gateway.upstream_requests("/mcp") == []


def test_a_tokenless_flood_adds_one_event_per_source_not_one_per_request(gateway: Gateway):
    async def count() -> int:
        store = open_store(f"sqlite:///{gateway.stack.workdir / 'tessera.db'}")
        try:
            head = await store.audit_head("_gateway")
            return head[0] if head else 0
        finally:
            await store.close()

    before = asyncio.run(count())
    with httpx.Client(timeout=10) as client:
        for _ in range(50):
            response = client.post(
                f"{gateway.url}/v1/mcp",
                json={"jsonrpc": "2.0", "id": 1, "method": "ping"},
                headers={"x-flood": "1"},
            )
            assert response.json()["error"]["code"] == -32010
    after = asyncio.run(count())
    assert after - before <= 2  # the first denial of the window (and at most a closing aggregate)


def test_large_legitimate_bodies_still_pass_the_edge_buffer_limits(gateway: Gateway):
    """The listener's 32 KiB per-connection buffer limit does not cap what ext_authz buffers for the
    check (up to max_request_bytes, 1 MiB): a 600 KB authorized call is checked and forwarded."""
    gateway.clear_upstream()
    response = gateway.call(
        "read_invoice", {"invoice_id": "INV-1001", "note": "x" * 600_000}, token=gateway.token()
    )
    assert response.status_code == 200, response.text[:300]
    assert "result" in response.json(), response.text[:300]
    assert len(gateway.upstream_requests("/mcp")) == 1
