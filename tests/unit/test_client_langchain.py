"""The optional LangChain adapter (skipped when langchain-core, the ``langchain`` extra, is missing)."""

from __future__ import annotations

import json
from urllib.parse import unquote

import httpx
import pytest

pytest.importorskip("langchain_core", reason="the langchain extra (langchain-core) is not installed")

from langchain_core.tools import ToolException

from authz.client import AsyncGateway, Gateway, GatewayError, PolicyError, ToolResult
from authz.client.langchain import aload_tools, load_tools, tessera_tool

TOOLS = [
    {
        "name": "read_invoice",
        "description": "Read one invoice",
        "inputSchema": {
            "type": "object",
            "properties": {"invoice_id": {"type": "string"}},
            "required": ["invoice_id"],
        },
    },
    {
        "name": "delete_invoice",
        "description": "Delete one",
        "inputSchema": {"type": "object", "properties": {}},
    },
]


class Fake:
    def __init__(self, answer):
        self.answer = answer
        self.requests: list[httpx.Request] = []

    def __call__(self, request: httpx.Request) -> httpx.Response:
        self.requests.append(request)
        body = json.loads(request.content)
        if body["method"] == "tools/list":
            return httpx.Response(200, json={"jsonrpc": "2.0", "id": body["id"], "result": {"tools": TOOLS}})
        reply = self.answer(body)
        if isinstance(reply, httpx.Response):
            return reply
        return httpx.Response(
            200,
            json={"jsonrpc": "2.0", "id": body["id"], **reply},
            headers={"x-tessera-decision-id": "dec-1"},
        )


def ok(body):
    args = body["params"]["arguments"]
    return {"result": {"content": [{"type": "text", "text": f"invoice {args.get('invoice_id')}"}]}}


def gateway(answer) -> tuple[Gateway, Fake]:
    fake = Fake(answer)
    return Gateway("http://gw", "tok", client=httpx.Client(transport=httpx.MockTransport(fake))), fake


def test_tools_come_from_tools_list_with_their_schema():
    gw, _ = gateway(ok)
    tools = load_tools(gw)
    assert [t.name for t in tools] == ["read_invoice", "delete_invoice"]
    assert tools[0].description == "Read one invoice"
    assert tools[0].args == {"invoice_id": {"type": "string"}}
    assert [t.name for t in load_tools(gw, ["delete_invoice"])] == ["delete_invoice"]
    with pytest.raises(ValueError, match="no tool named"):
        load_tools(gw, ["nope"])


def test_invoke_goes_through_the_gateway_with_the_current_prompt():
    gw, fake = gateway(ok)
    prompts = iter(["show INV-1001", "show INV-1002"])
    tool = tessera_tool(gw, "read_invoice", intent_prompt=lambda: next(prompts))
    assert tool.invoke({"invoice_id": "INV-1001"}) == "invoice INV-1001"
    message = tool.invoke(
        {"type": "tool_call", "name": "read_invoice", "id": "c1", "args": {"invoice_id": "INV-1002"}}
    )
    assert message.content == "invoice INV-1002" and message.tool_call_id == "c1"
    assert isinstance(message.artifact, ToolResult) and message.artifact.decision_id == "dec-1"
    calls = [r for r in fake.requests if json.loads(r.content)["method"] == "tools/call"]
    assert [unquote(r.headers["x-intent-prompt"]) for r in calls] == ["show INV-1001", "show INV-1002"]


def test_structured_content_is_used_when_there_is_no_text():
    gw, _ = gateway(lambda body: {"result": {"content": [], "structuredContent": {"total": 3}}})
    assert json.loads(tessera_tool(gw, TOOLS[0]).invoke({"invoice_id": "x"})) == {"total": 3}


def test_denials_raise_typed_errors_by_default():
    gw, _ = gateway(
        lambda body: {
            "error": {
                "code": -32012,
                "message": "denied by policy",
                "data": {"check": "policy", "reason": "no deletes"},
            }
        }
    )
    with pytest.raises(PolicyError, match="no deletes"):
        tessera_tool(gw, TOOLS[1]).invoke({})


def test_handle_errors_returns_denials_and_tool_errors_to_the_model():
    gw, _ = gateway(
        lambda body: {
            "error": {
                "code": -32012,
                "message": "denied by policy",
                "data": {"check": "policy", "reason": "no deletes"},
            }
        }
    )
    message = tessera_tool(gw, TOOLS[1], handle_errors=True).invoke(
        {"type": "tool_call", "name": "delete_invoice", "id": "c1", "args": {}}
    )
    assert message.status == "error" and "no deletes" in message.content

    gw, _ = gateway(
        lambda body: {"result": {"content": [{"type": "text", "text": "no invoice 'X'"}], "isError": True}}
    )
    with pytest.raises(ToolException, match="no invoice"):
        tessera_tool(gw, TOOLS[0]).invoke({"invoice_id": "X"})
    assert "no invoice" in tessera_tool(gw, TOOLS[0], handle_errors=True).invoke({"invoice_id": "X"})


def test_gateway_errors_always_propagate():
    gw, _ = gateway(lambda body: httpx.Response(503, text="no healthy upstream"))
    with pytest.raises(GatewayError):
        tessera_tool(gw, TOOLS[0], handle_errors=True).invoke({"invoice_id": "x"})


async def test_async_gateway_tools():
    fake = Fake(ok)
    gw = AsyncGateway("http://gw", "tok", client=httpx.AsyncClient(transport=httpx.MockTransport(fake)))
    tools = await aload_tools(gw, ["read_invoice"], intent_prompt="show it")
    assert await tools[0].ainvoke({"invoice_id": "INV-7"}) == "invoice INV-7"
    with pytest.raises(ValueError, match="aload_tools"):
        tessera_tool(gw, "read_invoice")
    direct = tessera_tool(gw, "read_invoice", description="Read", args_schema=TOOLS[0]["inputSchema"])
    assert await direct.ainvoke({"invoice_id": "INV-8"}) == "invoice INV-8"
