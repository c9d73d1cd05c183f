"""A get or read of a prompt or resource is decided like that item's list entry (authz.check.listing):
whatever a list withholds from a caller, ``prompts/get``, ``resources/read``, ``resources/subscribe``,
``resources/unsubscribe`` and ``completion/complete`` of it are denied.

Real parts: SQLite tenant snapshot, real macaroons, Rego policies, the pipeline and the wire layer."""

from __future__ import annotations

import pytest

from authz.check import Check
from authz.check.listing import ITEM_METHODS, item_of
from authz.check.models import CheckInput
from authz.server import wire
from authz.token import attenuate
from tests.unit.test_listing import context, token
from tests.unit.test_listing_kinds import KINDS_POLICY
from tests.unit.test_pipeline import make_pipeline
from tests.unit.test_wire import request, rpc

ESCALATING = """package tessera
import rego.v1
default decision := {"allow": false, "reason": "default deny"}
decision := {"allow": true} if input.kind == "tool"
decision := {"allow": false, "escalate": true, "reason": "ask first"} if input.prompt == "review"
decision := {"allow": true} if {
    input.kind == "prompt"
    input.prompt != "review"
}
"""


def read(tok: str, method: str, kind: str, name: str, **kw) -> CheckInput:
    return CheckInput(
        transport="mcp",
        http_method="POST",
        path="/v1/mcp",
        source_ip="127.0.0.1",
        token=tok,
        rpc_method=method,
        item_kind=kind,
        item=name,
        **kw,
    )


def test_the_wire_names_the_item_of_each_read_method():
    cases = [
        ("prompts/get", {"name": "secret-plan", "arguments": {}}, ("prompt", "secret-plan")),
        ("resources/read", {"uri": "file:///hr/pay.csv"}, ("resource", "file:///hr/pay.csv")),
        ("resources/subscribe", {"uri": "file:///hr/pay.csv"}, ("resource", "file:///hr/pay.csv")),
        ("resources/unsubscribe", {"uri": "file:///hr/pay.csv"}, ("resource", "file:///hr/pay.csv")),
        (
            "completion/complete",
            {"ref": {"type": "ref/prompt", "name": "secret-plan"}, "argument": {"name": "a", "value": ""}},
            ("prompt", "secret-plan"),
        ),
        (
            "completion/complete",
            {"ref": {"type": "ref/resource", "uri": "db://{t}"}, "argument": {"name": "t", "value": ""}},
            ("resource_template", "db://{t}"),
        ),
    ]
    for method, params, (kind, name) in cases:
        parsed = wire.parse_request(request(rpc(method, params)), deadline=None)
        inp = parsed.messages[0].input
        assert (inp.rpc_method, inp.item_kind, inp.item) == (method, kind, name)
    other = wire.parse_request(request(rpc("prompts/list")), deadline=None).messages[0].input
    assert other.item is None and other.item_kind is None


@pytest.mark.parametrize(
    "method,params",
    [
        ("prompts/get", {}),
        ("prompts/get", {"name": 7}),
        ("resources/read", {"uri": ""}),
        ("resources/subscribe", {}),
        ("resources/unsubscribe", {"uri": 3}),
        ("completion/complete", {"ref": {"type": "ref/other", "name": "x"}}),
        ("completion/complete", {"ref": {"type": "ref/prompt"}}),
    ],
)
def test_a_read_that_does_not_name_its_item_is_invalid_params_never_forwarded(method, params):
    parsed = wire.parse_request(request(rpc(method, params, id_=4)), deadline=None)
    assert parsed.protocol_error is not None
    code, message, request_id = parsed.protocol_error
    assert code == -32602 and request_id == 4 and message.startswith("invalid params")


def test_item_of_covers_exactly_the_read_methods():
    assert set(ITEM_METHODS) == {
        "prompts/get",
        "resources/read",
        "resources/subscribe",
        "resources/unsubscribe",
    }
    assert item_of("prompts/list", {}) is None and item_of("tools/call", {"name": "x"}) is None


