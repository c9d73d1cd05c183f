"""Gateway and AsyncGateway against a scripted HTTP transport: what they send and how they judge replies.

Every test runs with both clients (the ``gw`` fixture), so their behaviour cannot drift apart. The real
stack is exercised in tests/e2e/test_sdk*.py.
"""

from __future__ import annotations

import base64
import json
import time
from collections.abc import Callable
from typing import Any
from urllib.parse import unquote_to_bytes

import httpx
import pytest

from authz.client import (
    ApprovalRequired,
    AsyncGateway,
    BudgetError,
    Gateway,
    GatewayError,
    PolicyError,
    ProtocolError,
    ToolResult,
    UnavailableError,
    _protocol,
)

URL = "http://gateway.test:8080"
Handler = Callable[[httpx.Request], httpx.Response]


class Script:
    """A fake gateway: replies from a list (or one function), and every request it saw."""

    def __init__(self, *replies: Any):
        self.replies = list(replies)
        self.requests: list[httpx.Request] = []

    def __call__(self, request: httpx.Request) -> httpx.Response:
        self.requests.append(request)
        reply = self.replies.pop(0) if len(self.replies) > 1 else self.replies[0]
        return reply(request) if callable(reply) else reply

    def body(self, index: int = -1) -> dict:
        return json.loads(self.requests[index].content)


def result(payload: dict, decision: str | None = "dec-1") -> Callable[[httpx.Request], httpx.Response]:
    def reply(request: httpx.Request) -> httpx.Response:
        rid = json.loads(request.content)["id"]
        headers = {"x-tessera-decision-id": decision} if decision else {}
        return httpx.Response(200, json={"jsonrpc": "2.0", "id": rid, "result": payload}, headers=headers)

    return reply


def error(code: int, message: str = "denied", **data: Any) -> Callable[[httpx.Request], httpx.Response]:
    def reply(request: httpx.Request) -> httpx.Response:
        rid = json.loads(request.content)["id"]
        body = {"jsonrpc": "2.0", "id": rid, "error": {"code": code, "message": message, "data": data}}
        return httpx.Response(200, json=body, headers={"x-tessera-decision-id": data.get("decision_id", "h")})

    return reply


TEXT = {"content": [{"type": "text", "text": "hello"}], "isError": False}


class Client:
    """Both gateways behind one awaitable surface."""

    def __init__(self, kind: str, script: Script, token: str | None = "tok", **kw: Any):
        transport = httpx.MockTransport(script)
        self.kind = kind
        if kind == "sync":
            self.http: Any = httpx.Client(transport=transport)
            self.gw: Any = Gateway(URL, token, client=self.http, **kw)
        else:
            self.http = httpx.AsyncClient(transport=transport)
            self.gw = AsyncGateway(URL, token, client=self.http, **kw)

    async def call(self, name: str, *args: Any, **kw: Any) -> Any:
        value = getattr(self.gw, name)(*args, **kw)
        return await value if self.kind == "async" else value


@pytest.fixture(params=["sync", "async"])
def kind(request) -> str:
    return request.param


@pytest.fixture
def fast_polls(monkeypatch):
    monkeypatch.setattr(_protocol, "POLL_FIRST", 0.01)
    monkeypatch.setattr(_protocol, "POLL_MAX", 0.02)


async def test_tool_call_sends_json_rpc_with_token(kind):
    script = Script(result(TEXT))
    client = Client(kind, script)
    res = await client.call("tool_call", "read_invoice", {"invoice_id": "INV-1001"})
    request = script.requests[0]
    assert str(request.url) == f"{URL}/v1/mcp" and request.method == "POST"
    assert request.headers["authorization"] == "Bearer tok"
    assert request.headers["content-type"] == "application/json"
    assert (
        "text/event-stream" in request.headers["accept"] and "application/json" in request.headers["accept"]
    )
    assert "x-intent-prompt" not in request.headers and "x-approval-id" not in request.headers
    body = script.body()
    assert body == {
        "jsonrpc": "2.0",
        "id": body["id"],
        "method": "tools/call",
        "params": {"name": "read_invoice", "arguments": {"invoice_id": "INV-1001"}},
    }
    assert isinstance(res, ToolResult)
    assert (res.text, res.is_error, res.decision_id, res.request_id) == ("hello", False, "dec-1", body["id"])


