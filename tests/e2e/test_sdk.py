"""The agent SDK against the real stack (Envoy + check service + demo MCP server).

Every test runs with both the blocking and the async client (``client`` fixture): they must behave
the same. Each exception class is raised by a real denial of its kind.
"""

from __future__ import annotations

import asyncio
import json
import time
from datetime import UTC, datetime, timedelta

import pytest

from authz.client import (
    ApprovalRequired,
    BudgetError,
    CapabilityError,
    GatewayError,
    IntentError,
    PolicyError,
    ProtocolError,
    ProvenanceError,
    TesseraError,
    ToolResult,
    UnavailableError,
    attenuate,
    inspect,
)
from tests.e2e.conftest import unique_agent

pytestmark = pytest.mark.integration

READ = ("read_invoice", {"invoice_id": "INV-1001"})
IBAN = "DE89370400440532013000"
BIG = {"amount": 25000, "iban": IBAN}


def assert_denial(exc: TesseraError, code: int, check: str) -> None:
    assert exc.code == code and exc.check == check
    assert exc.reason and exc.decision_id and exc.message


async def test_success_returns_the_tools_content(client):
    result = await client().tool_call(*READ, intent_prompt="show me invoice INV-1001")
    assert isinstance(result, ToolResult) and not result.is_error
    assert result.structured_content["invoice_id"] == "INV-1001"
    assert result.structured_content["customer"] == "ACME GmbH"
    assert result.content[0]["type"] == "text" and json.loads(result.text) == result.structured_content
    assert result.decision_id


async def test_a_prompt_in_any_language_survives_the_header(client):
    prompt = "show me invoice INV-1001 — bitte schnell, 请快点, شكرا 🧾"
    result = await client().tool_call(*READ, intent_prompt=prompt)
    assert not result.is_error
    # The catalog extractor read the English part of the decoded prompt; a mangled header would
    # have been refused as malformed (-32600) before reaching the intent stage.


async def test_tool_errors_come_back_as_results(client):
    result = await client().tool_call("read_invoice", {"invoice_id": "INV-9999"})
    assert result.is_error and "INV-9999" in result.text
    assert result.decision_id


async def test_list_tools(client):
    names = {tool["name"] for tool in await client().list_tools()}
    # delete_invoice is hidden: the demo policy denies every call of it.
    assert names == {"read_invoice", "list_invoices", "transfer_funds"}


async def test_capability_error_for_a_bad_token(client):
    with pytest.raises(CapabilityError) as info:
        await client(token="bogus").tool_call(*READ)
    assert_denial(info.value, -32010, "capability")


async def test_capability_error_for_a_missing_token(client, monkeypatch):
    monkeypatch.delenv("TESSERA_TOKEN", raising=False)
    c = client()
    c.gw._token = None
    with pytest.raises(CapabilityError, match="capability token missing"):
        await c.tool_call(*READ)


async def test_intent_error(client):
    with pytest.raises(IntentError) as info:
        await client().tool_call(
            "transfer_funds", {"amount": 5, "iban": IBAN}, intent_prompt="show me invoice INV-1001"
        )
    assert_denial(info.value, -32011, "intent")


async def test_policy_error(client):
    with pytest.raises(PolicyError) as info:
        await client().tool_call("delete_invoice", {"invoice_id": "INV-1001"})
    assert_denial(info.value, -32012, "policy")
    assert "delete_invoice" in info.value.reason


async def test_budget_error(client, stack):
    c = client(token=stack.token(max_calls=1))
    await c.tool_call(*READ)
    with pytest.raises(BudgetError) as info:
        await c.tool_call(*READ)
    assert_denial(info.value, -32013, "budget")
    assert info.value.scope == "token:max_calls" and info.value.limit == 1


async def test_provenance_error_for_a_forged_memory_entry(client):
    forged = {
        "id": "mem-1",
        "content_sha256": "0" * 64,
        "source": "crm",
        "written_at": "2025-01-01T00:00:00Z",
        "tag": "f" * 64,
    }
    with pytest.raises(ProvenanceError) as info:
        await client().tool_call(*READ, provenance=[forged])
    assert_denial(info.value, -32014, "provenance")


