"""Bounded body parsing before and after authentication (issue 13 §2) and POST-only calls (§5)."""

from __future__ import annotations

import json

import pytest

from authz.config import BodyLimitsConfig, load
from authz.errors import ConfigError
from authz.server import wire
from tests.unit.test_wire import request, rpc

TOKEN = {"Authorization": "Bearer tok"}


def _error(body: bytes, **kw):
    parsed = wire.parse_request(request(body, headers=TOKEN, **kw), deadline=None)
    assert parsed.protocol_error is not None, body[:80]
    return parsed.protocol_error


def test_deep_nesting_is_a_protocol_error_not_a_recursion_error():
    for depth in (100, 5_000, 200_000):
        body = b'{"jsonrpc":"2.0","id":3,"method":"tools/call","params":{"name":"t","arguments":{"a":'
        body += b"[" * depth + b"]" * depth + b"}}}"
        code, message, request_id = _error(body)
        assert code == -32600 and "nested deeper than 64" in message
        # Within the parser's reach the id is read and echoed; past it, it cannot be.
        assert request_id == (3 if depth == 100 else None)


def test_object_keys_are_capped_while_parsing():
    keys = ",".join(f'"k{i}":0' for i in range(60_000))  # ~600 KB, under the byte limit
    body = '{"jsonrpc":"2.0","id":1,"method":"tools/call","params":{"name":"t","arguments":{' + keys + "}}}"
    code, message, _ = _error(body.encode())
    assert code == -32600 and "more than 10000 object keys" in message


def test_array_elements_and_batch_size_are_capped():
    arguments = json.dumps({"a": list(range(100_001))})
    body = b'{"jsonrpc":"2.0","id":"x","method":"tools/call","params":{"name":"t","arguments":'
    code, message, request_id = _error(body + arguments.encode() + b"}}")
    assert (code, request_id) == (-32600, "x") and "array elements" in message
    batch = b"[" + b",".join(rpc("ping", id_=i) for i in range(101)) + b"]"
    code, message, _ = _error(batch)
    assert code == -32600 and "at most 100 messages" in message
    parsed = wire.parse_request(
        request(b"[" + b",".join(rpc("ping", id_=i) for i in range(100)) + b"]", headers=TOKEN), deadline=None
    )
    assert parsed.protocol_error is None and len(parsed.messages) == 100


def test_limits_are_configurable():
    limits = BodyLimitsConfig(max_depth=3, max_batch=2)
    parsed = wire.parse_request(
        request(rpc(params={"name": "t", "arguments": {"a": {"b": 1}}}), headers=TOKEN),
        deadline=None,
        limits=limits,
    )
    assert parsed.protocol_error[0] == -32600 and parsed.protocol_error[2] == 1
    config = load({"TESSERA_MASTER_KEY": "k" * 32, "TESSERA_BODY_MAX_BATCH": "7"})
    assert config.body.max_batch == 7 and config.body.max_depth == 64
    with pytest.raises(ConfigError):
        load({"TESSERA_MASTER_KEY": "k" * 32, "TESSERA_BODY_MAX_DEPTH": "0"})


def test_a_large_body_is_not_parsed_before_the_token_authenticates():
    seen: list[str | None] = []

    def authenticates(token):
        seen.append(token)
        return token == "good"

    keys = ",".join(f'"k{i}":0' for i in range(2_000))
    big = '{"jsonrpc":"2.0","id":1,"method":"tools/call","params":{"name":"t","arguments":{' + keys + "}}}"
    big_body = big.encode()
    assert len(big_body) > BodyLimitsConfig().preauth_bytes
    # Tokenless or bad token: one token-only message, id unknown; the body was never parsed (an
    # unparseable tail would otherwise have been a -32700).
    for headers in ({}, {"Authorization": "Bearer bogus"}):
        parsed = wire.parse_request(
            request(big_body + b"garbage", headers=headers), deadline=None, authenticates=authenticates
        )
        assert parsed.protocol_error is None
        (message,) = parsed.messages
        assert message.input.tool is None and message.request_id is None
    # An authenticated caller's body is parsed as usual.
    parsed = wire.parse_request(
        request(big_body, headers={"Authorization": "Bearer good"}),
        deadline=None,
        authenticates=authenticates,
    )
    assert parsed.messages[0].input.tool == "t" and parsed.messages[0].request_id == 1
    assert seen == [None, "bogus", "good"]
    # A small body is still read without a token, so the denial can echo its id.
    small = wire.parse_request(request(rpc("ping", id_=42)), deadline=None, authenticates=authenticates)
    assert small.messages[0].request_id == 42


def test_tool_calls_only_with_post():
    call = rpc(params={"name": "delete_invoice", "arguments": {}})
    for method in ("GET", "DELETE", "PUT"):
        code, message, _ = _error(call, method=method)
        assert code == -32600 and f"not {method}" in message
    tool_call = json.dumps({"tool": "t", "arguments": {}}).encode()
    code, _, _ = _error(tool_call, method="GET", path="/v1/tool-call", route="tool-call")
    assert code == -32600
    # GET (SSE stream) and DELETE (end session) without a body stay token-only.
    for method in ("GET", "DELETE"):
        parsed = wire.parse_request(request(b"", method=method, headers=TOKEN), deadline=None)
        assert parsed.protocol_error is None and parsed.messages[0].input.tool is None