@pytest.mark.parametrize(
    "prompt",
    [
        "show me invoice INV-1001",
        "Überweise 500 € an Müller — sofort!",
        "请显示发票 INV-1001 的详情",
        "اعرض الفاتورة INV-1001",
        "line one\nline two\ttab % 100%25 + plus & amp ?=#",
        "emoji 🧾💸 and nothing else",
    ],
)
async def test_prompt_is_percent_encoded_and_round_trips(kind, prompt):
    script = Script(result(TEXT))
    await Client(kind, script).call("tool_call", "read_invoice", {}, intent_prompt=prompt)
    header = script.requests[0].headers["x-intent-prompt"]
    assert header.isascii() and " " not in header and "\n" not in header
    assert unquote_to_bytes(header).decode("utf-8") == prompt  # what the gateway does (wire.py)


async def test_request_id_approval_id_and_provenance_are_sent(kind):
    script = Script(result(TEXT))
    entries = [
        {"id": "m1", "content_sha256": "ab" * 32, "source": "crm", "written_at": "2025-01-01T00:00:00Z"}
    ]
    res = await Client(kind, script).call(
        "tool_call", "t", None, request_id="req-7", approval_id="ap-9", provenance=entries
    )
    request = script.requests[0]
    assert script.body()["id"] == "req-7" and res.request_id == "req-7"
    assert script.body()["params"]["arguments"] == {}
    assert request.headers["x-approval-id"] == "ap-9"
    raw = request.headers["x-memory-provenance"]
    assert json.loads(base64.urlsafe_b64decode(raw + "=" * (-len(raw) % 4))) == entries


async def test_request_ids_are_fresh_per_call(kind):
    script = Script(result(TEXT))
    client = Client(kind, script)
    await client.call("tool_call", "t")
    await client.call("tool_call", "t")
    assert script.body(0)["id"] != script.body(1)["id"]


async def test_every_content_block_is_kept_whole(kind):
    blocks = [
        {"type": "text", "text": "a", "annotations": {"audience": ["user"], "priority": 0.5}},
        {"type": "image", "data": "iVBORw0KGgo=", "mimeType": "image/png", "_meta": {"k": 1}},
        {"type": "audio", "data": "UklGRg==", "mimeType": "audio/wav"},
        {"type": "resource", "resource": {"uri": "file:///a.txt", "mimeType": "text/plain", "text": "body"}},
        {"type": "resource", "resource": {"uri": "file:///b.bin", "blob": "AAEC"}},
        {"type": "resource_link", "uri": "https://x/y", "name": "y", "description": "d", "size": 3},
        {"type": "text", "text": "b"},
        {"type": "from_the_future", "whatever": [1, {"nested": True}]},
    ]
    payload = {
        "content": blocks,
        "structuredContent": {"total": 2, "items": [1, 2]},
        "isError": False,
        "_meta": {"trace": "t1"},
    }
    res = await Client(kind, Script(result(payload))).call("tool_call", "t")
    assert res.content == blocks
    assert res.structured_content == {"total": 2, "items": [1, 2]}
    assert res.meta == {"trace": "t1"}
    assert res.text == "a\nb"
    assert res.blocks("image") == [blocks[1]]
    assert res.raw == payload


async def test_a_tool_error_is_a_result_not_an_exception(kind):
    payload = {"content": [{"type": "text", "text": "no invoice 'X'"}], "isError": True}
    res = await Client(kind, Script(result(payload))).call("tool_call", "read_invoice", {"invoice_id": "X"})
    assert res.is_error and res.text == "no invoice 'X'"


async def test_event_stream_replies_are_read(kind):
    def reply(request):
        rid = json.loads(request.content)["id"]
        note = {"jsonrpc": "2.0", "method": "notifications/progress", "params": {"progress": 1}}
        final = {"jsonrpc": "2.0", "id": rid, "result": TEXT}
        text = f"event: message\ndata: {json.dumps(note)}\n\n"
        text += f"id: 2\nevent: message\ndata: {json.dumps(final)}\n\n"
        return httpx.Response(200, text=text, headers={"content-type": "text/event-stream"})

    res = await Client(kind, Script(reply)).call("tool_call", "t")
    assert res.text == "hello"


