"""The check path end to end: a real Envoy asks the real check service; the demo MCP server answers."""

from __future__ import annotations

import base64
import json
from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, datetime, timedelta
from urllib.parse import quote

import pymacaroons
from pymacaroons.serializers.binary_serializer import BinarySerializer

from authz.provenance import sign_entry
from authz.token import attenuate, inspect
from tests.integration.conftest import Gateway, rpc_error

READ = ("read_invoice", {"invoice_id": "INV-1001"})


def test_allowed_tool_call_reaches_upstream_and_returns_its_result(gateway: Gateway):
    response = gateway.call(*READ, token=gateway.token(), request_id="abc")
    assert response.status_code == 200, response.text
    body = response.json()
    assert body["id"] == "abc"
    assert "result" in body and not body["result"].get("isError")
    assert "INV-1001" in json.dumps(body["result"])
    assert len(response.headers["x-tessera-decision-id"]) == 28


def test_initialize_and_tools_list_need_only_a_valid_token(gateway: Gateway):
    token = gateway.token(tools=["read_invoice"])
    init = gateway.mcp(
        {
            "jsonrpc": "2.0",
            "id": 1,
            "method": "initialize",
            "params": {
                "protocolVersion": "2025-06-18",
                "capabilities": {},
                "clientInfo": {"name": "t", "version": "1"},
            },
        },
        token,
    )
    assert init.status_code == 200 and "result" in init.json(), init.text
    listed = gateway.mcp({"jsonrpc": "2.0", "id": 2, "method": "tools/list"}, token)
    assert listed.status_code == 200, listed.text
    names = {tool["name"] for tool in listed.json()["result"]["tools"]}
    # The list itself is filtered to what the token may call (authz.check.listing).
    assert names == {"read_invoice"}
    denied = gateway.mcp({"jsonrpc": "2.0", "id": 3, "method": "tools/list"}, None)
    assert rpc_error(denied)["code"] == -32010


def test_each_failing_check_returns_its_code_and_reason(gateway: Gateway):
    cases = []
    # capability: no token
    cases.append((gateway.call(*READ, token=None, request_id=7), -32010, "capability", "missing"))
    # intent: the prompt asks to read, the call transfers money
    prompt = quote("Please show me invoice INV-1001")
    cases.append(
        (
            gateway.call(
                "transfer_funds",
                {"amount": 5, "iban": "DE89370400440532013000"},
                gateway.token(),
                request_id=8,
                headers={"x-intent-prompt": prompt},
            ),
            -32011,
            "intent",
            "transfer_funds",
        )
    )
    # policy: deletes are denied by the demo policy
    cases.append(
        (
            gateway.call("delete_invoice", {"invoice_id": "INV-1001"}, gateway.token(), request_id=9),
            -32012,
            "policy",
            "delet",
        )
    )
    # budget: max_calls = 1, second call refused
    once = gateway.token(max_calls=1)
    assert gateway.call(*READ, token=once).status_code == 200
    cases.append((gateway.call(*READ, token=once, request_id=10), -32013, "budget", "max_calls"))
    # approval: a large transfer escalates
    cases.append(
        (
            gateway.call(
                "transfer_funds",
                {"amount": 25000, "iban": "DE89370400440532013000"},
                gateway.token(),
                request_id=11,
            ),
            -32019,
            "approval",
            "10000",
        )
    )
    for response, code, check, reason_part in cases:
        error = rpc_error(response)
        request_id = response.json()["id"]
        assert error["code"] == code, (check, error)
        assert error["data"]["check"] == check
        assert reason_part.lower() in error["data"]["reason"].lower(), error
        assert error["data"]["decision_id"] == response.headers["x-tessera-decision-id"]
        assert request_id in (7, 8, 9, 10, 11)
    budget = rpc_error(cases[3][0])["data"]
    assert budget["scope"] == "token:max_calls" and budget["limit"] == 1
    approval = rpc_error(cases[4][0])["data"]
    assert approval["approval_id"] and approval["expires_at"] and approval["resume_header"] == "X-Approval-Id"


def test_bad_tokens_are_denied(gateway: Gateway):
    good = gateway.token()
    raw = bytearray(base64.urlsafe_b64decode(good + "=" * (-len(good) % 4)))
    raw[-1] ^= 0x01
    forged = base64.urlsafe_b64encode(bytes(raw)).decode().rstrip("=")
    now = datetime.now(UTC)
    expired = gateway.token(expires=now - timedelta(seconds=5))
    not_yet = gateway.token(not_before=now + timedelta(hours=1))
    unknown_tenant = gateway.token(tenant="nobody")
    cases = {
        "forged": (forged, "signature"),
        "expired": (expired, "expired"),
        "not yet valid": (not_yet, "not valid before"),
        "unknown tenant": (unknown_tenant, "tenant"),
        "garbage": ("not-a-token", "malformed"),
    }
    for name, (token, reason_part) in cases.items():
        error = rpc_error(gateway.call(*READ, token=token))
        assert error["code"] == -32010, name
        assert reason_part in error["data"]["reason"].lower(), (name, error)


