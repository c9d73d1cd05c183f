"""List filtering for a tenant whose policy is an OPA server: tools/list, prompts/list and resources/list
are filtered by OPA's list-phase decisions, each item evaluated (concurrently) over OPA's REST API; an
item whose evaluation fails (OPA down, slow, erroring) is hidden and counted, never shown.

The OPA server is ``tests.opa_standin.OpaStandIn``, a STAND-IN implementing OPA's REST Data API over the
``regorus`` engine (no OPA binary can be installed here). The pipeline, tenant directory, SQLite store,
tokens and the ext_proc servicer (driven with real protos) are Tessera's own."""

from __future__ import annotations

import asyncio
import json
import logging
from dataclasses import replace

import pytest

from authz.check.listing import ListFilter, ListTally
from authz.outbound import OutboundPolicy
from authz.policy import OpaClients, policy_hash
from authz.server.ext_proc import ListProcessor
from authz.storage import TenantSettings
from tests.opa_standin import OpaStandIn
from tests.unit.test_listing import DEMO_TOOLS, _process, context, token, tools_result
from tests.unit.test_policy_parity import opa_pipeline

# Everything is listed except delete_invoice, which nobody may call; prompts and resources are judged
# too (the policy reads input.prompt and input.resource).
LIST_POLICY = """package tessera

import rego.v1

default decision := {"allow": false, "reason": "default deny"}

decision := {"allow": true, "reason": "listed"} if {
    input.kind == "tool"
    input.tool != "delete_invoice"
}

decision := {"allow": true, "reason": "public prompt"} if {
    input.kind == "prompt"
    startswith(input.prompt, "public-")
}

decision := {"allow": true, "reason": "public resource"} if {
    input.kind == "resource"
    startswith(input.resource, "file:///public/")
}
"""

PROMPTS = {"jsonrpc": "2.0", "id": 8, "result": {"prompts": [{"name": "public-help"}, {"name": "secret"}]}}
RESOURCES = {
    "jsonrpc": "2.0",
    "id": 9,
    "result": {"resources": [{"uri": "file:///public/a.txt"}, {"uri": "file:///private/b.txt"}]},
}


@pytest.fixture
def opa():
    with OpaStandIn() as server:
        yield server


async def opa_listing(tmp_path, opa: OpaStandIn, timeout_ms: int = 2000):
    engine = {"engine": "opa", "url": opa.url, "timeout_ms": timeout_ms}
    clients = OpaClients(OutboundPolicy.build(["127.0.0.1"]))
    pipeline, store, directory = await opa_pipeline(tmp_path, TenantSettings(policy_engine=engine), clients)
    await store.promote_policy("demo", LIST_POLICY, policy_hash(LIST_POLICY), "test")
    await directory.refresh(force=True)
    return ListFilter(authenticator=pipeline.authenticator, directory=directory), clients


async def test_an_opa_tenant_gets_its_tools_list_filtered_by_opa(tmp_path, opa):
    listing, clients = await opa_listing(tmp_path, opa)
    try:
        ctx = context(listing, token())
        tally = ListTally()
        out = await listing.filter_message(ctx, tools_result(DEMO_TOOLS), tally=tally)
    finally:
        await clients.aclose()
    assert [t["name"] for t in out["result"]["tools"]] == [t for t in DEMO_TOOLS if t != "delete_invoice"]
    assert (tally.listed, tally.withheld, tally.failed) == ({"tool": 4}, {"tool": 1}, {})
    # OPA decided each tool in the list phase.
    assert sorted(i["tool"] for i in opa.inputs) == sorted(DEMO_TOOLS)
    assert {i["phase"] for i in opa.inputs} == {"list"}


async def test_prompts_and_resources_of_an_opa_tenant_are_filtered_by_opa(tmp_path, opa):
    listing, clients = await opa_listing(tmp_path, opa)
    try:
        ctx = context(listing, token())
        prompts = await listing.filter_message(replace(ctx, method="prompts/list"), PROMPTS)
        resources = await listing.filter_message(replace(ctx, method="resources/list"), RESOURCES)
    finally:
        await clients.aclose()
    assert prompts["result"]["prompts"] == [{"name": "public-help"}]
    assert resources["result"]["resources"] == [{"uri": "file:///public/a.txt"}]


async def test_the_list_processor_answers_an_opa_tenant_with_the_filtered_list(tmp_path, opa):
    listing, clients = await opa_listing(tmp_path, opa)
    try:
        ctx = context(listing, token(), request_id="r-1")
        body = json.dumps(tools_result(DEMO_TOOLS, request_id="r-1")).encode()
        _, reply = await _process(ListProcessor(listing), ctx, "application/json", body)
    finally:
        await clients.aclose()
    result = json.loads(reply.response_body.response.body_mutation.body)
    assert result["id"] == "r-1"
    assert [t["name"] for t in result["result"]["tools"]] == [t for t in DEMO_TOOLS if t != "delete_invoice"]


@pytest.mark.parametrize("fault", ["error", "slow", "down"])
async def test_an_item_whose_opa_evaluation_fails_is_hidden_and_counted(tmp_path, opa, fault, caplog):
    listing, clients = await opa_listing(tmp_path, opa, timeout_ms=300)
    try:
        ctx = context(listing, token())
        if fault == "error":
            opa.fail_with = 500
        elif fault == "slow":
            opa.delay_s = 0.8
        else:
            opa.__exit__()  # the server goes away
        tally = ListTally()
        with caplog.at_level(logging.WARNING, logger="tessera.list"):
            out = await listing.filter_message(ctx, tools_result(DEMO_TOOLS), tally=tally)
    finally:
        await clients.aclose()
        if fault == "slow":  # let the stand-in's delayed handlers finish before it is torn down
            await asyncio.sleep(opa.delay_s)
    assert out["result"]["tools"] == []
    assert tally.withheld == {"tool": 5} and tally.failed == {"tool": 5}
    assert any("5 tool(s) hidden" in r.getMessage() for r in caplog.records), caplog.text


class Recorder:
    """Collects the events the list processor commits (the audit recorder's interface)."""

    def __init__(self) -> None:
        self.events: list[dict] = []

    async def record_events(self, events) -> None:
        self.events += [event for _, event in events]


async def test_the_list_audit_event_counts_the_items_whose_evaluation_failed(tmp_path, opa):
    listing, clients = await opa_listing(tmp_path, opa)  # a generous timeout: the first list must pass
    recorder = Recorder()
    try:
        ctx = context(listing, token(), request_id="r-2")
        body = json.dumps(tools_result(DEMO_TOOLS, request_id="r-2")).encode()
        await _process(ListProcessor(listing, recorder=recorder), ctx, "application/json", body)
        opa.fail_with = 500
        await _process(ListProcessor(listing, recorder=recorder), ctx, "application/json", body)
    finally:
        await clients.aclose()
    ok, failing = (e["tessera"] for e in recorder.events)
    assert (ok["outcome"], ok["withheld"], "failed" in ok) == ("filtered", {"tool": 1}, False)
    assert (failing["outcome"], failing["withheld"], failing["failed"]) == (
        "filtered",
        {"tool": 5},
        {"tool": 5},
    )
