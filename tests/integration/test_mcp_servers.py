"""Several MCP tool servers behind one Envoy listener, routed by path: ``/v1/mcp`` (the demo upstream) and
``/v1/mcp/billing`` (a second demo MCP server, answering in SSE with one more tool). The official ``mcp``
client talks to each; the policy tells them apart by ``input.server``; the audit names the server.

Why routing by path and not Envoy 1.40's ``mcp_router`` (measured; see docs/mcp.md): that filter must be
the terminal filter of the whole connection manager (the admin and tool-call routes need the router),
answers the MCP GET stream with 405 and a DELETE without body with 400 (no notifications, sessions that
cannot be ended), and announces capabilities its servers do not have.
"""

from __future__ import annotations

import json
import sys
from collections.abc import Iterator
from pathlib import Path

import httpx2
import pytest
from mcp import ClientSession
from mcp.client.streamable_http import streamable_http_client

from authz.local.stack import StackPorts, free_port, spawn, stop_process, wait_http
from tests.integration.conftest import Gateway, start_gateway

DEMO_TOOLS = {"read_invoice", "list_invoices", "transfer_funds", "delete_invoice"}

# Every tool of the invoices server (the default endpoint); on the billing server only reads and the
# slow report, and only billing clerks list or call anything there.
SERVERS_POLICY = """
package tessera
import rego.v1
default decision := {"allow": false, "reason": "default deny"}
decision := {"allow": true, "reason": "invoices server"} if not input.server
decision := {"allow": true, "reason": "billing read"} if {
    input.server == "billing"
    input.agent == "billing-clerk"
    input.tool in {"read_invoice", "list_invoices", "slow_report"}
}
"""


# A tenant in intent enforce mode whose catalogs are per server: the main endpoint's names the invoice
# reads, billing's only its slow report (docs/mcp.md "Catalogs per server").
ALLOW_ALL = 'package tessera\nimport rego.v1\ndecision := {"allow": true, "reason": "allowed"}\n'
CATALOGS_TENANT = """  catalogs:
    intent: {{mode: enforce, require_prompt: true}}
    policy: {policy}
    catalog:
      tools:
        read_invoice: {{verbs: [read, show], keywords: [invoice]}}
        list_invoices: {{verbs: [list], keywords: [invoice]}}
    servers:
      billing:
        catalog:
          tools:
            slow_report: {{verbs: [run, build], keywords: [report]}}
"""


@pytest.fixture(scope="module")
def two_servers(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Gateway]:
    workdir = tmp_path_factory.mktemp("servers")
    (workdir / "servers.rego").write_text(SERVERS_POLICY)
    tenants = workdir / "tenants.yaml"
    (workdir / "allow.rego").write_text(ALLOW_ALL)
    tenants.write_text(
        f'tenants:\n  multi:\n    intent:\n      mode: "off"\n    policy: {workdir / "servers.rego"}\n'
        + CATALOGS_TENANT.format(policy=workdir / "allow.rego")
    )
    billing_port = free_port()
    billing = spawn(
        [sys.executable, "-m", "authz.demo", "--port", str(billing_port), "--sse", "--slow-tool"],
        log=workdir / "billing.log",
    )
    try:
        wait_http(f"http://127.0.0.1:{billing_port}/healthz", 30, billing, "billing MCP server")
        stack, gw = start_gateway(
            workdir,
            ports=StackPorts.free(),
            env={"TESSERA_TENANTS_FILE": str(tenants)},
            mcp_servers={"billing": ("127.0.0.1", billing_port)},
        )
        try:
            yield gw
        finally:
            stack.stop()
    finally:
        stop_process(billing)


async def _session(gw: Gateway, token: str, path: str) -> tuple[set[str], str]:
    async with (
        httpx2.AsyncClient(headers={"Authorization": f"Bearer {token}"}, timeout=30) as http,
        streamable_http_client(f"{gw.url}{path}", http_client=http) as (read, write),
        ClientSession(read, write) as session,
    ):
        await session.initialize()
        names = {t.name for t in (await session.list_tools()).tools}
        called = await session.call_tool("read_invoice", {"invoice_id": "INV-1001"})
        return names, "error" if called.is_error else "ok"


async def test_each_server_is_listed_and_called_at_its_own_path(two_servers: Gateway):
    clerk = two_servers.token("multi", agent="billing-clerk")
    assert await _session(two_servers, clerk, "/v1/mcp") == (DEMO_TOOLS, "ok")
    billing = await _session(two_servers, clerk, "/v1/mcp/billing")
    assert billing == ({"read_invoice", "list_invoices", "slow_report"}, "ok")


async def test_the_policy_tells_the_servers_apart(two_servers: Gateway):
    other = two_servers.token("multi", agent="someone")
    assert (await _session(two_servers, other, "/v1/mcp"))[0] == DEMO_TOOLS
    listed = two_servers.mcp({"jsonrpc": "2.0", "id": 1, "method": "tools/list"}, other)
    assert {t["name"] for t in listed.json()["result"]["tools"]} == DEMO_TOOLS
    # On billing the same token lists nothing and may call nothing.
    response = _post(
        two_servers, "/v1/mcp/billing", {"jsonrpc": "2.0", "id": 2, "method": "tools/list"}, other
    )
    assert _sse_message(response.text)["result"]["tools"] == []
    denied = _post(
        two_servers,
        "/v1/mcp/billing",
        {
            "jsonrpc": "2.0",
            "id": 3,
            "method": "tools/call",
            "params": {"name": "read_invoice", "arguments": {}},
        },
        other,
    )
    assert denied.json()["error"]["code"] == -32012


