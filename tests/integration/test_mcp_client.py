"""The official `mcp` SDK client talks to the demo MCP server through Envoy and Tessera."""

from __future__ import annotations

import httpx2
import pytest
from mcp import ClientSession, MCPError
from mcp.client.streamable_http import streamable_http_client

from tests.integration.conftest import Gateway


async def _session_call(gateway: Gateway, token: str, tool: str, arguments: dict):
    headers = {"Authorization": f"Bearer {token}"}
    async with (
        httpx2.AsyncClient(headers=headers, timeout=10) as http,
        streamable_http_client(f"{gateway.url}/v1/mcp", http_client=http) as streams,
        ClientSession(streams[0], streams[1]) as session,
    ):
        init = await session.initialize()
        tools = await session.list_tools()
        result = await session.call_tool(tool, arguments)
        return init, tools, result


def _mcp_error(raised: BaseException) -> MCPError:
    """The MCPError the SDK raised, out of the task group's exception group if it is wrapped."""
    if isinstance(raised, MCPError):
        return raised
    assert isinstance(raised, BaseExceptionGroup), repr(raised)
    matched, _ = raised.split(MCPError)
    assert matched is not None, repr(raised)
    while isinstance(matched, BaseExceptionGroup):
        matched = matched.exceptions[0]
    return matched


async def test_mcp_client_initializes_lists_and_calls_an_allowed_tool(gateway: Gateway):
    init, tools, result = await _session_call(
        gateway, gateway.token(), "read_invoice", {"invoice_id": "INV-1001"}
    )
    assert init.server_info.name
    names = {tool.name for tool in tools.tools}
    # delete_invoice is hidden: the demo policy denies every call of it (authz.check.listing).
    assert names == {"read_invoice", "list_invoices", "transfer_funds"}
    assert not result.is_error
    assert "INV-1001" in "".join(block.text for block in result.content if hasattr(block, "text"))


async def test_mcp_client_sees_a_policy_denial_as_a_json_rpc_error(gateway: Gateway):
    with pytest.raises(BaseException) as raised:
        await _session_call(gateway, gateway.token(), "delete_invoice", {"invoice_id": "INV-1001"})
    error = _mcp_error(raised.value).error
    assert error.code == -32012
    assert error.data["check"] == "policy" and "delete_invoice" in error.data["reason"]
    assert error.data["decision_id"]


async def test_mcp_client_without_a_token_is_refused_at_initialize(gateway: Gateway):
    with pytest.raises(BaseException) as raised:
        await _session_call(gateway, "not-a-token", "read_invoice", {"invoice_id": "INV-1001"})
    assert _mcp_error(raised.value).error.code == -32010
