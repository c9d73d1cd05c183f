"""List filtering (authz.check.listing) and the list processor (authz.server.ext_proc) on real parts:
SQLite tenant snapshot, real macaroons, Rego policies, the ext_proc servicer driven with real protos."""

from __future__ import annotations

import json
from dataclasses import replace
from datetime import UTC, datetime, timedelta

import pytest
from envoy.config.core.v3 import base_pb2
from envoy.service.ext_proc.v3 import external_processor_pb2 as pb
from google.protobuf import struct_pb2

from authz.check.listing import LIST_HEADER, METADATA_KEY, ListContext, ListContextError, ListFilter
from authz.server import wire
from authz.server.ext_proc import EXT_AUTHZ_NAMESPACE, ListProcessor, ListWithheld, filter_body
from authz.storage import TenantSettings
from authz.token import attenuate, mint
from tests.unit.test_pipeline import KEYRING, call, make_pipeline

DEMO_TOOLS = ["read_invoice", "list_invoices", "transfer_funds", "delete_invoice", "wipe_disk"]


def token(**caveats) -> str:
    caveats.setdefault("expires", datetime.now(UTC) + timedelta(hours=1))
    return mint(KEYRING, tenant="demo", agent="agent-1", **caveats)


async def make_filter(tmp_path, **kw) -> ListFilter:
    pipeline, _ = await make_pipeline(tmp_path, **kw)
    return ListFilter(authenticator=pipeline.authenticator, directory=pipeline._directory)


def list_request(tok: str):
    return replace(call(tok, tool=None), rpc_method="tools/list")


def context(listing: ListFilter, tok: str, request_id=7) -> ListContext:
    ctx = listing.context_for(list_request(tok), None, request_id)
    assert ctx is not None
    return ctx


def tools_result(names, request_id=7) -> dict:
    return {"jsonrpc": "2.0", "id": request_id, "result": {"tools": [{"name": n} for n in names]}}


async def listed(listing: ListFilter, ctx: ListContext, names=DEMO_TOOLS) -> list[str]:
    return [t["name"] for t in (await listing.filter_message(ctx, tools_result(names)))["result"]["tools"]]


async def test_the_demo_policy_in_the_list_phase_hides_only_tools_no_call_can_pass(tmp_path):
    listing = await make_filter(tmp_path)
    ctx = context(listing, token())
    # transfer_funds: a call without an amount is denied, yet some calls pass, so the list shows it.
    assert await listed(listing, ctx) == ["read_invoice", "list_invoices", "transfer_funds"]


async def test_tools_caveats_intersect_and_narrow_the_list(tmp_path):
    listing = await make_filter(tmp_path)
    wide = token(tools=["read_invoice", "transfer_funds"])
    assert await listed(listing, context(listing, wide)) == ["read_invoice", "transfer_funds"]
    narrow = attenuate(wide, ["tools = read_invoice,delete_invoice"])
    assert await listed(listing, context(listing, narrow)) == ["read_invoice"]


async def test_a_tool_the_policy_may_escalate_is_listed_and_the_phase_is_visible_to_the_policy(tmp_path):
    policy = """package tessera
import rego.v1
default decision := {"allow": false}
decision := {"allow": false, "escalate": true, "reason": "ask"} if input.tool == "transfer_funds"
decision := {"allow": true} if {
    input.tool == "read_invoice"
    input.phase == "list"
    input.arguments == {}
}
"""
    listing = await make_filter(tmp_path, policy=policy)
    assert await listed(listing, context(listing, token())) == ["read_invoice", "transfer_funds"]


async def test_a_policy_error_hides_the_tool(tmp_path):
    policy = """package tessera
import rego.v1
decision := {"allow": 1 / count([])} if input.phase == "list"
"""
    listing = await make_filter(tmp_path, policy=policy)
    assert await listed(listing, context(listing, token())) == []


async def test_a_binding_catalog_hides_uncatalogued_tools(tmp_path):
    catalog = {"tools": {"read_invoice": {"verbs": ["read"], "keywords": ["invoice"]}}}
    binding = TenantSettings(intent_mode="enforce", require_prompt=True, catalog=catalog)
    listing = await make_filter(tmp_path / "a", settings=binding)
    assert await listed(listing, context(listing, token())) == ["read_invoice"]
    # Without require_prompt a call without a prompt skips intent: the catalog does not bind.
    loose = TenantSettings(intent_mode="enforce", require_prompt=False, catalog=catalog)
    listing = await make_filter(tmp_path / "b", settings=loose)
    assert await listed(listing, context(listing, token())) == [
        "read_invoice",
        "list_invoices",
        "transfer_funds",
    ]


async def test_an_unknown_tenant_or_no_policy_lists_nothing(tmp_path):
    listing = await make_filter(tmp_path)
    ctx = context(listing, token())
    assert await listed(listing, replace(ctx, tenant="nobody")) == []


async def test_unexpected_result_shapes_are_refused_and_errors_pass(tmp_path):
    listing = await make_filter(tmp_path)
    ctx = context(listing, token())
    error = {"jsonrpc": "2.0", "id": 7, "error": {"code": -1, "message": "x"}}
    assert await listing.filter_message(ctx, error) == error
    with pytest.raises(ValueError):
        await listing.filter_message(ctx, {"jsonrpc": "2.0", "id": 7, "result": {"prompts": []}})
    with pytest.raises(ValueError):
        await listing.filter_message(ctx, {"jsonrpc": "2.0", "id": 7, "result": {"tools": [{"title": "x"}]}})
    # In a batch, the answers to other requests pass.
    other = {"jsonrpc": "2.0", "id": 8, "result": {"content": []}}
    assert await listing.filter_message(ctx, other, in_batch=True) == other