async def test_event_stream_error_replies_raise_typed(kind):
    def reply(request):
        rid = json.loads(request.content)["id"]
        msg = {"jsonrpc": "2.0", "id": rid, "error": {"code": -32012, "message": "denied by policy"}}
        return httpx.Response(
            200, text=f"data: {json.dumps(msg)}\r\n\r\n", headers={"content-type": "text/event-stream"}
        )

    with pytest.raises(PolicyError):
        await Client(kind, Script(reply)).call("tool_call", "t")


async def test_denials_raise_typed_errors_with_gateway_data(kind):
    script = Script(
        error(
            -32013,
            "budget exhausted",
            check="budget",
            reason="spent",
            decision_id="d9",
            scope="token:max_calls",
            limit=1,
        )
    )
    with pytest.raises(BudgetError) as info:
        await Client(kind, script).call("tool_call", "t")
    assert (info.value.check, info.value.reason, info.value.decision_id) == ("budget", "spent", "d9")
    assert (info.value.scope, info.value.limit) == ("token:max_calls", 1)


async def test_unavailable_takes_retry_after(kind):
    with pytest.raises(UnavailableError) as info:
        await Client(kind, Script(error(-32018, retry_after_ms=250))).call("tool_call", "t")
    assert info.value.retry_after == 0.25


@pytest.mark.parametrize(
    ("status", "body", "content_type"),
    [
        (500, b"upstream connect error", "text/plain"),
        (503, b"", "text/plain"),
        (502, b"<html>bad gateway</html>", "text/html"),
        (404, b'{"detail": "not found"}', "application/json"),
        (401, b"", ""),
    ],
)
async def test_non_2xx_raises_gateway_error(kind, status, body, content_type):
    headers = {"content-type": content_type} if content_type else {}
    reply = httpx.Response(status, content=body, headers=headers | {"retry-after": "7"})
    with pytest.raises(GatewayError) as info:
        await Client(kind, Script(reply)).call("tool_call", "t")
    assert info.value.http_status == status and info.value.code is None
    assert info.value.retry_after == 7.0
    assert info.value.body == body.decode()


async def test_non_2xx_with_a_json_rpc_error_keeps_its_code(kind):
    body = {
        "jsonrpc": "2.0",
        "error": {
            "code": -32010,
            "message": "capability check failed",
            "data": {"check": "capability", "decision_id": "d2"},
        },
    }
    with pytest.raises(GatewayError) as info:
        await Client(kind, Script(httpx.Response(403, json=body))).call("tool_call", "t")
    assert (info.value.http_status, info.value.code, info.value.check) == (403, -32010, "capability")


@pytest.mark.parametrize(
    ("body", "content_type"),
    [
        (b"<html><body>Welcome to nginx</body></html>", "text/html"),
        (b"", "application/json"),
        (b"{not json", "application/json"),
        (b"\xff\xfe\x00garbage", "application/octet-stream"),
        (b": keepalive\n\n", "text/event-stream"),
    ],
)
async def test_a_body_that_is_not_json_raises_gateway_error(kind, body, content_type):
    reply = httpx.Response(200, content=body, headers={"content-type": content_type})
    with pytest.raises(GatewayError) as info:
        await Client(kind, Script(reply)).call("tool_call", "t")
    assert info.value.http_status == 200


@pytest.mark.parametrize(
    "make",
    [
        lambda rid: [],
        lambda rid: [{"jsonrpc": "2.0", "id": rid, "result": TEXT}],  # a batch reply to a single call
        lambda rid: {"id": rid, "result": TEXT},
        lambda rid: {"jsonrpc": "1.0", "id": rid, "result": TEXT},
        lambda rid: {"jsonrpc": "2.0", "id": "someone-else", "result": TEXT},
        lambda rid: {"jsonrpc": "2.0", "id": "someone-else", "error": {"code": -32012, "message": "m"}},
        lambda rid: {"jsonrpc": "2.0", "id": rid},
        lambda rid: {"jsonrpc": "2.0", "id": rid, "result": "a string"},
        lambda rid: {"jsonrpc": "2.0", "id": rid, "result": {"content": "not a list"}},
        lambda rid: {"jsonrpc": "2.0", "id": rid, "result": {"content": ["not a block"]}},
        lambda rid: {"jsonrpc": "2.0", "id": rid, "error": "not an object"},
    ],
)
async def test_malformed_json_rpc_raises_protocol_error(kind, make):
    def reply(request):
        return httpx.Response(200, json=make(json.loads(request.content)["id"]))

    with pytest.raises(ProtocolError) as info:
        await Client(kind, Script(reply)).call("tool_call", "t")
    assert info.value.code is None