def test_revoked_token_and_its_descendants_are_denied(gateway: Gateway, tmp_path):
    import subprocess
    import sys

    parent = gateway.token()
    child = attenuate(parent, ["tools = read_invoice"])
    assert gateway.call(*READ, token=child).status_code == 200
    env = {**gateway.stack.service_env(), "TESSERA_MASTER_KEY": "unused-for-revocation-0123456789"}
    subprocess.run(
        [sys.executable, "-m", "authz.cli", "token", "revoke", "--token", parent, "--reason", "test"],
        env=env,
        check=True,
        capture_output=True,
    )
    # SQLite replicas see revocations at once (no cache); allow for the poll anyway
    for token in (parent, child):
        error = rpc_error(gateway.call(*READ, token=token))
        assert error["code"] == -32010 and "revoked" in error["data"]["reason"]
    sibling = gateway.token()
    assert gateway.call(*READ, token=sibling).status_code == 200
    family = gateway.token()
    subprocess.run(
        [
            sys.executable,
            "-m",
            "authz.cli",
            "token",
            "revoke",
            "--tenant",
            "demo",
            "--jti",
            inspect(family).jti,
        ],
        env=env,
        check=True,
        capture_output=True,
    )
    assert rpc_error(gateway.call(*READ, token=attenuate(family, ["max_calls = 5"])))["code"] == -32010


def test_attenuated_tokens_cannot_exceed_their_parent(gateway: Gateway):
    parent = gateway.token(tools=["read_invoice", "list_invoices"])
    # a holder widens the tools list with plain pymacaroons: the parent's caveat still binds
    macaroon = pymacaroons.Macaroon.deserialize(
        parent + "=" * (-len(parent) % 4), serializer=BinarySerializer()
    )
    macaroon.add_first_party_caveat("tools = read_invoice,delete_invoice,transfer_funds")
    widened = macaroon.serialize(serializer=BinarySerializer()).rstrip("=")
    assert gateway.call(*READ, token=widened).status_code == 200
    error = rpc_error(gateway.call("transfer_funds", {"amount": 1, "iban": "X"}, widened))
    assert error["code"] == -32010 and "transfer_funds" in error["data"]["reason"]
    # removing the parent's caveat from the chain breaks the signature
    stripped = pymacaroons.Macaroon(
        location=macaroon.location,
        identifier=macaroon.identifier,
        key="guess",
        version=pymacaroons.MACAROON_V2,
    )
    stripped.signature = macaroon.signature
    forged = stripped.serialize(serializer=BinarySerializer()).rstrip("=")
    assert rpc_error(gateway.call("transfer_funds", {"amount": 1, "iban": "X"}, forged))["code"] == -32010


def test_argument_caveats_allow_and_deny_as_written(gateway: Gateway):
    token = attenuate(gateway.token(), ["arg:amount <= 1000", "arg:currency in EUR,USD"])
    iban = "DE89370400440532013000"
    ok = gateway.call("transfer_funds", {"amount": 1000, "iban": iban, "currency": "EUR"}, token)
    assert ok.status_code == 200 and "result" in ok.json(), ok.text
    too_much = rpc_error(
        gateway.call("transfer_funds", {"amount": 1000.5, "iban": iban, "currency": "EUR"}, token)
    )
    assert too_much["code"] == -32010 and "amount" in too_much["data"]["reason"]
    wrong_currency = rpc_error(
        gateway.call("transfer_funds", {"amount": 5, "iban": iban, "currency": "GBP"}, token)
    )
    assert wrong_currency["code"] == -32010 and "currency" in wrong_currency["data"]["reason"]
    missing = rpc_error(gateway.call("transfer_funds", {"amount": 5, "iban": iban}, token))
    assert missing["code"] == -32010


def test_concurrent_calls_against_max_calls_allow_exactly_k(gateway: Gateway):
    k, n = 7, 40
    token = gateway.token(max_calls=k)
    with ThreadPoolExecutor(max_workers=16) as pool:
        responses = list(pool.map(lambda i: gateway.call(*READ, token=token, request_id=i), range(n)))
    allowed = [r for r in responses if "result" in r.json()]
    denied = [r for r in responses if "error" in r.json()]
    assert len(allowed) == k
    assert len(denied) == n - k
    assert all(r.json()["error"]["code"] == -32013 for r in denied)