def test_audit_events_name_the_server(two_servers: Gateway):
    clerk = two_servers.token("multi", agent="billing-clerk")
    _post(
        two_servers,
        "/v1/mcp/billing",
        {
            "jsonrpc": "2.0",
            "id": 4,
            "method": "tools/call",
            "params": {"name": "read_invoice", "arguments": {"invoice_id": "INV-1001"}},
        },
        clerk,
    )
    _post(two_servers, "/v1/mcp/billing", {"jsonrpc": "2.0", "id": 5, "method": "tools/list"}, clerk)
    two_servers.call("read_invoice", {"invoice_id": "INV-1001"}, token=clerk)
    events = _events(two_servers.stack.workdir / "tessera.db", "multi")
    calls = [e["tessera"] for e in events if e["tessera"].get("tool") == "read_invoice"]
    assert {c.get("server") for c in calls} == {"billing", None}
    lists = [e["tessera"] for e in events if e["tessera"]["decision"] == "list"]
    assert any(t["server"] == "billing" and t["listed"] == {"tool": 3} for t in lists), lists


def _post(gw: Gateway, path: str, body: dict, token: str, headers: dict | None = None):
    import httpx

    return httpx.post(
        f"{gw.url}{path}",
        json=body,
        headers={
            "authorization": f"Bearer {token}",
            "accept": "application/json, text/event-stream",
            **(headers or {}),
        },
        timeout=10,
    )


def _sse_message(text: str) -> dict:
    data = [line[5:].strip() for line in text.splitlines() if line.startswith("data:") and line[5:].strip()]
    return json.loads(data[-1])


def _events(db: Path, tenant: str) -> list[dict]:
    from tests.sqlite_raw import raw_sqlite

    with raw_sqlite(db) as conn:
        rows = conn.execute(
            "SELECT event FROM audit_events WHERE tenant = ? ORDER BY seq", (tenant,)
        ).fetchall()
    return [json.loads(r[0]) for r in rows]


def test_receipts_name_the_server_they_were_issued_for(two_servers: Gateway):
    """A receipt forwarded to billing says so: billing's verifier accepts it, the default server's refuses."""
    import httpx

    from authz.receipts import ReceiptError, ReceiptVerifier

    clerk = two_servers.token("multi", agent="billing-clerk")
    body = json.dumps(
        {
            "jsonrpc": "2.0",
            "id": 6,
            "method": "tools/call",
            "params": {"name": "list_invoices", "arguments": {}},
        }
    ).encode()
    answered = httpx.post(
        f"{two_servers.url}/v1/mcp/billing",
        content=body,
        headers={
            "authorization": f"Bearer {clerk}",
            "content-type": "application/json",
            "accept": "application/json, text/event-stream",
        },
        timeout=10,
    )
    assert answered.status_code == 200, answered.text
    host, port = two_servers.stack.mcp_servers["billing"]
    seen = httpx.get(f"http://{host}:{port}/_demo/requests", params={"path": "/mcp"}, timeout=5).json()
    decision = answered.headers["x-tessera-decision-id"]
    (forwarded,) = [r for r in seen["requests"] if r["headers"].get("x-tessera-decision-id") == [decision]]
    token = forwarded["headers"]["x-tessera-receipt"][0]
    keys = httpx.get(f"{two_servers.url}/v1/admin/receipt-keys", timeout=5).json()
    assert ReceiptVerifier(keys, server="billing").verify(token, body).server == "billing"
    with pytest.raises(ReceiptError, match="another tool server"):
        ReceiptVerifier(keys).verify(token, body)


async def test_a_servers_caveat_confines_a_token_to_its_servers(two_servers: Gateway):
    """``servers = billing``: the whole MCP session works at /v1/mcp/billing, and the same token is refused
    (-32010) at /v1/mcp, whose name in the caveat is ``default``."""
    clerk = two_servers.token("multi", agent="billing-clerk", extra_caveats=["servers = billing"])
    assert (await _session(two_servers, clerk, "/v1/mcp/billing"))[1] == "ok"
    for body in (
        {"jsonrpc": "2.0", "id": 1, "method": "tools/list"},
        {
            "jsonrpc": "2.0",
            "id": 2,
            "method": "tools/call",
            "params": {"name": "read_invoice", "arguments": {}},
        },
    ):
        error = two_servers.mcp(body, clerk).json()["error"]
        assert error["code"] == -32010 and "server 'default' not allowed" in error["data"]["reason"]
    both = two_servers.token("multi", agent="billing-clerk", extra_caveats=["servers = billing,default"])
    assert (await _session(two_servers, both, "/v1/mcp"))[1] == "ok"


def test_catalogs_are_per_server_for_lists_and_intent(two_servers: Gateway):
    """The same tool and prompt: listed and allowed at /v1/mcp, whose catalog has it; not listed and
    denied by intent (-32011) at /v1/mcp/billing, whose catalog names only its report."""
    token = two_servers.token("catalogs")
    listing = {"jsonrpc": "2.0", "id": 1, "method": "tools/list"}
    main = two_servers.mcp(listing, token).json()["result"]["tools"]
    assert {t["name"] for t in main} == {"read_invoice", "list_invoices"}
    billing = _sse_message(_post(two_servers, "/v1/mcp/billing", listing, token).text)["result"]["tools"]
    assert [t["name"] for t in billing] == ["slow_report"]
    show = {"X-Intent-Prompt": "show invoice INV-1001"}
    call = {
        "jsonrpc": "2.0",
        "id": 2,
        "method": "tools/call",
        "params": {"name": "read_invoice", "arguments": {"invoice_id": "INV-1001"}},
    }
    assert "result" in two_servers.mcp(call, token, headers=show).json()
    denied = _post(two_servers, "/v1/mcp/billing", call, token, headers=show).json()["error"]
    assert denied["code"] == -32011, denied
