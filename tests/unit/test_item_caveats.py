"""The ``prompts``, ``resources`` and ``servers`` caveats: they only ever narrow, apply to lists and to the
get/read/call decision alike, and survive offline attenuation with the Python SDK.

Real parts: real macaroons and the gateway's parser, the SQLite tenant snapshot, Rego policies, the
pipeline and the list filter."""

from __future__ import annotations

from dataclasses import replace
from datetime import UTC, datetime

import pytest

from authz.check import Check
from authz.check.listing import ListContext
from authz.client import attenuate as sdk_attenuate
from authz.client import inspect as sdk_inspect
from authz.errors import InvalidArgument
from authz.token import (
    DEFAULT_SERVER,
    PromptsCaveat,
    ResourcesCaveat,
    TokenAuthenticator,
    attenuate,
    parse_caveat,
)
from tests.unit.test_item_access import read
from tests.unit.test_listing import context, token
from tests.unit.test_listing_kinds import KINDS_POLICY, PROMPTS, RESOURCES, TEMPLATES
from tests.unit.test_pipeline import KEYRING, call, make_pipeline

NOW = datetime.now(UTC)


def authenticated(tok: str):
    result = TokenAuthenticator(KEYRING).authenticate(tok)
    assert not hasattr(result, "reason"), result
    return result


def test_the_three_caveats_parse_and_refuse_bad_values():
    assert parse_caveat("prompts = a, b") == PromptsCaveat("prompts = a, b", frozenset({"a", "b"}))
    assert parse_caveat("resources = file:///p/,db://") == ResourcesCaveat(
        "resources = file:///p/,db://", ("file:///p/", "db://")
    )
    assert parse_caveat("servers = billing,default").servers == frozenset({"billing", DEFAULT_SERVER})
    for bad in ("prompts = a,,b", "resources = a b", "servers = Billing", "servers = ", "prompts < a"):
        with pytest.raises(InvalidArgument, match="malformed"):
            parse_caveat(bad)
    with pytest.raises(InvalidArgument, match="unknown caveat"):
        parse_caveat("resource = file:///")  # an unknown key still fails closed


def test_caveats_of_a_kind_intersect_so_attenuation_only_narrows():
    tok = attenuate(token(), ["prompts = a,b", "resources = file:///public/", "servers = billing,default"])
    child = attenuate(tok, ["prompts = b,c", "resources = file:///public/docs/,db://", "servers = billing"])
    parent, narrow = authenticated(tok), authenticated(child)
    assert parent.prompts == {"a", "b"} and narrow.prompts == {"b"}
    assert narrow.servers == {"billing"}
    ok = {"now": NOW, "tool": None, "arguments": None, "prompt": None}
    # a child cannot widen: "c" and "db://" were never in the parent's caveats
    assert narrow.check(**ok, item=("prompt", "c")) is not None
    assert narrow.check(**ok, item=("resource", "db://x")) is not None
    assert narrow.check(**ok, item=("resource", "file:///public/a.txt")) is not None
    assert narrow.check(**ok, item=("resource", "file:///public/docs/a.txt")) is None
    assert parent.check(**ok, item=("resource", "file:///public/a.txt")) is None
    assert narrow.check(**ok, item=("prompt", "b")) is None
    assert "not allowed" in narrow.check(**ok, item=("prompt", "a")).reason


def test_a_resources_prefix_cannot_be_escaped_by_dot_segments_or_encodings():
    """``file:///public/../secret`` starts with ``file:///public/`` but a server resolves it outside: under a
    ``resources`` caveat dot segments and encoded '.', '/' or '\\' are refused; plain names still pass."""
    tok = authenticated(attenuate(token(), ["resources = file:///public/"]))
    ok = {"now": NOW, "tool": None, "arguments": None, "prompt": None}
    for escape in (
        "file:///public/../secret",
        "file:///public/..",
        "file:///public/./a",
        "file:///public/%2e%2e/secret",
        "file:///public/%2E%2e%2Fsecret",
        "file:///public/a%2fb",
        "file:///public/x\\..\\y",
    ):
        for kind in ("resource", "resource_template"):
            rejection = tok.check(**ok, item=(kind, escape))
            assert rejection is not None and "dot segment" in rejection.reason, (kind, escape)
    for plain in (
        "file:///public/a.txt",
        "file:///public/a..b",
        "file:///public/.hidden/x",
        "file:///public/{id}",
    ):
        assert tok.check(**ok, item=("resource", plain)) is None, plain
    # Without a resources caveat nothing is judged by prefix, so nothing is refused for its shape.
    assert authenticated(token()).check(**ok, item=("resource", "file:///x/../y")) is None