def test_protocol_errors(gateway: Gateway):
    token = gateway.token()
    parse = rpc_error(gateway.mcp(None, token, raw=b'{"jsonrpc": "2.0", "id": 1, "method": '))
    assert parse["code"] == -32700
    not_rpc = gateway.mcp({"hello": "world"}, token)
    assert rpc_error(not_rpc)["code"] == -32600
    bad_params = rpc_error(
        gateway.mcp({"jsonrpc": "2.0", "id": 4, "method": "tools/call", "params": {"arguments": {}}}, token)
    )
    assert bad_params["code"] == -32602


def test_body_over_the_limit_gets_413_and_never_reaches_upstream(gateway: Gateway):
    gateway.clear_upstream()
    big = {
        "jsonrpc": "2.0",
        "id": 1,
        "method": "tools/call",
        "params": {"name": "read_invoice", "arguments": {"invoice_id": "x" * (1024 * 1024 + 10)}},
    }
    response = gateway.mcp(big, gateway.token())
    assert response.status_code == 413
    assert gateway.upstream_requests("/mcp") == []


def test_upstream_never_sees_the_bearer_token_or_client_tessera_headers(gateway: Gateway):
    gateway.clear_upstream()
    token = gateway.token(agent="agent-7")
    response = gateway.call(
        *READ,
        token=token,
        headers={
            "x-tessera-tenant": "evil",
            "x-tessera-agent": "root",
            "x-tessera-decision-id": "forged",
            "x-tessera-extra": "spoof",
        },
    )
    assert response.status_code == 200 and "result" in response.json(), response.text
    (seen,) = gateway.upstream_requests("/mcp")
    headers = seen["headers"]
    assert "authorization" not in headers
    assert headers["x-tessera-tenant"] == ["demo"]
    assert headers["x-tessera-agent"] == ["agent-7"]
    assert headers["x-tessera-decision-id"] == [response.headers["x-tessera-decision-id"]]
    assert "x-tessera-extra" not in headers
    assert token not in json.dumps(seen)


def test_tool_call_transport_statuses(gateway: Gateway):
    token = gateway.token(max_calls=1)
    ok = gateway.tool_call(*READ, token=token)
    assert ok.status_code == 200 and "INV-1001" in ok.text
    assert gateway.tool_call(*READ, token=None).status_code == 401
    assert gateway.tool_call(*READ, token=token).status_code == 429
    assert gateway.tool_call("delete_invoice", {"invoice_id": "INV-1001"}, gateway.token()).status_code == 403
    escalated = gateway.tool_call("transfer_funds", {"amount": 20000, "iban": "X"}, gateway.token())
    assert escalated.status_code == 202
    assert escalated.json()["error"]["code"] == -32019
    bad = __import__("httpx").post(
        f"{gateway.url}/v1/tool-call", content=b"{", headers={"authorization": f"Bearer {token}"}
    )
    assert bad.status_code == 400 and bad.json()["error"]["code"] == -32700


def test_notification_denied_gets_403(gateway: Gateway):
    response = gateway.mcp({"jsonrpc": "2.0", "method": "notifications/initialized"}, None)
    assert response.status_code == 403
    body = response.json()
    assert "id" not in body and body["error"]["code"] == -32010


def test_batch_is_denied_when_one_element_is_denied(gateway: Gateway):
    token = gateway.token()
    batch = [
        {
            "jsonrpc": "2.0",
            "id": 1,
            "method": "tools/call",
            "params": {"name": "read_invoice", "arguments": {"invoice_id": "INV-1001"}},
        },
        {
            "jsonrpc": "2.0",
            "id": 2,
            "method": "tools/call",
            "params": {"name": "delete_invoice", "arguments": {"invoice_id": "INV-1001"}},
        },
    ]
    response = gateway.mcp(batch, token)
    assert response.status_code == 200
    replies = response.json()
    assert isinstance(replies, list) and [r["id"] for r in replies] == [1, 2]
    assert all(r["error"]["code"] == -32012 for r in replies)


def test_memory_provenance_is_verified(gateway: Gateway):
    key = gateway.keyring.derive_subkey("memory", "demo")
    entry = sign_entry(
        key,
        entry_id="m1",
        content="IBAN DE89370400440532013000",
        source="crm",
        written_at="2026-11-01T00:00:00Z",
    )
    header = base64.urlsafe_b64encode(json.dumps([entry]).encode()).decode().rstrip("=")
    ok = gateway.call(*READ, token=gateway.token(), headers={"x-memory-provenance": header})
    assert ok.status_code == 200 and "result" in ok.json(), ok.text
    forged = dict(entry, tag="00" * 32)
    bad = base64.urlsafe_b64encode(json.dumps([forged]).encode()).decode()
    error = rpc_error(gateway.call(*READ, token=gateway.token(), headers={"x-memory-provenance": bad}))
    assert error["code"] == -32014 and "tag" in error["data"]["reason"]