async def test_a_json_rpc_error_with_null_id_is_still_typed(kind):
    reply = httpx.Response(
        200, json={"jsonrpc": "2.0", "id": None, "error": {"code": -32700, "message": "parse"}}
    )
    with pytest.raises(ProtocolError) as info:
        await Client(kind, Script(reply)).call("tool_call", "t")
    assert info.value.code == -32700


async def test_transport_failures_raise_gateway_error(kind):
    def refuse(request):
        raise httpx.ConnectError("connection refused", request=request)

    with pytest.raises(GatewayError) as info:
        await Client(kind, Script(refuse)).call("tool_call", "t")
    assert info.value.http_status is None and isinstance(info.value.__cause__, httpx.ConnectError)

    def slow(request):
        raise httpx.ReadTimeout("timed out", request=request)

    with pytest.raises(GatewayError, match="ReadTimeout"):
        await Client(kind, Script(slow)).call("tool_call", "t")


async def test_timeout_is_applied_to_each_request(kind):
    seen = []

    def reply(request):
        seen.append(request.extensions["timeout"])
        return result(TEXT)(request)

    await Client(kind, Script(reply), timeout=2.5).call("tool_call", "t")
    assert seen[0] == {"connect": 2.5, "read": 2.5, "write": 2.5, "pool": 2.5}


async def test_wait_for_approval_repeats_the_call_with_the_approval_id(kind, fast_polls):
    pending = error(-32019, "approval required", approval_id="ap-1", expires_at="2030-01-01T00:00:00Z")
    script = Script(pending, pending, pending, result(TEXT, decision="allowed"))
    res = await Client(kind, script).call(
        "tool_call", "transfer_funds", {"amount": 20000}, intent_prompt="pay", wait_for_approval=5
    )
    assert res.decision_id == "allowed"
    assert len(script.requests) == 4
    assert "x-approval-id" not in script.requests[0].headers
    for request in script.requests[1:]:
        assert request.headers["x-approval-id"] == "ap-1"
        assert unquote_to_bytes(request.headers["x-intent-prompt"]) == b"pay"
        assert json.loads(request.content)["params"] == {
            "name": "transfer_funds",
            "arguments": {"amount": 20000},
        }


async def test_wait_for_approval_stops_on_rejection(kind, fast_polls):
    pending = error(-32019, "approval required", approval_id="ap-1")
    script = Script(pending, error(-32012, "denied by policy", reason="approval ap-1 is rejected"))
    with pytest.raises(PolicyError, match="rejected"):
        await Client(kind, script).call("tool_call", "t", wait_for_approval=5)
    assert len(script.requests) == 2


async def test_wait_for_approval_gives_up_with_approval_required(kind, fast_polls):
    script = Script(error(-32019, "approval required", approval_id="ap-1"))
    started = time.monotonic()
    with pytest.raises(ApprovalRequired) as info:
        await Client(kind, script).call("tool_call", "t", wait_for_approval=0.2)
    elapsed = time.monotonic() - started
    assert info.value.approval_id == "ap-1"
    assert 0.2 <= elapsed < 1.5
    assert len(script.requests) >= 3


async def test_without_wait_the_approval_is_raised_at_once(kind):
    script = Script(error(-32019, "approval required", approval_id="ap-1"))
    with pytest.raises(ApprovalRequired):
        await Client(kind, script).call("tool_call", "t")
    assert len(script.requests) == 1


def test_poll_delays_back_off_to_a_cap():
    delays = _protocol.poll_delays()
    assert [next(delays) for _ in range(7)] == [0.25, 0.5, 1.0, 2.0, 4.0, 5.0, 5.0]


