"""tools/list through real Envoy shows each caller only the tools it may call (the list processor).

The stack runs the check service's ExternalProcessor behind Envoy's ext_proc filter on the list route;
clients are the official `mcp` SDK client and plain HTTP. A second stack points Envoy's list processor
at a broken stand-in (named as such below) to show that a failing processor never leaks the list.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from pathlib import Path

import grpc
import httpx
import httpx2
import pytest
from envoy.service.ext_proc.v3 import external_processor_pb2_grpc
from mcp import ClientSession
from mcp.client.streamable_http import streamable_http_client

from authz.demo import __file__ as demo_init
from authz.local.stack import free_port
from authz.server.ext_proc import withheld_response
from authz.token import attenuate
from tests.integration.conftest import Gateway, start_gateway
from tests.opa_standin import OpaStandIn

DEMO_TOOLS = {"read_invoice", "list_invoices", "transfer_funds", "delete_invoice"}

# Every demo tool may be called, except that interns may not delete invoices.
LISTING_POLICY = """
package tessera
import rego.v1
default decision := {"allow": false, "reason": "default deny"}
demo_tools := {"read_invoice", "list_invoices", "transfer_funds", "delete_invoice"}
intern_delete if {
    input.tool == "delete_invoice"
    input.agent == "intern"
}
decision := {"allow": true, "reason": "demo tool"} if {
    input.tool in demo_tools
    not intern_delete
}
decision := {"allow": false, "reason": "interns may not delete invoices"} if intern_delete
"""


def _tenants_file(workdir: Path, opa_url: str) -> Path:
    demo_dir = Path(demo_init).parent
    (workdir / "listing.rego").write_text(LISTING_POLICY)
    shipped = (demo_dir / "tenants.yaml").read_text()
    # The shipped demo tenants (paths made absolute) plus a tenant with the listing policy, and one with
    # the same policy decided by an OPA server.
    text = shipped.replace("../", f"{demo_dir.parent}/")
    text += f'  listing:\n    intent:\n      mode: "off"\n    policy: {workdir / "listing.rego"}\n'
    text += (
        '  listing-opa:\n    intent:\n      mode: "off"\n'
        f"    policy: {{engine: opa, url: {opa_url}, timeout_ms: 2000, source: {workdir / 'listing.rego'}}}\n"
    )
    path = workdir / "tenants.yaml"
    path.write_text(text)
    return path


@pytest.fixture(scope="module")
def opa_server() -> Iterator[OpaStandIn]:
    """The OPA server of tenant ``listing-opa``: ``tests.opa_standin.OpaStandIn``, a STAND-IN for OPA
    (OPA's REST API over the regorus engine; no OPA binary can be installed here)."""
    with OpaStandIn() as opa:
        yield opa


@pytest.fixture(scope="module")
def listing_gateway(tmp_path_factory: pytest.TempPathFactory, opa_server: OpaStandIn) -> Iterator[Gateway]:
    workdir = tmp_path_factory.mktemp("listing")
    tenants = _tenants_file(workdir, opa_server.url)
    stack, gw = start_gateway(workdir, env={"TESSERA_TENANTS_FILE": str(tenants)})
    try:
        yield gw
    finally:
        stack.stop()


async def _listed(gateway: Gateway, token: str) -> set[str]:
    async with (
        httpx2.AsyncClient(headers={"Authorization": f"Bearer {token}"}, timeout=10) as http,
        streamable_http_client(f"{gateway.url}/v1/mcp", http_client=http) as streams,
        ClientSession(streams[0], streams[1]) as session,
    ):
        await session.initialize()
        return {tool.name for tool in (await session.list_tools()).tools}


def _processor_streams(gateway: Gateway) -> int:
    name = "http.tessera_ingress.ext_proc.tessera_list.streams_started"
    return int(gateway.stack.envoy.stats(name).get(name, 0))


async def test_a_full_token_lists_the_four_demo_tools(listing_gateway: Gateway):
    assert await _listed(listing_gateway, listing_gateway.token("listing")) == DEMO_TOOLS


async def test_a_token_attenuated_to_read_invoice_lists_only_read_invoice(listing_gateway: Gateway):
    narrowed = attenuate(listing_gateway.token("listing"), ["tools = read_invoice"])
    assert await _listed(listing_gateway, narrowed) == {"read_invoice"}


async def test_a_policy_that_denies_delete_invoice_to_an_agent_hides_it_from_that_agent(
    listing_gateway: Gateway,
):
    assert await _listed(listing_gateway, listing_gateway.token("listing", agent="intern")) == (
        DEMO_TOOLS - {"delete_invoice"}
    )
    # ... and from nobody else.
    assert await _listed(listing_gateway, listing_gateway.token("listing", agent="clerk")) == DEMO_TOOLS


async def test_an_opa_tenant_gets_the_list_its_opa_policy_allows(listing_gateway: Gateway, opa_server):
    """A tenant whose policy is decided by an OPA server gets its tools/list filtered by OPA's list-phase
    decisions (the same as the embedded tenant above), not an error."""
    assert await _listed(listing_gateway, listing_gateway.token("listing-opa", agent="intern")) == (
        DEMO_TOOLS - {"delete_invoice"}
    )
    assert await _listed(listing_gateway, listing_gateway.token("listing-opa", agent="clerk")) == DEMO_TOOLS
    listed_by_opa = {i["tool"] for i in opa_server.inputs if i.get("phase") == "list"}
    assert listed_by_opa >= DEMO_TOOLS


def test_the_demo_policy_lists_what_may_pass_and_hides_what_never_does(listing_gateway: Gateway):
    # delete_invoice: every call is denied, so it is hidden; transfer_funds: the amount decides, so it
    # is listed although a call without arguments would be denied.
    response = listing_gateway.mcp(
        {"jsonrpc": "2.0", "id": "l-1", "method": "tools/list"}, listing_gateway.token()
    )
    assert response.status_code == 200, response.text
    body = response.json()
    assert body["id"] == "l-1"
    assert {t["name"] for t in body["result"]["tools"]} == DEMO_TOOLS - {"delete_invoice"}
    assert "content-length" not in response.headers or int(response.headers["content-length"]) == len(
        response.content
    )


def test_tool_calls_do_not_pass_the_list_processor(listing_gateway: Gateway):
    token = listing_gateway.token("listing")
    before = _processor_streams(listing_gateway)
    called = listing_gateway.call("read_invoice", {"invoice_id": "INV-1001"}, token=token)
    assert called.status_code == 200 and "result" in called.json(), called.text
    assert _processor_streams(listing_gateway) == before
    listing_gateway.mcp({"jsonrpc": "2.0", "id": 2, "method": "tools/list"}, token)
    assert _processor_streams(listing_gateway) == before + 1


def test_a_list_request_without_a_token_is_denied_before_the_upstream(listing_gateway: Gateway):
    response = listing_gateway.mcp({"jsonrpc": "2.0", "id": 3, "method": "tools/list"}, None)
    assert response.json()["error"]["code"] == -32010
    assert "read_invoice" not in response.text


# -- a broken processor ---------------------------------------------------------------------------------


class BrokenProcessor(external_processor_pb2_grpc.ExternalProcessorServicer):
    """Stand-in for a failing list processor (Tessera's own never misbehaves on demand): it aborts the
    stream with a gRPC error, stalls past Envoy's message timeout, or withholds the list with Tessera's
    own JSON-RPC error reply, as ``mode`` says."""

    mode = "abort"

    def Process(self, request_iterator, context):
        next(request_iterator)
        if self.mode == "withhold":  # what Tessera's processor answers when it cannot filter
            yield withheld_response(None, "stand-in withholds the list")
            return
        if self.mode == "stall":
            time.sleep(3)
        context.abort(grpc.StatusCode.INTERNAL, "processor broken")


@pytest.fixture(scope="module")
def broken_gateway(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[Gateway, BrokenProcessor]]:
    from concurrent.futures import ThreadPoolExecutor

    processor = BrokenProcessor()
    server = grpc.server(ThreadPoolExecutor(max_workers=4))
    external_processor_pb2_grpc.add_ExternalProcessorServicer_to_server(processor, server)
    port = free_port()
    server.add_insecure_port(f"127.0.0.1:{port}")
    server.start()
    stack, gw = start_gateway(tmp_path_factory.mktemp("broken"), list_endpoints=[("127.0.0.1", port)])
    gw.broken_server = server  # type: ignore[attr-defined]
    try:
        yield gw, processor
    finally:
        stack.stop()
        server.stop(0)


def _assert_withheld(response: httpx.Response, request_id: object) -> None:
    assert response.status_code == 200, response.text
    assert response.headers["content-type"].startswith("application/json")
    body = response.json()
    assert body["id"] == request_id
    assert body["error"]["code"] == -32018 and body["error"]["data"]["check"] == "unavailable"
    for tool in DEMO_TOOLS:
        assert tool not in response.text


#: The shipped config's CORS origin (the MCP Inspector).
BROWSER_ORIGIN = "http://localhost:6274"


@pytest.mark.parametrize("mode", ["abort", "stall", "withhold"])
def test_a_failing_processor_answers_a_json_rpc_error_never_the_list(broken_gateway, mode):
    gateway, processor = broken_gateway
    processor.mode = mode
    response = gateway.mcp(
        {"jsonrpc": "2.0", "id": 41, "method": "tools/list"},
        gateway.token(),
        headers={"origin": BROWSER_ORIGIN},
    )
    _assert_withheld(response, None if mode == "withhold" else 41)
    # A browser client can read the error (CORS headers on Envoy's local reply too) ...
    assert response.headers.get("access-control-allow-origin") == BROWSER_ORIGIN, response.headers
    assert "mcp-session-id" in response.headers["access-control-expose-headers"]
    # ... from an allowed origin only.
    other = gateway.mcp(
        {"jsonrpc": "2.0", "id": 42, "method": "tools/list"},
        gateway.token(),
        headers={"origin": "http://evil.example"},
    )
    _assert_withheld(other, None if mode == "withhold" else 42)
    assert "access-control-allow-origin" not in other.headers
    # Tool calls do not depend on the processor.
    assert "result" in gateway.call("read_invoice", {"invoice_id": "INV-1001"}, token=gateway.token()).json()


@pytest.mark.parametrize(("mode", "status"), [("abort", 503), ("stall", 504)])
def test_a_get_stream_the_processor_fails_on_is_a_5xx_not_a_json_rpc_200(broken_gateway, mode, status):
    # 503 (status_on_error) when the processor fails, 504 when it times out (Envoy's own status).
    gateway, processor = broken_gateway
    processor.mode = mode
    response = httpx.get(
        f"{gateway.url}/v1/mcp",
        headers={"accept": "text/event-stream", "authorization": f"Bearer {gateway.token()}"},
        timeout=10,
    )
    assert response.status_code == status, (response.status_code, response.text)
    for tool in DEMO_TOOLS:
        assert tool not in response.text


def test_an_unreachable_processor_answers_a_json_rpc_error_never_the_list(broken_gateway):
    gateway, _ = broken_gateway
    gateway.broken_server.stop(0).wait()  # type: ignore[attr-defined]
    response = gateway.mcp(
        {"jsonrpc": "2.0", "id": "x", "method": "tools/list"},
        gateway.token(),
        headers={"origin": BROWSER_ORIGIN},
    )
    _assert_withheld(response, "x")
    assert response.headers.get("access-control-allow-origin") == BROWSER_ORIGIN, response.headers


async def test_the_mcp_client_gets_an_error_not_the_list_when_the_processor_fails(broken_gateway):
    gateway, processor = broken_gateway
    processor.mode = "abort"
    with pytest.raises(BaseException) as raised:
        await _listed(gateway, gateway.token())
    assert "-32018" in repr(raised.value) or "authorization unavailable" in repr(raised.value)


# -- listChanged: a promotion changes the next list, and a stale list never lets a call through --------------

DENY_DELETE = LISTING_POLICY.replace('input.agent == "intern"', "true")


def test_after_a_promotion_the_next_list_changes_and_a_stale_list_grants_nothing(listing_gateway: Gateway):
    from tests.integration.admin_support import AdminGateway

    admin = AdminGateway(listing_gateway.stack, listing_gateway, root=listing_gateway.stack.admin_key)
    key = listing_gateway.stack.admin_key
    admin.ok("TenantService/CreateTenant", {"tenant": "relist"}, key=key)
    admin.ok("PolicyService/PromotePolicy", {"tenant": "relist", "source": LISTING_POLICY}, key=key)
    token = listing_gateway.token("relist", agent="clerk")

    def names() -> set[str]:
        body = listing_gateway.mcp({"jsonrpc": "2.0", "id": 1, "method": "tools/list"}, token).json()
        return {t["name"] for t in body.get("result", {}).get("tools", [])}

    deadline = time.monotonic() + 15  # the check service picks the promotion up by polling the store
    while names() != DEMO_TOOLS:
        assert time.monotonic() < deadline, names()
        time.sleep(0.2)
    stale = names()  # what a client holds before the next promotion
    admin.ok("PolicyService/PromotePolicy", {"tenant": "relist", "source": DENY_DELETE}, key=key)
    deadline = time.monotonic() + 15
    while "delete_invoice" in names():
        assert time.monotonic() < deadline
        time.sleep(0.2)
    assert names() == DEMO_TOOLS - {"delete_invoice"}
    # The client that still holds the stale list calls what it lists: the call is decided anew, denied.
    assert "delete_invoice" in stale
    denied = listing_gateway.call("delete_invoice", {"invoice_id": "INV-1001"}, token=token)
    assert denied.json()["error"]["code"] == -32012, denied.text
    # Rolled back, the tool is listed again at the next list.
    admin.ok("PolicyService/RollbackPolicy", {"tenant": "relist"}, key=key)
    deadline = time.monotonic() + 15
    while names() != DEMO_TOOLS:
        assert time.monotonic() < deadline, names()
        time.sleep(0.2)