async def test_approval_required(client):
    with pytest.raises(ApprovalRequired) as info:
        await client().tool_call("transfer_funds", BIG)
    exc = info.value
    assert_denial(exc, -32019, "approval")
    assert exc.approval_id and exc.resume_header == "X-Approval-Id"
    assert exc.expires_at is not None and exc.expires_at > datetime.now(UTC)


async def test_protocol_error_for_a_json_rpc_error_of_another_kind(client):
    with pytest.raises(ProtocolError) as info:
        await client().request("tools/call", {"arguments": {}})  # no tool name: the gateway's -32602
    assert info.value.code == -32602 and info.value.check == "protocol"
    with pytest.raises(ProtocolError) as info:
        await client().request("no/such/method")  # the MCP server's own error, through the gateway
    assert info.value.code == -32601


async def test_approved_call_resumes_with_the_approval_id(client, stack, approvals):
    c = client(token=stack.token(agent=unique_agent()))
    with pytest.raises(ApprovalRequired) as info:
        await c.tool_call("transfer_funds", BIG)
    await approvals.decide(info.value.approval_id, "approve")
    result = await c.tool_call("transfer_funds", BIG, approval_id=info.value.approval_id)
    assert not result.is_error and result.structured_content["status"] == "executed"
    with pytest.raises(PolicyError, match="consumed"):  # an approval is consumed exactly once
        await c.tool_call("transfer_funds", BIG, approval_id=info.value.approval_id)


async def test_wait_for_approval_completes_when_approved_while_waiting(client, stack, approvals):
    agent = unique_agent()
    c = client(token=stack.token(agent=agent))
    call = asyncio.create_task(c.tool_call("transfer_funds", BIG, wait_for_approval=30))
    pending = await approvals.pending_for(agent)
    await asyncio.sleep(0.6)  # let the client poll at least once while it is pending
    assert not call.done()
    await approvals.decide(pending.approval_id, "approve")
    result = await asyncio.wait_for(call, 15)
    assert not result.is_error and result.structured_content["amount"] == 25000
    assert result.decision_id


async def test_wait_for_approval_raises_policy_error_when_rejected(client, stack, approvals):
    agent = unique_agent()
    c = client(token=stack.token(agent=agent))
    call = asyncio.create_task(c.tool_call("transfer_funds", BIG, wait_for_approval=30))
    pending = await approvals.pending_for(agent)
    await approvals.decide(pending.approval_id, "reject")
    with pytest.raises(PolicyError) as info:
        await asyncio.wait_for(call, 15)
    assert "rejected" in info.value.reason and pending.approval_id in info.value.reason


async def test_wait_for_approval_times_out_with_approval_required(client, stack):
    c = client(token=stack.token(agent=unique_agent()))
    started = time.monotonic()
    with pytest.raises(ApprovalRequired) as info:
        await c.tool_call("transfer_funds", BIG, wait_for_approval=1.0)
    assert 1.0 <= time.monotonic() - started < 5
    assert info.value.approval_id  # the agent can resume later with it


async def test_attenuated_token_works_in_scope_and_is_denied_outside(client, stack):
    parent = stack.token(expires=datetime.now(UTC) + timedelta(hours=1))
    child = attenuate(
        parent,
        tools=["read_invoice", "transfer_funds"],
        args=["invoice_id in INV-1001,INV-1002"],
        max_calls=3,
        expires=timedelta(minutes=5),
    )
    info = inspect(child)
    assert info.tools == frozenset({"read_invoice", "transfer_funds"}) and info.max_calls == 3
    sub = client(token=child)
    assert not (await sub.tool_call("read_invoice", {"invoice_id": "INV-1002"})).is_error
    with pytest.raises(CapabilityError, match="invoice_id"):  # argument outside the caveat
        await sub.tool_call("read_invoice", {"invoice_id": "INV-1003"})
    with pytest.raises(CapabilityError, match="list_invoices"):  # tool outside the caveat
        await sub.tool_call("list_invoices", {})
    await sub.tool_call("read_invoice", {"invoice_id": "INV-1001"})
    await sub.tool_call("read_invoice", {"invoice_id": "INV-1001"})
    with pytest.raises(BudgetError):  # the sub-agent's own max_calls
        await sub.tool_call("read_invoice", {"invoice_id": "INV-1001"})
    # the parent is untouched by the child's caveats
    assert not (await client(token=parent).tool_call("list_invoices", {})).is_error