async def test_list_tools_follows_cursors(kind):
    pages = [
        result({"tools": [{"name": "a"}], "nextCursor": "c2"}),
        result({"tools": [{"name": "b", "inputSchema": {"type": "object"}}]}),
    ]
    script = Script(*pages)
    tools = await Client(kind, script).call("list_tools")
    assert [t["name"] for t in tools] == ["a", "b"]
    assert script.body(0)["method"] == "tools/list" and "params" not in script.body(0)
    assert script.body(1)["params"] == {"cursor": "c2"}


@pytest.mark.parametrize(
    ("kw", "exc"),
    [
        ({"wait_for_approval": -1}, ValueError),
        ({"wait_for_approval": "10"}, ValueError),
        ({"request_id": 1.5}, TypeError),
        ({"request_id": True}, TypeError),
        ({"intent_prompt": b"bytes"}, TypeError),
        ({"approval_id": "two\nlines"}, ValueError),
    ],
)
async def test_bad_arguments_fail_before_sending(kind, kw, exc):
    script = Script(result(TEXT))
    with pytest.raises(exc):
        await Client(kind, script).call("tool_call", "t", {}, **kw)
    assert script.requests == []


async def test_bad_tool_or_arguments_fail_before_sending(kind):
    script = Script(result(TEXT))
    client = Client(kind, script)
    with pytest.raises(ValueError):
        await client.call("tool_call", "")
    with pytest.raises(TypeError):
        await client.call("tool_call", "t", ["not", "a", "mapping"])
    assert script.requests == []


def test_url_normalisation_and_token_sources(monkeypatch):
    monkeypatch.setenv("TESSERA_TOKEN", "from-env")
    assert Gateway("http://h:8080/").url == "http://h:8080/v1/mcp"
    assert Gateway("http://h:8080/v1/mcp").url == "http://h:8080/v1/mcp"
    assert Gateway("https://h/base").url == "https://h/base/v1/mcp"
    # one of several tool servers behind the gateway (docs/mcp.md) keeps its own path, also attenuated
    assert Gateway("http://h:8080/v1/mcp/billing/").url == "http://h:8080/v1/mcp/billing"
    assert Gateway("http://h:8080/v1/mcp/billing", "t").with_token("u").url == "http://h:8080/v1/mcp/billing"
    assert Gateway("http://h").token == "from-env"
    assert Gateway("http://h", "Bearer  abc ").token == "abc"
    assert "abc" not in repr(Gateway("http://h", "abc"))
    monkeypatch.delenv("TESSERA_TOKEN")
    assert Gateway("http://h").token is None
    with pytest.raises(ValueError):
        Gateway("")
    with pytest.raises(ValueError):
        Gateway("http://h", "a b")
    with pytest.raises(ValueError):
        Gateway("http://h", timeout=0)
    with pytest.raises(TypeError):
        Gateway("http://h", client=httpx.AsyncClient())
    with pytest.raises(TypeError):
        AsyncGateway("http://h", client=httpx.Client())


async def test_no_token_sends_no_authorization(kind, monkeypatch):
    monkeypatch.delenv("TESSERA_TOKEN", raising=False)
    script = Script(result(TEXT))
    await Client(kind, script, token=None).call("tool_call", "t")
    assert "authorization" not in script.requests[0].headers


async def test_only_the_client_it_created_is_closed():
    mine = Gateway(URL, "t")
    with mine:
        pass
    assert mine._client.is_closed
    theirs = httpx.Client()
    with Gateway(URL, "t", client=theirs):
        pass
    assert not theirs.is_closed
    theirs.close()

    amine = AsyncGateway(URL, "t")
    async with amine:
        pass
    assert amine._client.is_closed
    atheirs = httpx.AsyncClient()
    async with AsyncGateway(URL, "t", client=atheirs):
        pass
    assert not atheirs.is_closed
    await atheirs.aclose()


async def test_with_token_shares_the_client_and_swaps_the_token(kind):
    script = Script(result(TEXT))
    client = Client(kind, script)
    child = client.gw.with_token("sub-token")
    assert child._client is client.gw._client and not child._owns_client
    value = child.tool_call("t")
    if kind == "async":
        await value
    assert script.requests[0].headers["authorization"] == "Bearer sub-token"
