"""The wire layer: CheckRequest parsing and CheckResponse shapes (ARCHITECTURE §2)."""

from __future__ import annotations

import json
import subprocess
import sys

from envoy.config.core.v3 import base_pb2
from envoy.service.auth.v3 import external_auth_pb2
from google.rpc import code_pb2

from authz.check import Check, Decision, Outcome
from authz.server import wire


def request(body: bytes = b"", *, path="/v1/mcp", method="POST", route="mcp", headers=None, raw=True):
    req = external_auth_pb2.CheckRequest()
    http = req.attributes.request.http
    http.path, http.method = path, method
    if route:
        req.attributes.context_extensions["route"] = route
    for key, value in (headers or {}).items():
        if raw:
            http.header_map.headers.append(base_pb2.HeaderValue(key=key, raw_value=value.encode()))
        else:
            http.headers[key] = value
    http.raw_body = body
    return req


def rpc(method="tools/call", params=None, id_=1):
    message = {"jsonrpc": "2.0", "method": method, "params": params or {}}
    if id_ is not None:
        message["id"] = id_
    return json.dumps(message).encode()


def test_tools_call_is_parsed_with_token_prompt_and_meta():
    body = rpc(
        params={
            "name": "read_invoice",
            "arguments": {"invoice_id": "A"},
            "_meta": {"tessera/approval-id": "ap-1"},
        }
    )
    parsed = wire.parse_request(
        request(body, headers={"Authorization": "Bearer tok", "X-Intent-Prompt": "caf%C3%A9%20%E2%82%AC"}),
        deadline=None,
    )
    assert parsed.protocol_error is None
    (message,) = parsed.messages
    assert message.input.tool == "read_invoice" and message.input.arguments == {"invoice_id": "A"}
    assert message.input.token == "tok"
    assert message.input.intent_prompt == "café €"
    assert message.input.approval_id == "ap-1"
    assert message.request_id == 1 and not message.is_notification


def test_plain_headers_are_read_when_raw_headers_are_off():
    parsed = wire.parse_request(
        request(rpc("ping"), headers={"authorization": "Bearer t2"}, raw=False), deadline=None
    )
    assert parsed.messages[0].input.token == "t2"
    assert parsed.messages[0].input.tool is None


def test_repeated_authorization_header_is_a_protocol_error():
    req = request(rpc("ping"))
    for value in (b"Bearer a", b"Bearer b"):
        req.attributes.request.http.header_map.headers.append(
            base_pb2.HeaderValue(key="authorization", raw_value=value)
        )
    parsed = wire.parse_request(req, deadline=None)
    assert parsed.protocol_error is not None and parsed.protocol_error[0] == -32600


def test_protocol_errors_have_their_codes_and_echo_ids():
    cases = {
        b"{not json": (-32700, None),
        b"[]": (-32600, None),
        b'"text"': (-32600, None),
        b'{"id": 5, "method": "ping"}': (-32600, 5),
        b'{"jsonrpc": "2.0", "id": 6}': (-32600, 6),
        b'{"jsonrpc": "2.0", "id": {"x": 1}, "method": "ping"}': (-32600, None),
        rpc(params={"arguments": {}}, id_=7): (-32602, 7),
        rpc(params={"name": "t", "arguments": [1]}, id_=8): (-32602, 8),
        b"\xff\xfe": (-32700, None),
        b'{"jsonrpc": "2.0", "id": 9, "method": "ping", "method": "tools/call"}': (-32600, None),
        b'{"jsonrpc": "2.0", "id": 9, "method": "tools/call", "params": {"name": "a", "name": "b"}}': (
            -32600,
            None,
        ),
    }
    for body, (code, request_id) in cases.items():
        parsed = wire.parse_request(request(body), deadline=None)
        assert parsed.protocol_error is not None, body
        assert parsed.protocol_error[0] == code, body
        assert parsed.protocol_error[2] == request_id, body
        reply, decision = wire.protocol_denial(parsed)
        assert reply.denied_response.status.code == 200
        assert json.loads(reply.denied_response.body)["error"]["code"] == code
        assert decision.check is Check.PROTOCOL