async def test_context_round_trips_through_metadata_and_refuses_an_incomplete_one(tmp_path):
    listing = await make_filter(tmp_path)
    ctx = context(listing, token(tools=["read_invoice"]), request_id="a\nb")
    assert ListContext.from_metadata(ctx.to_metadata()) == ctx
    assert json.loads(ctx.rpc_id) == "a\nb" and "\n" not in ctx.rpc_id
    with pytest.raises(ListContextError):
        ListContext.from_metadata({"tenant": "demo"})
    with pytest.raises(ListContextError):
        listing.context_for(list_request("not-a-token"), None, 1)


async def test_sse_framing_is_filtered_event_by_event(tmp_path):
    listing = await make_filter(tmp_path)
    ctx = context(listing, token())
    data = json.dumps(tools_result(DEMO_TOOLS))
    body = f"event: message\r\nid: 1\r\ndata: {data}\r\n\r\n".encode()
    out = (await filter_body(listing, ctx, "text/event-stream; charset=utf-8", body)).decode()
    lines = out.split("\n")
    assert lines[:2] == ["event: message", "id: 1"] and out.endswith("\n\n")
    message = json.loads(lines[2].removeprefix("data: "))
    assert [t["name"] for t in message["result"]["tools"]] == [
        "read_invoice",
        "list_invoices",
        "transfer_funds",
    ]
    # An event that carries no message (the TypeScript SDK primes each stream with an id and empty
    # data, for resumption) passes as it came.
    primed = f"id: 0\ndata: \n\nevent: message\ndata: {data}\n\n".encode()
    out = (await filter_body(listing, ctx, "text/event-stream", primed)).decode()
    assert out.startswith("id: 0\ndata:\n\nevent: message\ndata: {")
    assert "delete_invoice" not in out and "transfer_funds" in out
    with pytest.raises(ListWithheld):
        await filter_body(listing, ctx, "text/plain", b"read_invoice delete_invoice")


def _metadata(ctx: ListContext | None) -> base_pb2.Metadata:
    metadata = base_pb2.Metadata()
    if ctx is not None:
        data = struct_pb2.Struct()
        data.update({METADATA_KEY: ctx.to_metadata()})
        metadata.filter_metadata[EXT_AUTHZ_NAMESPACE].CopyFrom(data)
    return metadata


async def _process(processor: ListProcessor, ctx: ListContext | None, content_type: str, body: bytes):
    headers = pb.HttpHeaders()
    headers.headers.headers.add(key="content-type", raw_value=content_type.encode())
    headers.headers.headers.add(key="content-length", raw_value=str(len(body)).encode())

    async def stream():
        yield pb.ProcessingRequest(response_headers=headers, metadata_context=_metadata(ctx))
        yield pb.ProcessingRequest(response_body=pb.HttpBody(body=body, end_of_stream=True))

    return [r async for r in processor.Process(stream(), None)]


async def test_the_processor_rewrites_the_body_and_drops_content_length(tmp_path):
    listing = await make_filter(tmp_path)
    ctx = context(listing, token(tools=["read_invoice"]))
    head, body = await _process(
        ListProcessor(listing), ctx, "application/json", json.dumps(tools_result(DEMO_TOOLS)).encode()
    )
    assert list(head.response_headers.response.header_mutation.remove_headers) == ["content-length"]
    result = json.loads(body.response_body.response.body_mutation.body)
    assert [t["name"] for t in result["result"]["tools"]] == ["read_invoice"]


@pytest.mark.parametrize("case", ["no-context", "bad-json", "bad-shape"])
async def test_the_processor_withholds_the_list_with_a_json_rpc_error(tmp_path, case):
    listing = await make_filter(tmp_path)
    ctx = context(listing, token(), request_id="req-9")
    body = json.dumps(tools_result(DEMO_TOOLS)).encode()
    if case == "bad-json":
        body = body[:-3]
    if case == "bad-shape":
        body = json.dumps({"jsonrpc": "2.0", "id": "req-9", "result": {"tools": "all"}}).encode()
    replies = await _process(
        ListProcessor(listing), None if case == "no-context" else ctx, "application/json", body
    )
    immediate = replies[-1].immediate_response
    assert immediate.status.code == 200
    error = json.loads(immediate.body)
    assert error["error"]["code"] == -32018
    assert error["id"] == (None if case == "no-context" else "req-9")
    assert b"delete_invoice" not in immediate.body


async def test_an_allowed_list_request_is_marked_for_the_list_route(tmp_path):
    pipeline, _ = await make_pipeline(tmp_path)
    listing = ListFilter(authenticator=pipeline.authenticator, directory=pipeline._directory)
    tok = token()
    message_input = list_request(tok)
    parsed = wire.ParsedRequest("mcp", (wire.Message(message_input, request_id=3),))
    decision = await pipeline.check(message_input)
    reply = wire.ok_response(decision, parsed, strip_authorization=True)
    assert wire.mark_list_request(reply, parsed, [decision], listing) is None
    assert {h.header.key: h.header.value for h in reply.ok_response.headers}[LIST_HEADER] == "tools/list"
    assert reply.dynamic_metadata.fields[METADATA_KEY].struct_value.fields["rpc_id"].string_value == "3"
    # A tool call is not marked.
    call_input = call(tok)
    parsed = wire.ParsedRequest("mcp", (wire.Message(call_input, request_id=4),))
    reply = wire.ok_response(decision, parsed, strip_authorization=True)
    assert wire.mark_list_request(reply, parsed, [decision], listing) is None
    assert LIST_HEADER not in {h.header.key for h in reply.ok_response.headers}
    assert not reply.dynamic_metadata.fields