async def test_attenuated_amount_limit(client, stack):
    child = attenuate(stack.token(), tools=["transfer_funds"], args=["amount <= 100"])
    sub = client(token=child)
    assert (await sub.tool_call("transfer_funds", {"amount": 50, "iban": IBAN})).structured_content[
        "amount"
    ] == 50
    with pytest.raises(CapabilityError, match="amount"):
        await sub.tool_call("transfer_funds", {"amount": 500, "iban": IBAN})


async def test_expired_attenuation_is_denied(client, stack):
    child = attenuate(stack.token(), expires=datetime.now(UTC) - timedelta(seconds=1))
    with pytest.raises(CapabilityError, match="expired"):
        await client(token=child).tool_call(*READ)


async def test_an_unsigned_memory_entry_is_refused_as_unsigned(client):
    # Well-formed but without a tag: the gateway decoded the X-Memory-Provenance header intact.
    entry = {"id": "mem-2", "content": "IBAN DE89...", "source": "crm", "written_at": "2025-01-01T00:00:00Z"}
    with pytest.raises(ProvenanceError, match="unsigned"):
        await client().tool_call(*READ, provenance=[entry])


# -- failures of the gateway itself ------------------------------------------------------------------


async def test_unavailable_error_when_the_intent_extractor_fails(client, faulty_stack):
    c = client(token=faulty_stack.token(), url=faulty_stack.url)
    with pytest.raises(UnavailableError) as info:
        await c.tool_call(
            "read_invoice", {"invoice_id": "INV-1001"}, intent_prompt="show me invoice INV-1001"
        )
    assert_denial(info.value, -32018, "unavailable")
    assert info.value.retry_after and info.value.retry_after > 0


async def test_a_500_reply_raises_gateway_error(client, faulty_stack):
    c = client(token=faulty_stack.token(), url=faulty_stack.url)
    ok = await c.tool_call("read_invoice", {"invoice_id": "fine"})
    assert ok.text == "faulty server saw fine" and ok.decision_id
    with pytest.raises(GatewayError) as info:
        await c.tool_call("read_invoice", {"invoice_id": "http-500"})
    assert info.value.http_status == 500 and info.value.body == "internal error"
    assert info.value.decision_id  # the gateway allowed it; the upstream failed


async def test_a_non_json_reply_raises_gateway_error(client, faulty_stack):
    c = client(token=faulty_stack.token(), url=faulty_stack.url)
    with pytest.raises(GatewayError, match="not JSON") as info:
        await c.tool_call("read_invoice", {"invoice_id": "not-json"})
    assert info.value.http_status == 200 and "maintenance" in info.value.body


async def test_a_stopped_gateway_raises_gateway_error(client, tmp_path):
    from tests.integration.conftest import start_gateway

    running, helper = start_gateway(tmp_path)
    c = client(token=helper.token(), url=helper.url, timeout=3)
    try:
        assert not (await c.tool_call(*READ)).is_error
        running.checks[0].kill()  # check service gone: Envoy fails closed with 403/503
        with pytest.raises(GatewayError) as info:
            await c.tool_call(*READ)
        assert info.value.http_status in (403, 503)
    finally:
        running.stop()
    with pytest.raises(GatewayError) as info:  # the whole gateway stopped: nothing listens
        await c.tool_call(*READ)
    assert info.value.http_status is None and "cannot reach the gateway" in str(info.value)