async def test_what_the_list_withholds_a_get_or_read_denies_and_what_it_shows_passes(tmp_path):
    pipeline, _ = await make_pipeline(tmp_path, policy=KINDS_POLICY)
    listing = pipeline._listing
    tok = token()
    ctx = context(listing, tok)
    cases = [
        ("prompts/get", "prompt", "summary"),
        ("prompts/get", "prompt", "secret-plan"),
        ("resources/read", "resource", "file:///public/a.txt"),
        ("resources/read", "resource", "file:///hr/pay.csv"),
        ("resources/subscribe", "resource", "file:///hr/pay.csv"),
        ("resources/unsubscribe", "resource", "file:///hr/pay.csv"),
        ("resources/unsubscribe", "resource", "file:///public/a.txt"),
        ("completion/complete", "resource_template", "file:///public/{p}"),
        ("completion/complete", "resource_template", "db://{t}"),
    ]
    for method, kind, name in cases:
        decision = await pipeline.check(read(tok, method, kind, name))
        assert decision.allowed == await listing.visible(ctx, name, kind), (method, name)
        assert decision.item == name and decision.rpc_method == method
        if not decision.allowed:
            assert decision.check is Check.POLICY and decision.code == -32012
            assert name in decision.reason
            assert decision.policy_version is not None  # the audit records the policy that decided
    denied = await pipeline.check(read(tok, "prompts/get", "prompt", "secret-plan"))
    assert not denied.allowed and "default deny" in denied.reason


async def test_a_read_the_policy_would_escalate_is_listed_but_denied(tmp_path):
    pipeline, _ = await make_pipeline(tmp_path, policy=ESCALATING)
    tok = token()
    assert await pipeline._listing.visible(context(pipeline._listing, tok), "review", "prompt")
    decision = await pipeline.check(read(tok, "prompts/get", "prompt", "review"))
    assert not decision.allowed and decision.check is Check.POLICY and "approval" in decision.reason
    assert (await pipeline.check(read(tok, "prompts/get", "prompt", "summary"))).allowed


async def test_a_read_still_needs_a_valid_token_first(tmp_path):
    pipeline, _ = await make_pipeline(tmp_path, policy=KINDS_POLICY)
    decision = await pipeline.check(read("not-a-token", "prompts/get", "prompt", "summary"))
    assert not decision.allowed and decision.check is Check.CAPABILITY


async def test_a_policy_that_does_not_name_prompts_or_resources_leaves_reads_to_the_token(tmp_path):
    pipeline, _ = await make_pipeline(tmp_path)  # the demo policy judges tools only
    decision = await pipeline.check(read(token(), "resources/read", "resource", "file:///hr/pay.csv"))
    assert decision.allowed


async def test_a_policy_error_on_a_read_denies(tmp_path):
    broken = """package tessera
import rego.v1
decision := {"allow": true} if input.kind == "tool"
decision := {"allow": 1 / 0} if input.prompt == "summary"
"""
    pipeline, _ = await make_pipeline(tmp_path, policy=broken)
    decision = await pipeline.check(read(token(), "prompts/get", "prompt", "summary"))
    assert not decision.allowed


def test_the_audit_event_of_a_read_names_its_item():
    from authz.audit import event_from_decision
    from authz.check import Decision, Outcome

    decision = Decision("d1", Outcome.DENY, Check.POLICY, "x", tenant="demo", rpc_method="prompts/get")
    from dataclasses import replace

    event = event_from_decision(replace(decision, item="secret-plan"), time_ms=1)
    assert event["tessera"]["item"] == "secret-plan" and event["tessera"]["rpc_method"] == "prompts/get"
    assert "item" not in event_from_decision(decision, time_ms=1)["tessera"]


async def test_the_scope_a_denied_read_lacks_names_the_caveat_that_would_admit_it(tmp_path):
    """OAuth mode's insufficient_scope 403 (authz.server.wire.missing_scope): ``prompts:<name>`` and
    ``resources:<uri>`` for an item outside the token's caveats, nothing for other denials."""
    pipeline, _ = await make_pipeline(tmp_path, policy=KINDS_POLICY)
    tok = attenuate(token(), ["prompts = summary", "resources = file:///public/"])
    verified = pipeline.authenticator.authenticate(tok)
    for method, params, scope in [
        ("prompts/get", {"name": "secret-plan"}, "prompts:secret-plan"),
        ("resources/read", {"uri": "file:///hr/pay.csv"}, "resources:file:///hr/pay.csv"),
        ("resources/unsubscribe", {"uri": "file:///hr/pay.csv"}, "resources:file:///hr/pay.csv"),
        ("prompts/get", {"name": "summary"}, None),  # admitted by the caveats: no scope is missing
    ]:
        messages = wire.parse_request(request(rpc(method, params)), deadline=None).messages
        inp = messages[0].input
        decision = await pipeline.check(read(tok, method, inp.item_kind, inp.item))
        if scope is not None:
            assert not decision.allowed and decision.check is Check.CAPABILITY, method
        assert wire.missing_scope(decision, verified, messages) == scope, (method, params)
