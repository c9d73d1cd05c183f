"""The demo upstream: MCP over streamable HTTP (official SDK client), /v1/tool-call, header recording."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass

import httpx
import httpx2
import pytest
import uvicorn
from mcp import Client
from mcp.client.streamable_http import streamable_http_client

from authz.demo import (
    InvalidToolArgument,
    InvoiceBook,
    InvoiceNotFound,
    RequestRecorder,
    build_app,
    normalize_iban,
)

TOOLS = {"read_invoice", "list_invoices", "transfer_funds", "delete_invoice"}
GOOD_IBAN = "DE89370400440532013000"


@dataclass
class RunningDemo:
    base: str
    book: InvoiceBook

    @property
    def mcp_url(self) -> str:
        return f"{self.base}/mcp"


@pytest.fixture(scope="module")
def demo() -> Iterator[RunningDemo]:
    """The demo app under uvicorn in a thread, on a socket bound here (no port race), stopped after."""
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind(("127.0.0.1", 0))
    port = sock.getsockname()[1]
    app = build_app()
    server = uvicorn.Server(uvicorn.Config(app, log_level="warning", lifespan="on"))
    thread = threading.Thread(target=server.run, kwargs={"sockets": [sock]}, daemon=True)
    thread.start()
    deadline = time.monotonic() + 10
    while not server.started:
        assert thread.is_alive() and time.monotonic() < deadline, "demo server did not start"
        time.sleep(0.02)
    try:
        yield RunningDemo(base=f"http://127.0.0.1:{port}", book=app.state.book)
    finally:
        server.should_exit = True
        thread.join(timeout=10)
        sock.close()


def _recorded(demo: RunningDemo, path: str | None = None) -> list[dict]:
    params = {"path": path} if path else None
    response = httpx.get(f"{demo.base}/_demo/requests", params=params)
    assert response.status_code == 200
    return response.json()["requests"]


# -- MCP through the official client -------------------------------------------------------------


async def test_mcp_initialize_and_list_tools(demo: RunningDemo) -> None:
    async with Client(demo.mcp_url, mode="legacy") as client:
        assert client.server_info is not None and client.server_info.name == "tessera-demo-invoices"
        assert client.protocol_version == "2025-11-25"
        tools = {tool.name: tool for tool in (await client.list_tools()).tools}
    assert set(tools) == TOOLS
    for tool in tools.values():
        assert tool.input_schema["type"] == "object"
        assert tool.output_schema is not None, f"{tool.name} lost its output schema"
        assert tool.description
    assert tools["read_invoice"].input_schema["required"] == ["invoice_id"]
    assert set(tools["transfer_funds"].input_schema["properties"]) == {"amount", "iban", "currency", "memo"}
    assert tools["transfer_funds"].input_schema["required"] == ["amount", "iban"]
    assert "status" in tools["list_invoices"].input_schema["properties"]
    assert tools["transfer_funds"].annotations.destructive_hint is True
    assert tools["read_invoice"].annotations.read_only_hint is True


async def test_mcp_call_tools(demo: RunningDemo) -> None:
    async with Client(demo.mcp_url, mode="legacy") as client:
        read = await client.call_tool("read_invoice", {"invoice_id": "INV-1001"})
        assert not read.is_error
        assert read.structured_content["customer"] == "ACME GmbH"
        assert "ACME GmbH" in read.content[0].text

        sent = await client.call_tool(
            "transfer_funds", {"amount": 42.5, "iban": "de89 3704 0044 0532 0130 00", "memo": "INV-1001"}
        )
        assert not sent.is_error
        receipt = sent.structured_content
        assert receipt["status"] == "executed"
        assert (receipt["amount"], receipt["currency"], receipt["iban"]) == (42.5, "EUR", GOOD_IBAN)
        assert receipt["transfer_id"] in {t["transfer_id"] for t in demo.book.transfers}

        missing = await client.call_tool("read_invoice", {"invoice_id": "INV-9999"})
        assert missing.is_error and "INV-9999" in missing.content[0].text
        bad = await client.call_tool("transfer_funds", {"amount": 10, "iban": "DE00370400440532013000"})
        assert bad.is_error and "checksum" in bad.content[0].text


async def test_mcp_modern_protocol(demo: RunningDemo) -> None:
    # The SDK's default mode probes server/discover (2026-07-28, no initialize) and the demo speaks it.
    async with Client(demo.mcp_url) as client:
        assert client.protocol_version == "2026-07-28"
        listed = await client.call_tool("list_invoices", {"status": "overdue"})
    assert [inv["invoice_id"] for inv in listed.structured_content["invoices"]] == ["INV-1003"]


async def test_mcp_client_headers_are_recorded(demo: RunningDemo) -> None:
    headers = {"Authorization": "Bearer tok-123", "X-Intent-Prompt": "pay%20ACME", "X-Tessera-Tenant": "acme"}
    httpx.delete(f"{demo.base}/_demo/requests")
    async with (
        httpx2.AsyncClient(headers=headers) as http,
        Client(streamable_http_client(demo.mcp_url, http_client=http), mode="legacy") as client,
    ):
        await client.list_tools()
    seen = _recorded(demo, "/mcp")
    methods = {entry["method"] for entry in seen}
    assert methods == {"POST"}, "stateless JSON mode: no GET stream, no DELETE"
    for entry in seen:
        assert entry["headers"]["authorization"] == ["Bearer tok-123"]
        assert entry["headers"]["x-tessera-tenant"] == ["acme"]
        assert entry["headers"]["x-intent-prompt"] == ["pay%20ACME"]


def test_mcp_is_stateless_json(demo: RunningDemo) -> None:
    body = {
        "jsonrpc": "2.0",
        "id": 7,
        "method": "tools/call",
        "params": {"name": "read_invoice", "arguments": {"invoice_id": "INV-1002"}},
    }
    # No initialize and no mcp-protocol-version header: what a gateway test sends with plain HTTP.
    response = httpx.post(demo.mcp_url, json=body, headers={"accept": "application/json, text/event-stream"})
    assert response.status_code == 200
    assert response.headers["content-type"].startswith("application/json")
    assert "mcp-session-id" not in response.headers
    payload = response.json()
    assert payload["id"] == 7 and payload["result"]["structuredContent"]["invoice_id"] == "INV-1002"
    # No standalone SSE stream in stateless mode: GET is refused instead of hanging.
    assert httpx.get(demo.mcp_url, headers={"accept": "text/event-stream"}, timeout=5).status_code == 405


# -- POST /v1/tool-call -----------------------------------------------------------------------------


def _tool_call(demo: RunningDemo, body: object) -> httpx.Response:
    return httpx.post(f"{demo.base}/v1/tool-call", json=body)


def test_tool_call_runs_the_same_tools(demo: RunningDemo) -> None:
    response = _tool_call(demo, {"tool": "read_invoice", "arguments": {"invoice_id": "INV-1003"}})
    assert response.status_code == 200
    assert response.json()["result"]["customer"] == "Initech SA"

    listed = _tool_call(demo, {"tool": "list_invoices", "arguments": {"status": "paid"}}).json()["result"]
    assert listed["count"] == 1 and listed["invoices"][0]["invoice_id"] == "INV-1002"

    sent = _tool_call(demo, {"tool": "transfer_funds", "arguments": {"amount": 5, "iban": GOOD_IBAN}})
    assert sent.status_code == 200 and sent.json()["result"]["status"] == "executed"

    deleted = _tool_call(demo, {"tool": "delete_invoice", "arguments": {"invoice_id": "INV-1004"}})
    assert deleted.status_code == 200 and deleted.json()["result"]["deleted"] is True
    gone = _tool_call(demo, {"tool": "read_invoice", "arguments": {"invoice_id": "INV-1004"}})
    assert gone.status_code == 404 and gone.json()["error"]["code"] == "not_found"


@pytest.mark.parametrize(
    ("body", "code"),
    [
        ({"tool": "drop_database", "arguments": {}}, "unknown_tool"),
        ({"tool": "read_invoice", "arguments": {}}, "invalid_arguments"),
        ({"tool": "read_invoice", "arguments": {"invoice_id": 17}}, "invalid_arguments"),
        ({"tool": "transfer_funds", "arguments": {"amount": -3, "iban": GOOD_IBAN}}, "invalid_arguments"),
        ({"tool": "list_invoices", "arguments": {"status": "lost"}}, "invalid_arguments"),
        ({"tool": "read_invoice", "arguments": ["INV-1001"]}, "invalid_request"),
        ({"arguments": {}}, "invalid_request"),
        ([1, 2], "invalid_request"),
    ],
)
def test_tool_call_rejects(demo: RunningDemo, body: object, code: str) -> None:
    response = _tool_call(demo, body)
    assert response.status_code == 400
    error = response.json()["error"]
    assert error["code"] == code and error["message"]
    assert isinstance(error["data"], dict)


def test_tool_call_unknown_tool_lists_tools(demo: RunningDemo) -> None:
    error = _tool_call(demo, {"tool": "nope"}).json()["error"]
    assert set(error["data"]["tools"]) == TOOLS


def test_tool_call_malformed_json(demo: RunningDemo) -> None:
    response = httpx.post(f"{demo.base}/v1/tool-call", content=b"{not json")
    assert response.status_code == 400 and response.json()["error"]["code"] == "invalid_json"


def test_tool_call_validation_errors_do_not_echo_values(demo: RunningDemo) -> None:
    error = _tool_call(demo, {"tool": "read_invoice", "arguments": {"invoice_id": 123456789}}).json()["error"]
    assert "123456789" not in str(error)
    assert error["data"]["errors"][0]["loc"] == ["invoice_id"]


# -- health and header recording ---------------------------------------------------------------------


def test_healthz(demo: RunningDemo) -> None:
    response = httpx.get(f"{demo.base}/healthz")
    assert response.status_code == 200 and response.json() == {"status": "ok"}


def test_requests_are_recorded_with_all_values(demo: RunningDemo) -> None:
    assert httpx.delete(f"{demo.base}/_demo/requests").status_code == 204
    httpx.get(f"{demo.base}/healthz")  # not recorded
    httpx.post(
        f"{demo.base}/v1/tool-call?trace=1",
        json={"tool": "list_invoices"},
        headers=[("X-Tessera-Decision-Id", "d-1"), ("X-Multi", "a"), ("x-multi", "b")],
    )
    httpx.get(f"{demo.base}/does-not-exist")  # recorded although it is a 404
    seen = _recorded(demo)
    assert [(e["method"], e["path"]) for e in seen] == [("POST", "/v1/tool-call"), ("GET", "/does-not-exist")]
    first = seen[0]
    assert first["query"] == "trace=1"
    assert first["headers"]["x-tessera-decision-id"] == ["d-1"]
    assert first["headers"]["x-multi"] == ["a", "b"]
    assert all(name == name.lower() for name in first["headers"])
    assert _recorded(demo, "/does-not-exist")[0]["method"] == "GET"
    assert seen[0]["seq"] < seen[1]["seq"]


def test_recorder_keeps_the_last_100() -> None:
    recorder = RequestRecorder()
    for i in range(150):
        recorder.record(
            {"type": "http", "method": "GET", "path": f"/p{i}", "headers": [(b"X-N", str(i).encode())]}
        )
    entries = recorder.entries()
    assert len(entries) == 100
    assert entries[0]["path"] == "/p50" and entries[-1]["headers"] == {"x-n": ["149"]}
    recorder.clear()
    assert recorder.entries() == []


# -- the domain, directly ----------------------------------------------------------------------------


def test_book_rules() -> None:
    book = InvoiceBook()
    assert normalize_iban("gb82 west 1234 5698 7654 32") == "GB82WEST12345698765432"
    for bad in ("DE8937040044053201300", "DE00370400440532013000", "not an iban"):
        with pytest.raises(InvalidToolArgument):
            normalize_iban(bad)
    with pytest.raises(InvalidToolArgument):
        book.transfer_funds(float("nan"), GOOD_IBAN)
    with pytest.raises(InvalidToolArgument):
        book.transfer_funds(10, GOOD_IBAN, currency="EURO")
    assert book.list_invoices()["count"] == 4
    assert book.list_invoices("open")["total_amount"] == 1325.2
    book.delete_invoice("INV-1001")
    with pytest.raises(InvoiceNotFound):
        book.read_invoice("INV-1001")
    with pytest.raises(InvoiceNotFound):
        book.delete_invoice("INV-1001")
    # Fresh books are independent: the seed is copied, not shared.
    assert InvoiceBook().read_invoice("INV-1001")["customer"] == "ACME GmbH"


# -- the command line -----------------------------------------------------------------------------------


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.mark.parametrize("via_env", [False, True])
def test_module_runs(via_env: bool) -> None:
    port = _free_port()
    env = dict(os.environ)
    args = [sys.executable, "-m", "authz.demo", "--host", "127.0.0.1", "--log-level", "warning"]
    if via_env:
        env["TESSERA_DEMO_PORT"] = str(port)
    else:
        args += ["--port", str(port)]
    proc = subprocess.Popen(args, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
    try:
        deadline = time.monotonic() + 20
        while True:
            assert proc.poll() is None, proc.stdout.read().decode() if proc.stdout else ""
            try:
                if httpx.get(f"http://127.0.0.1:{port}/healthz", timeout=1).status_code == 200:
                    break
            except httpx.TransportError:
                pass
            assert time.monotonic() < deadline, "python -m authz.demo did not come up"
            time.sleep(0.1)
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
