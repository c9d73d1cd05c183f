"""Signed receipts through the real stack: Envoy, the check and admin services, the demo MCP server behind
``authz.receipts.ReceiptMiddleware`` (ARCHITECTURE §8).

The tool server refuses what did not pass Tessera: a direct call without a receipt, a receipt copied
onto another body, a replayed or expired one; a key rotation keeps receipts of the previous key valid
until they expire."""

from __future__ import annotations

import json
import time
from collections.abc import Iterator

import httpx
import pytest

from authz.receipts import ReceiptSigner, ReceiptVerifier, body_sha256, derived_keys
from tests.integration.conftest import Gateway, start_gateway

READ = ("read_invoice", {"invoice_id": "INV-1001"})
DELETE_BODY = {
    "jsonrpc": "2.0",
    "id": 7,
    "method": "tools/call",
    "params": {"name": "delete_invoice", "arguments": {"invoice_id": "INV-1002"}},
}
MCP_HEADERS = {"content-type": "application/json", "accept": "application/json, text/event-stream"}


@pytest.fixture(scope="module")
def gw(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Gateway]:
    stack, gateway = start_gateway(tmp_path_factory.mktemp("receipts"))
    try:
        yield gateway
    finally:
        stack.stop()


def forwarded_receipt(gw: Gateway, answered: httpx.Response) -> tuple[str, dict]:
    """The receipt on the request the demo server saw for ``answered`` (found by its decision id: the
    intent catalog's own tools/list fetches reach the server too), and that request's record."""
    decision = answered.headers["x-tessera-decision-id"]
    (seen,) = [
        r for r in gw.upstream_requests("/mcp") if r["headers"].get("x-tessera-decision-id") == [decision]
    ]
    return seen["headers"]["x-tessera-receipt"][0], seen


def direct(gw: Gateway, body: bytes, receipt: str | None = None) -> httpx.Response:
    headers = dict(MCP_HEADERS)
    if receipt is not None:
        headers["x-tessera-receipt"] = receipt
    return httpx.post(f"{gw.stack.upstream_url}/mcp", content=body, headers=headers, timeout=10)


def test_an_allowed_call_carries_a_receipt_bound_to_its_body_and_audit_position(gw: Gateway):
    gw.clear_upstream()
    body = _body_of()
    response = gw.mcp(None, gw.token(), raw=body)
    assert response.status_code == 200 and "result" in response.json(), response.text
    token, _ = forwarded_receipt(gw, response)
    keys = httpx.get(f"{gw.url}/v1/admin/receipt-keys", timeout=5)  # through Envoy, no admin key
    assert keys.status_code == 200, keys.text
    verifier = ReceiptVerifier(keys.json())
    receipt = verifier.verify(token, body)  # our own verifier: a fresh replay cache
    assert receipt.body_sha256 == body_sha256(body)
    assert (receipt.tenant, receipt.agent, receipt.tool) == ("demo", "agent-1", "read_invoice")
    assert receipt.decision_id == response.headers["x-tessera-decision-id"]
    assert receipt.exp - receipt.iat == 60
    # The allow was audited before the answer, at the place the receipt names.
    page = httpx.get(
        f"{gw.url}/v1/admin/tenants/demo/audit/events",
        params={"page_size": 1, "page_token": str(receipt.audit_seq - 1)},  # the page starts after it
        headers={"authorization": f"Bearer {gw.stack.admin_key}"},
        timeout=10,
    )
    assert page.status_code == 200, page.text[:300]
    (event,) = [e for e in page.json()["events"] if int(e["seq"]) == receipt.audit_seq]
    assert event["hash"] == receipt.audit_hash
    assert event["event"]["tessera"]["decision_id"] == receipt.decision_id


def test_a_direct_call_without_a_receipt_is_refused_before_the_tool_runs(gw: Gateway):
    refused = direct(gw, json.dumps(DELETE_BODY).encode())
    assert refused.status_code == 403
    assert refused.json()["error"]["code"] == "receipt_missing"
    plain = httpx.post(
        f"{gw.stack.upstream_url}/v1/tool-call", json={"tool": "delete_invoice", "arguments": {}}, timeout=10
    )
    assert plain.status_code == 403
    # The invoice the refused call would have deleted is still there.
    still = gw.call("read_invoice", {"invoice_id": "INV-1002"}, token=gw.token())
    assert still.status_code == 200 and "result" in still.json(), still.text


def test_a_receipt_copied_onto_another_body_or_replayed_is_refused(gw: Gateway):
    gw.clear_upstream()
    allowed = gw.call(*READ, token=gw.token())
    assert allowed.status_code == 200 and "result" in allowed.json(), allowed.text
    token, _ = forwarded_receipt(gw, allowed)
    swapped = direct(gw, json.dumps(DELETE_BODY).encode(), token)
    assert swapped.status_code == 403 and swapped.json()["error"]["code"] == "receipt_wrong_body"
    replayed = direct(gw, _body_of(), token)  # the very bytes the gateway forwarded
    assert replayed.status_code == 403 and replayed.json()["error"]["code"] == "receipt_replayed"


def test_a_client_cannot_bring_its_own_receipt_through_the_gateway(gw: Gateway):
    """Envoy strips client x-tessera-* headers: a receipt the client sends never reaches the tool."""
    gw.clear_upstream()
    response = gw.call(*READ, token=gw.token(), headers={"x-tessera-receipt": "forged.receipt.value"})
    assert response.status_code == 200 and "result" in response.json(), response.text
    token, _ = forwarded_receipt(gw, response)
    assert token != "forged.receipt.value" and token.count(".") == 2