def test_a_servers_caveat_restricts_every_request_and_default_is_the_main_endpoint():
    tok = authenticated(attenuate(token(), ["servers = billing"]))
    ok = {"now": NOW, "tool": None, "arguments": None, "prompt": None}
    assert tok.check(**ok, server="billing") is None
    assert "server 'default' not allowed" in tok.check(**ok, server=None).reason
    assert tok.check(**ok, server="hr") is not None
    assert tok.check(**ok) is None  # not a request to a server (e.g. a token exchange): not evaluated
    unrestricted = authenticated(token())
    assert unrestricted.check(**ok, server="hr") is None


def test_the_python_sdk_attenuates_and_reads_the_new_caveats_offline():
    child = sdk_attenuate(token(), prompts=["summary"], resources=["file:///public/"], servers=["billing"])
    info = sdk_inspect(child)
    assert info.problems == ()
    assert info.prompts == {"summary"} and info.servers == {"billing"}
    assert info.resources == (frozenset({"file:///public/"}),)
    verified = authenticated(child)  # the gateway accepts what the SDK wrote
    assert verified.prompts == {"summary"} and verified.resources == (("file:///public/",),)
    with pytest.raises(ValueError, match="server name"):
        sdk_attenuate(token(), servers=["Billing"])
    with pytest.raises(ValueError, match="non-empty"):
        sdk_attenuate(token(), prompts=[])


async def test_pipeline_prompts_and_resources_caveats_deny_reads_as_capability(tmp_path):
    pipeline, _ = await make_pipeline(tmp_path, policy=KINDS_POLICY)
    tok = attenuate(token(), ["prompts = summary", "resources = file:///public/docs/"])
    denied = await pipeline.check(read(tok, "prompts/get", "prompt", "other"))
    assert not denied.allowed and denied.check is Check.CAPABILITY and denied.code == -32010
    # the policy would show file:///public/a.txt; the caveat narrows it away
    denied = await pipeline.check(read(tok, "resources/read", "resource", "file:///public/a.txt"))
    assert not denied.allowed and denied.check is Check.CAPABILITY
    assert (await pipeline.check(read(tok, "prompts/get", "prompt", "summary"))).allowed
    assert (await pipeline.check(read(tok, "resources/read", "resource", "file:///public/docs/x"))).allowed


async def test_pipeline_servers_caveat_denies_other_servers_for_calls_lists_and_sessions(tmp_path):
    pipeline, _ = await make_pipeline(tmp_path)
    tok = attenuate(token(), ["servers = billing"])
    on_billing = await pipeline.check(call(tok, server="billing"))
    assert on_billing.allowed, on_billing.reason
    for inp in (call(tok), call(tok, tool=None), replace(call(tok, tool=None), rpc_method="tools/list")):
        decision = await pipeline.check(inp)
        assert not decision.allowed and decision.check is Check.CAPABILITY and "server" in decision.reason
    assert not (await pipeline.check(call(tok, tool=None, server="hr"))).allowed


async def test_lists_withhold_what_the_caveats_exclude(tmp_path):
    pipeline, _ = await make_pipeline(tmp_path, policy=KINDS_POLICY)
    listing = pipeline._listing
    tok = attenuate(token(), ["prompts = secret-plan,other", "resources = file:///public/,db://"])
    ctx = context(listing, tok)
    assert ctx.prompts == {"secret-plan", "other"}
    # caveats and policy both apply: the policy hides secret-plan, the caveat hides summary
    prompts = (await listing.filter_message(replace(ctx, method="prompts/list"), PROMPTS))["result"][
        "prompts"
    ]
    assert prompts == []
    resources = await listing.filter_message(replace(ctx, method="resources/list"), RESOURCES)
    assert [r["uri"] for r in resources["result"]["resources"]] == ["file:///public/a.txt"]
    templates = await listing.filter_message(replace(ctx, method="resources/templates/list"), TEMPLATES)
    assert [t["uriTemplate"] for t in templates["result"]["resourceTemplates"]] == ["file:///public/{p}"]


async def test_the_caveats_reach_the_list_processor_through_metadata(tmp_path):
    pipeline, _ = await make_pipeline(tmp_path, policy=KINDS_POLICY)
    ctx = context(pipeline._listing, attenuate(token(), ["prompts = a", "resources = x://,y://"]))
    again = ListContext.from_metadata(ctx.to_metadata())
    assert again.prompts == {"a"} and again.resources == (("x://", "y://"),)
    unrestricted = ListContext.from_metadata(context(pipeline._listing, token()).to_metadata())
    assert unrestricted.prompts is None and unrestricted.resources == ()
