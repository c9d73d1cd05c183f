"""The official ``mcp`` SDK through Tessera with the SDK's helpers: same headers, same typed errors."""

from __future__ import annotations

import pytest

from authz.client import (
    ApprovalRequired,
    BudgetError,
    CapabilityError,
    GatewayError,
    IntentError,
    PolicyError,
    mcp_errors,
    tessera_meta,
    tessera_transport,
)
from authz.local.stack import free_port
from tests.e2e.conftest import unique_agent

mcp = pytest.importorskip("mcp")

pytestmark = pytest.mark.integration

READ = ("read_invoice", {"invoice_id": "INV-1001"})
BIG = {"amount": 25000, "iban": "DE89370400440532013000"}


async def test_client_calls_a_tool(stack):
    async with mcp.Client(tessera_transport(stack.url, stack.token())) as client:
        result = await client.call_tool(*READ, meta=tessera_meta(intent_prompt="show me invoice INV-1001"))
    assert not result.is_error
    assert result.structured_content["invoice_id"] == "INV-1001"


async def test_client_session_over_the_transport(stack):
    async with (
        tessera_transport(stack.url, stack.token()) as (read, write),
        mcp.ClientSession(read, write) as session,
    ):
        await session.initialize()
        names = {tool.name for tool in (await session.list_tools()).tools}
        assert "read_invoice" in names
        result = await session.call_tool(*READ)
        assert result.structured_content["customer"] == "ACME GmbH"


async def test_denials_become_typed_errors(stack):
    async with mcp.Client(tessera_transport(stack.url, stack.token(max_calls=2))) as client:
        with pytest.raises(PolicyError) as info, mcp_errors():
            await client.call_tool("delete_invoice", {"invoice_id": "INV-1001"})
        assert info.value.check == "policy" and info.value.decision_id
        assert type(info.value.__cause__).__name__ == "MCPError"

        with pytest.raises(IntentError), mcp_errors():
            await client.call_tool(
                "transfer_funds",
                {"amount": 5, "iban": BIG["iban"]},
                meta=tessera_meta(intent_prompt="show me invoice INV-1001"),
            )
        await client.call_tool(*READ)
        await client.call_tool(*READ)
        with pytest.raises(BudgetError), mcp_errors():
            await client.call_tool(*READ)


async def test_prompt_header_for_the_whole_connection(stack):
    transport = tessera_transport(
        stack.url, stack.token(), intent_prompt="zeige mir die Rechnung, show me invoice"
    )
    async with mcp.Client(transport) as client:
        assert not (await client.call_tool(*READ)).is_error
        with pytest.raises(IntentError), mcp_errors():  # reading invoices was asked for, paying was not
            await client.call_tool("transfer_funds", {"amount": 10, "iban": "DE89370400440532013000"})


async def test_bad_token_fails_at_connect_with_capability_error(stack):
    with pytest.raises(CapabilityError), mcp_errors():
        async with mcp.Client(tessera_transport(stack.url, "bogus")) as client:
            await client.call_tool(*READ)


async def test_unreachable_gateway_is_a_gateway_error():
    with pytest.raises(GatewayError), mcp_errors():
        async with mcp.Client(tessera_transport(f"http://127.0.0.1:{free_port()}", "t", timeout=3)) as client:
            await client.call_tool(*READ)


async def test_approval_flow_with_meta(stack, approvals):
    agent = unique_agent()
    async with mcp.Client(tessera_transport(stack.url, stack.token(agent=agent))) as client:
        with pytest.raises(ApprovalRequired) as info, mcp_errors():
            await client.call_tool("transfer_funds", BIG)
        await approvals.decide(info.value.approval_id, "approve")
        result = await client.call_tool(
            "transfer_funds", BIG, meta=tessera_meta(approval_id=info.value.approval_id)
        )
        assert result.structured_content["status"] == "executed"
