"""Prompts, resources and GET streams through the list filter and processor; the list's audit event.

Real parts: SQLite store and tenant snapshot, real macaroons, Rego policies, the ext_proc servicer driven
with real protos, the real audit recorder writing to the SQLite chain."""

from __future__ import annotations

import json
from dataclasses import replace

from envoy.service.ext_proc.v3 import external_processor_pb2 as pb
from google.protobuf import json_format

from authz.audit import ChainRecorder, verify_chain
from authz.check.listing import BATCH_METHOD, METADATA_KEY, STREAM_METHOD, ListContext, ListFilter, ListTally
from authz.server.ext_proc import ListProcessor, SseStreamFilter, filter_body
from tests.unit.test_listing import DEMO_TOOLS, _metadata, context, make_filter, token, tools_result
from tests.unit.test_pipeline import call, make_pipeline

PROMPTS = {"jsonrpc": "2.0", "id": 7, "result": {"prompts": [{"name": "summary"}, {"name": "secret-plan"}]}}
RESOURCES = {
    "jsonrpc": "2.0",
    "id": 7,
    "result": {
        "resources": [
            {"uri": "file:///public/a.txt", "name": "a"},
            {"uri": "file:///hr/pay.csv", "name": "p"},
        ]
    },
}
TEMPLATES = {
    "jsonrpc": "2.0",
    "id": 7,
    "result": {
        "resourceTemplates": [
            {"uriTemplate": "file:///public/{p}", "name": "pub"},
            {"uriTemplate": "db://{t}", "name": "db"},
        ]
    },
}

# Tools as the demo; prompts and resources named explicitly (so the policy judges them).
KINDS_POLICY = """package tessera
import rego.v1
default decision := {"allow": false, "reason": "default deny"}
decision := {"allow": true} if input.tool == "read_invoice"
decision := {"allow": true} if {
    input.kind == "prompt"
    input.prompt != "secret-plan"
}
decision := {"allow": true} if {
    input.kind in {"resource", "resource_template"}
    startswith(input.resource, "file:///public/")
}
"""


def list_context(listing: ListFilter, method: str):
    return replace(context(listing, token()), method=method)


def names(message: dict, member: str, key: str = "name") -> list[str]:
    return [item[key] for item in message["result"][member]]


async def test_prompts_and_resources_pass_unless_the_policy_names_them(tmp_path):
    # The default policy never reads input.prompt or input.resource: it does not judge them.
    listing = await make_filter(tmp_path)
    assert await listing.filter_message(list_context(listing, "prompts/list"), PROMPTS) == PROMPTS
    assert await listing.filter_message(list_context(listing, "resources/list"), RESOURCES) == RESOURCES


async def test_a_policy_that_names_prompts_and_resources_filters_them_in_the_list_phase(tmp_path):
    listing = await make_filter(tmp_path, policy=KINDS_POLICY)
    tally = ListTally()
    prompts = await listing.filter_message(list_context(listing, "prompts/list"), PROMPTS, tally=tally)
    assert names(prompts, "prompts") == ["summary"]
    resources = await listing.filter_message(list_context(listing, "resources/list"), RESOURCES, tally=tally)
    assert names(resources, "resources", "uri") == ["file:///public/a.txt"]
    templates = await listing.filter_message(
        list_context(listing, "resources/templates/list"), TEMPLATES, tally=tally
    )
    assert names(templates, "resourceTemplates", "uriTemplate") == ["file:///public/{p}"]
    assert tally.listed == {"prompt": 1, "resource": 1, "resource_template": 1}
    assert tally.withheld == {"prompt": 1, "resource": 1, "resource_template": 1}
    # The list-phase input of a prompt: kind and name, no tool, no arguments.
    doc = listing.policy_input(list_context(listing, "prompts/list"), "summary", "prompt")
    assert (doc["phase"], doc["kind"], doc["prompt"], doc["tool"], doc["arguments"]) == (
        "list",
        "prompt",
        "summary",
        None,
        {},
    )


async def test_a_get_stream_gets_a_stream_context_and_every_list_result_on_it_is_filtered(tmp_path):
    pipeline, _ = await make_pipeline(tmp_path)
    listing = ListFilter(authenticator=pipeline.authenticator, directory=pipeline._directory)
    get = replace(call(token(tools=["read_invoice"]), tool=None), rpc_method=None, http_method="GET")
    ctx = listing.context_for(get, None, None)
    assert ctx is not None and ctx.method == STREAM_METHOD and ctx.rpc_id == "null"
    replayed = await listing.filter_message(ctx, tools_result(DEMO_TOOLS, request_id=2))
    assert names(replayed, "tools") == ["read_invoice"]
    # Other traffic on the stream passes unchanged: notifications, server requests, call results.
    for message in (
        {"jsonrpc": "2.0", "method": "notifications/tools/list_changed"},
        {"jsonrpc": "2.0", "id": 5, "method": "sampling/createMessage", "params": {}},
        {"jsonrpc": "2.0", "id": 6, "result": {"content": [{"type": "text", "text": "delete_invoice"}]}},
    ):
        assert await listing.filter_message(ctx, message) == message
    # A DELETE is not a stream.
    assert listing.context_for(replace(get, http_method="DELETE"), None, None) is None


