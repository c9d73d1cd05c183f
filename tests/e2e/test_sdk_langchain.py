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
        assert {"read_invoice", "transfer_funds"} <= tools.keys()
        assert "delete_invoice" not in tools  # every call of it is denied: tools/list hides it
        assert "invoice_id" in tools["read_invoice"].args
        message = tools["read_invoice"].invoke(
            {"type": "tool_call", "name": "read_invoice", "id": "c1", "args": {"invoice_id": "INV-1001"}}
        )
        assert json.loads(message.content)["customer"] == "ACME GmbH"
        assert isinstance(message.artifact, ToolResult) and message.artifact.decision_id
        with pytest.raises(IntentError):  # the user asked to see an invoice, not to move money
            tools["transfer_funds"].invoke({"amount": 5, "iban": "DE89370400440532013000"})
        user["prompt"] = None
        with pytest.raises(PolicyError):
            tools["transfer_funds"].invoke({"amount": -5, "iban": "DE89370400440532013000"})


def test_denials_go_back_to_the_model_when_asked(stack):
    with Gateway(stack.url, stack.token()) as gw:
        (transfer,) = load_tools(gw, ["transfer_funds"], handle_errors=True)
        message = transfer.invoke(
            {
                "type": "tool_call",
                "name": "transfer_funds",
                "id": "c2",
                "args": {"amount": -5, "iban": "DE89370400440532013000"},
            }
        )
        assert message.status == "error" and "must be positive" in message.content


async def test_async_langchain_tools(stack):
    async with AsyncGateway(stack.url, stack.token()) as gw:
        (read,) = await aload_tools(gw, ["read_invoice"])
        content = await read.ainvoke({"invoice_id": "INV-1002"})
        assert json.loads(content)["customer"] == "Globex Ltd"