def test_batches_and_notifications():
    body = b"[" + rpc("ping", id_=1) + b"," + rpc("notifications/initialized", id_=None) + b"]"
    parsed = wire.parse_request(request(body), deadline=None)
    assert parsed.batch and len(parsed.messages) == 2
    assert parsed.messages[1].is_notification


def test_get_and_delete_need_a_token_only():
    parsed = wire.parse_request(request(b"", method="GET"), deadline=None)
    assert parsed.protocol_error is None and parsed.messages[0].input.tool is None


def test_tool_call_transport():
    body = json.dumps({"tool": "read_invoice", "arguments": {"invoice_id": "A"}}).encode()
    parsed = wire.parse_request(request(body, path="/v1/tool-call", route="tool-call"), deadline=None)
    assert parsed.messages[0].input.tool == "read_invoice"
    bad = wire.parse_request(
        request(b'{"arguments": {}}', path="/v1/tool-call", route="tool-call"), deadline=None
    )
    assert bad.protocol_error[0] == -32600
    reply, _ = wire.protocol_denial(bad)
    assert reply.denied_response.status.code == 400


def _decision(outcome=Outcome.DENY, check=Check.POLICY, **kw):
    return Decision(
        decision_id="d1", outcome=outcome, check=check, reason="because", tenant="t", agent="a", **kw
    )


def test_ok_response_sets_ours_and_removes_spoofed_and_authorization():
    parsed = wire.parse_request(
        request(
            rpc("ping"),
            headers={"x-tessera-tenant": "evil", "x-tessera-foo": "x", "authorization": "Bearer t"},
        ),
        deadline=None,
    )
    reply = wire.ok_response(_decision(Outcome.ALLOW, None), parsed, strip_authorization=True)
    assert reply.status.code == code_pb2.OK
    set_headers = {h.header.key: h.header.value for h in reply.ok_response.headers}
    assert set_headers == {"x-tessera-decision-id": "d1", "x-tessera-tenant": "t", "x-tessera-agent": "a"}
    assert all(
        h.append_action == base_pb2.HeaderValueOption.OVERWRITE_IF_EXISTS_OR_ADD
        for h in reply.ok_response.headers
    )
    assert set(reply.ok_response.headers_to_remove) == {"x-tessera-foo", "authorization"}
    assert reply.ok_response.response_headers_to_add[0].header.value == "d1"


def test_denied_mcp_reply_is_http_200_json_rpc_error_echoing_the_id():
    parsed = wire.parse_request(request(rpc(params={"name": "x"}, id_="req-9")), deadline=None)
    reply = wire.deny_for(parsed, _decision(), parsed.messages)
    assert reply.status.code != code_pb2.OK
    assert reply.denied_response.status.code == 200
    headers = {h.header.key: h.header.value for h in reply.denied_response.headers}
    assert headers["content-type"] == "application/json"
    assert all(not h.HasField("append") for h in reply.denied_response.headers)
    body = json.loads(reply.denied_response.body)
    assert body["id"] == "req-9"
    assert body["error"]["code"] == -32012
    assert body["error"]["data"] == {"check": "policy", "reason": "because", "decision_id": "d1"}


def test_denied_notification_is_403_without_id():
    parsed = wire.parse_request(request(rpc("notifications/initialized", id_=None)), deadline=None)
    reply = wire.deny_for(parsed, _decision(check=Check.CAPABILITY), parsed.messages)
    assert reply.denied_response.status.code == 403
    assert "id" not in json.loads(reply.denied_response.body)


def test_tool_call_statuses_per_check():
    parsed = wire.parse_request(
        request(json.dumps({"tool": "x"}).encode(), path="/v1/tool-call", route="tool-call"), deadline=None
    )
    for check, status in wire.TOOL_CALL_STATUS.items():
        outcome = Outcome.ESCALATE if check is Check.APPROVAL else Outcome.DENY
        reply = wire.deny_for(parsed, _decision(outcome, check), parsed.messages)
        assert reply.denied_response.status.code == status


def test_the_pipeline_package_imports_no_grpc():
    code = "import sys, authz.check; print([m for m in sys.modules if m == 'grpc' or m.startswith('grpc.')])"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "[]"