async def test_a_stream_is_filtered_chunk_by_chunk_and_never_sends_a_partial_list_event(tmp_path):
    listing = await make_filter(tmp_path)
    ctx = list_context(listing, STREAM_METHOD)
    data = json.dumps(tools_result(DEMO_TOOLS, request_id=2))
    stream = (
        f": keepalive\n\nid: e1\nevent: message\ndata: {data}\n\n"
        + 'data: {"jsonrpc":"2.0","method":"x"}\n\n'
    ).encode()
    whole = await filter_body(listing, ctx, "text/event-stream", stream)
    for size in (1, 7, 64, len(stream)):
        sse = SseStreamFilter(listing, ctx, "text/event-stream")
        out = b""
        for start in range(0, len(stream), size):
            piece = await sse.feed(stream[start : start + size], end=False)
            out += piece
            # Nothing is sent until its event is complete: a prefix of the list never leaks.
            assert b"delete_invoice" not in piece
        out += await sse.feed(b"", end=True)
        assert out == whole, size
    assert b"delete_invoice" not in whole and b"read_invoice" in whole and b": keepalive" in whole


async def _run(processor: ListProcessor, ctx, content_type: str, chunks: list[bytes]):
    headers = pb.HttpHeaders()
    headers.headers.headers.add(key="content-type", raw_value=content_type.encode())

    async def requests():
        yield pb.ProcessingRequest(response_headers=headers, metadata_context=_metadata(ctx))
        for i, chunk in enumerate(chunks):
            yield pb.ProcessingRequest(
                response_body=pb.HttpBody(body=chunk, end_of_stream=i == len(chunks) - 1)
            )

    return [r async for r in processor.Process(requests(), None)]


async def test_each_filtered_list_is_one_audit_event_with_counts_and_no_names(tmp_path):
    pipeline, store = await make_pipeline(tmp_path)
    listing = ListFilter(authenticator=pipeline.authenticator, directory=pipeline._directory)
    recorder = ChainRecorder(store)
    processor = ListProcessor(listing, recorder=recorder)
    ctx = context(listing, token(tools=["read_invoice", "delete_invoice"]))
    replies = await _run(processor, ctx, "application/json", [json.dumps(tools_result(DEMO_TOOLS)).encode()])
    assert names(json.loads(replies[-1].response_body.response.body_mutation.body), "tools") == [
        "read_invoice"
    ]
    # A GET stream: the keep-alive writes nothing, the replayed list one event.
    stream_ctx = replace(ctx, method=STREAM_METHOD)
    data = json.dumps(tools_result(DEMO_TOOLS, request_id=2))
    await _run(
        processor, stream_ctx, "text/event-stream", [b": keepalive\n\n", f"data: {data}\n\n".encode(), b""]
    )
    # A list that cannot be filtered: withheld, and that is audited too.
    await _run(processor, ctx, "application/json", [b'{"jsonrpc":"2.0","id":7,"result":{"tools":"all"}}'])
    lists = [json.loads(r.event)["tessera"] async for r in store.iter_events("demo", decision="list")]
    assert [(t["rpc_method"], t["outcome"]) for t in lists] == [
        ("tools/list", "filtered"),
        (STREAM_METHOD, "filtered"),
        ("tools/list", "withheld"),
    ]
    assert lists[0]["listed"] == {"tool": 1} and lists[0]["withheld"] == {"tool": 4}
    assert (lists[0]["tenant"], lists[0]["agent"], lists[0]["token_id"]) == ("demo", "agent-1", ctx.token_id)
    assert "could not be filtered" in lists[2]["reason"]
    text = json.dumps(lists)
    assert "delete_invoice" not in text and "read_invoice" not in text
    assert (await verify_chain(store, "demo")).ok
    await recorder.aclose()


async def test_a_list_whose_audit_event_cannot_be_written_is_withheld(tmp_path):
    pipeline, store = await make_pipeline(tmp_path)
    listing = ListFilter(authenticator=pipeline.authenticator, directory=pipeline._directory)
    recorder = ChainRecorder(store)
    await recorder.aclose()  # a closed recorder refuses every write
    replies = await _run(
        ListProcessor(listing, recorder=recorder),
        context(listing, token()),
        "application/json",
        [json.dumps(tools_result(DEMO_TOOLS)).encode()],
    )
    error = json.loads(replies[-1].immediate_response.body)
    assert error["error"]["code"] == -32018 and "audit" in error["error"]["data"]["reason"]


async def test_a_batch_of_several_list_methods_filters_every_list_in_it(tmp_path):
    from authz.server import wire

    pipeline, _ = await make_pipeline(tmp_path, policy=KINDS_POLICY)
    listing = ListFilter(authenticator=pipeline.authenticator, directory=pipeline._directory)
    tok = token()
    inputs = [replace(call(tok, tool=None), rpc_method=m) for m in ("tools/list", "prompts/list")]
    parsed = wire.ParsedRequest(
        "mcp", tuple(wire.Message(i, request_id=n) for n, i in enumerate(inputs)), batch=True
    )
    decisions = [await pipeline.check(i) for i in inputs]
    reply = wire.ok_response(decisions[0], parsed, strip_authorization=True)
    assert wire.mark_list_request(reply, parsed, decisions, listing) is None
    ctx = ListContext.from_metadata(
        json.loads(json_format.MessageToJson(reply.dynamic_metadata))[METADATA_KEY]
    )
    assert ctx.method == BATCH_METHOD
    body = json.dumps([tools_result(DEMO_TOOLS, request_id=0), {**PROMPTS, "id": 1}]).encode()
    tools, prompts = json.loads(await filter_body(listing, ctx, "application/json", body))
    assert names(tools, "tools") == ["read_invoice"] and names(prompts, "prompts") == ["summary"]