def _restart_with(gw: Gateway, kids: str) -> None:
    stack = gw.stack
    assert stack.admin is not None
    stack.admin.stop()
    stack.admin.env["TESSERA_RECEIPT_KIDS"] = kids
    stack.admin.start()
    for replica in stack.checks:
        replica.stop()
        replica.env["TESSERA_RECEIPT_KIDS"] = kids
        replica.start()


def test_rotation_keeps_receipts_of_the_previous_key_valid_until_they_expire(gw: Gateway):
    old_key = derived_keys(["r1"], gw.keyring.derive_subkey)[0]
    body = json.dumps(
        {"jsonrpc": "2.0", "id": 9, "method": "tools/call", "params": {"name": READ[0], "arguments": READ[1]}}
    ).encode()

    def old_receipt(issued_at: float, decision_id: str) -> str:
        # What a check replica still on r1 signed just before the switch (same derived key).
        signer = ReceiptSigner(old_key, ttl_s=60, clock=lambda: issued_at)
        return signer.issue(
            tenant="demo",
            agent="agent-1",
            tool="read_invoice",
            body=body,
            decision_id=decision_id,
            audit_seq=None,
            audit_hash=None,
        )

    try:
        _restart_with(gw, "r2,r1")
        published = httpx.get(f"{gw.url}/v1/admin/receipt-keys", timeout=5).json()
        assert [k["kid"] for k in published["keys"]] == ["r2", "r1"]
        time.sleep(1.1)  # the demo server refetches the key set at most every second
        gw.clear_upstream()
        rotated = gw.call(*READ, token=gw.token())
        assert rotated.status_code == 200 and "result" in rotated.json(), rotated.text
        token, _ = forwarded_receipt(gw, rotated)
        assert ReceiptVerifier(published).verify(token, _body_of()).kid == "r2"
        # In flight across the switch: signed under r1, not yet expired -> the tool server accepts it.
        accepted = direct(gw, body, old_receipt(time.time() - 5, "in-flight"))
        assert accepted.status_code == 200 and "result" in accepted.json(), accepted.text
        expired = direct(gw, body, old_receipt(time.time() - 120, "too-old"))
        assert expired.status_code == 403 and expired.json()["error"]["code"] == "receipt_expired"
        # Once r1 is no longer published, its receipts stop verifying.
        _restart_with(gw, "r2")
        retired = httpx.get(f"{gw.url}/v1/admin/receipt-keys", timeout=5).json()
        assert [k["kid"] for k in retired["keys"]] == ["r2"]
        with pytest.raises(Exception, match="unknown key"):
            ReceiptVerifier(retired).verify(old_receipt(time.time(), "after"), body)
    finally:
        _restart_with(gw, "r1")


def _body_of() -> bytes:
    """The body ``Gateway.call(*READ)`` sends."""
    return json.dumps(
        {"jsonrpc": "2.0", "id": 1, "method": "tools/call", "params": {"name": READ[0], "arguments": READ[1]}}
    ).encode()


def test_tesseras_own_catalog_fetch_carries_a_receipt_the_guarded_tool_server_accepts(gw: Gateway):
    """The intent catalog's tools/list goes straight to the tool server, not through Envoy: it carries a
    receipt Tessera signs for itself (agent ``tessera:self``), or a server that demands receipts would
    refuse it and the catalog would never be derived."""
    import asyncio

    from authz.config import ReceiptConfig
    from authz.errors import DependencyError
    from authz.intent import fetch_tools_list
    from authz.outbound import OutboundClient, OutboundPolicy
    from authz.receipts import SELF_AGENT, self_receipt_issuer
    from authz.receipts._format import parse

    url = f"{gw.stack.upstream_url}/mcp"

    async def fetch(receipt_for):
        async with OutboundClient(OutboundPolicy.build(["127.0.0.0/8"])) as outbound:
            return await fetch_tools_list(url, outbound=outbound, timeout_s=10, receipt_for=receipt_for)

    with pytest.raises(DependencyError):  # the server refuses a session without receipts
        asyncio.run(fetch(None))
    gw.clear_upstream()
    listed = asyncio.run(fetch(self_receipt_issuer(ReceiptConfig(), gw.keyring.derive_subkey)))
    assert sorted(t["name"] for t in listed["tools"]) == [
        "delete_invoice",
        "list_invoices",
        "read_invoice",
        "transfer_funds",
    ]
    seen = gw.upstream_requests("/mcp", include_tessera=True)
    assert seen, "the demo server recorded no request"
    # each request of the session carried its own receipt (the server verified each: it answered)
    for record in seen:
        (token,) = record["headers"]["x-tessera-receipt"]
        receipt, _, _ = parse(token)
        assert receipt.agent == SELF_AGENT and receipt.tool is None, receipt
        assert receipt.decision_id.startswith("catalog-")
    # and the stack's own refresher derived the demo tenant's catalog from that guarded server
    log = gw.stack.workdir / "check-0.log"
    deadline = time.monotonic() + 30
    while "tenant demo: catalog refreshed from" not in log.read_text():
        assert time.monotonic() < deadline, "the check service never derived the demo catalog"
        time.sleep(0.5)
