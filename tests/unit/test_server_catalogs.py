"""Catalogs per (tenant, MCP tool server): ``read_invoice`` of one server is not ``read_invoice`` of another.

Real parts: the SQLite store, the tenant snapshot (TenantDirectory), the built-in catalog extractor, the
pipeline and the list filter; the tenants file parser; the catalog refresh with a fetch function given
the tool list a server would answer (the fetch itself is tested against a real MCP server in
tests/unit/test_intent_refresh.py)."""

from __future__ import annotations

from dataclasses import replace

import pytest

from authz.check import Check
from authz.check.listing import ListFilter, binding_catalog
from authz.errors import ConfigError
from authz.intent import refresh_catalogs
from authz.storage import TenantSettings
from authz.tenants import apply_tenants_file, parse_tenants_file
from tests.unit.test_listing import context, token
from tests.unit.test_pipeline import call, make_pipeline

INVOICES = {
    "read_invoice": {"description": "Show one invoice", "verbs": ["read", "show"], "keywords": ["invoice"]},
    "list_invoices": {"description": "List invoices", "verbs": ["list"], "keywords": ["invoice"]},
}
BILLING = {
    "pay_bill": {"description": "Pay a bill", "verbs": ["pay"], "keywords": ["bill"]},
}
SETTINGS = TenantSettings(
    intent_mode="enforce",
    require_prompt=True,
    catalog={"tools": INVOICES},
    server_catalogs={"billing": {"catalog": {"tools": BILLING}}},
)


def test_server_catalogs_round_trip_and_are_absent_from_json_when_unset():
    assert TenantSettings.from_json(SETTINGS.to_json()) == SETTINGS
    assert "server_catalogs" not in TenantSettings().to_json()


async def test_each_server_matches_prompts_against_its_own_catalog(tmp_path):
    pipeline, _ = await make_pipeline(tmp_path, settings=SETTINGS)
    tok = token()
    show = "show invoice INV-1001"
    assert (await pipeline.check(call(tok, intent_prompt=show))).allowed
    # the same tool and prompt on the billing server: its catalog has no read_invoice
    denied = await pipeline.check(call(tok, intent_prompt=show, server="billing"))
    assert not denied.allowed and denied.check is Check.INTENT
    pay = call(tok, tool="pay_bill", arguments={}, intent_prompt="pay the bill", server="billing")
    assert (await pipeline.check(replace(pay, server=None))).check is Check.INTENT
    allowed = await pipeline.check(pay)
    assert allowed.check is not Check.INTENT, allowed.reason  # intent passed; the demo policy decides


async def test_a_server_without_a_catalog_of_its_own_has_an_empty_one(tmp_path):
    pipeline, _ = await make_pipeline(tmp_path, settings=SETTINGS)
    denied = await pipeline.check(call(token(), intent_prompt="show invoice INV-1001", server="hr"))
    assert not denied.allowed and denied.check is Check.INTENT


async def test_the_binding_catalog_of_the_list_filter_is_per_server(tmp_path):
    pipeline, _ = await make_pipeline(tmp_path, settings=SETTINGS)
    tenant = pipeline._directory.get("demo")
    assert binding_catalog(tenant) == {"read_invoice", "list_invoices"}
    assert binding_catalog(tenant, "billing") == {"pay_bill"}
    listing = ListFilter(authenticator=pipeline.authenticator, directory=pipeline._directory)
    ctx = context(listing, token())
    assert await listing.visible(ctx, "read_invoice") and not await listing.visible(ctx, "pay_bill")
    on_billing = replace(ctx, server="billing")
    assert not await listing.visible(on_billing, "read_invoice")


def test_the_tenants_file_gives_each_server_its_catalog(tmp_path):
    (tmp_path / "billing.yaml").write_text("tools:\n  pay_bill:\n    verbs: [pay]\n    keywords: [bill]\n")
    path = tmp_path / "tenants.yaml"
    path.write_text(
        "tenants:\n  acme:\n    intent:\n      mode: enforce\n"
        "    servers:\n      billing:\n        catalog: billing.yaml\n"
        "        tools_url: http://billing.internal/mcp\n"
    )
    settings, _ = parse_tenants_file(path)["acme"]
    assert settings.server_catalogs == {
        "billing": {
            "catalog": {"tools": {"pay_bill": {"verbs": ["pay"], "keywords": ["bill"]}}},
            "tools_url": "http://billing.internal/mcp",
        }
    }
    for bad in ("default", "Billing"):
        path.write_text(f"tenants:\n  acme:\n    servers:\n      {bad}:\n        catalog: {{}}\n")
        with pytest.raises(ConfigError, match="not an MCP server name"):
            parse_tenants_file(path)


async def test_each_servers_tool_list_is_refreshed_into_its_own_catalog_and_kept_across_restarts(tmp_path):
    pipeline, store = await make_pipeline(tmp_path)
    path = tmp_path / "tenants.yaml"
    path.write_text(
        "tenants:\n  demo:\n    intent:\n      mode: enforce\n"
        "    servers:\n      billing:\n        tools_url: http://billing.internal/mcp\n"
    )
    await apply_tenants_file(store, path)
    listed = {"tools": [{"name": "pay_bill", "description": "Pay a bill."}]}

    async def fetch(url: str) -> dict:
        assert url == "http://billing.internal/mcp"
        return listed

    outcome = await refresh_catalogs(store, fetch=fetch, tenants=["demo"])
    assert outcome == {"demo/billing": "updated (1 tools)"}
    stored = await store.get_tenant("demo")
    assert stored.server_catalogs["billing"]["upstream_tools"] == listed["tools"]
    assert stored.upstream_tools is None  # the main endpoint's list is untouched
    assert (await refresh_catalogs(store, fetch=fetch, tenants=["demo"]))["demo/billing"] == "unchanged"
    await apply_tenants_file(store, path)  # a restart re-applies the file: the fetched list stays
    assert (await store.get_tenant("demo")).server_catalogs["billing"]["upstream_tools"] == listed["tools"]
    await pipeline._directory.refresh(force=True)
    tenant = pipeline._directory.get("demo")
    assert pipeline._directory.get("demo").extractor_for("billing") is not tenant.extractor
