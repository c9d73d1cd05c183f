"""The LangChain adapter against the real stack (skipped without the ``langchain`` extra)."""

from __future__ import annotations

import json

import pytest

pytest.importorskip("langchain_core", reason="the langchain extra (langchain-core) is not installed")

from authz.client import AsyncGateway, Gateway, IntentError, PolicyError, ToolResult
from authz.client.langchain import aload_tools, load_tools

pytestmark = pytest.mark.integration


def test_langchain_tools_call_through_the_gateway(stack):
    with Gateway(stack.url, stack.token()) as gw:
        user = {"prompt": "show me invoice INV-1001"}  # what the agent's user said this turn
        tools = {t.name: t for t in load_tools(gw, intent_prompt=lambda: user["prompt"])}
        assert {"read_invoice", "delete_invoice"} <= tools.keys()
        assert "invoice_id" in tools["read_invoice"].args
        message = tools["read_invoice"].invoke(
            {"type": "tool_call", "name": "read_invoice", "id": "c1", "args": {"invoice_id": "INV-1001"}}
        )
        assert json.loads(message.content)["customer"] == "ACME GmbH"
        assert isinstance(message.artifact, ToolResult) and message.artifact.decision_id
        with pytest.raises(IntentError):  # the user asked to see an invoice, not to delete one
            tools["delete_invoice"].invoke({"invoice_id": "INV-1001"})
        user["prompt"] = None
        with pytest.raises(PolicyError):
            tools["delete_invoice"].invoke({"invoice_id": "INV-1001"})


def test_denials_go_back_to_the_model_when_asked(stack):
    with Gateway(stack.url, stack.token()) as gw:
        (delete,) = load_tools(gw, ["delete_invoice"], handle_errors=True)
        message = delete.invoke(
            {"type": "tool_call", "name": "delete_invoice", "id": "c2", "args": {"invoice_id": "INV-1001"}}
        )
        assert message.status == "error" and "retained for audit" in message.content


async def test_async_langchain_tools(stack):
    async with AsyncGateway(stack.url, stack.token()) as gw:
        (read,) = await aload_tools(gw, ["read_invoice"])
        content = await read.ainvoke({"invoice_id": "INV-1002"})
        assert json.loads(content)["customer"] == "Globex Ltd"
