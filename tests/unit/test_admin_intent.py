"""``IntentService`` on the real admin gRPC service (SQLite store): a tenant's intent settings read and
changed (audited, validated, outbound-vetted), and ``RefreshIntentCatalog`` against the demo MCP server
(real, uvicorn on 127.0.0.1, reached with the official mcp SDK) that keeps the previous catalog when a
refresh fails."""

from __future__ import annotations

import json
from collections.abc import Iterator

import grpc
import pytest
from google.protobuf import field_mask_pb2

from authz.api.admin.v1 import admin_key_service_pb2 as keys_pb
from authz.api.admin.v1 import intent_service_pb2 as pb
from authz.api.admin.v1 import intent_service_pb2_grpc as pb_grpc
from authz.outbound import OutboundClient, OutboundPolicy
from authz.storage import TenantSettings
from tests.unit.test_admin_service import ROOT, admin, admin_events, auth, failure  # noqa: F401
from tests.unit.test_intent_refresh import DEMO_TOOLS, closed_port_url, upstream  # noqa: F401

TENANT = "intent-co"


@pytest.fixture
def loopback_allowed(admin) -> Iterator[None]:  # noqa: F811
    """The operator allowlists loopback (TESSERA_OUTBOUND_ALLOW=127.0.0.1), where the upstream runs."""
    before = admin.runtime.outbound
    admin.runtime.outbound = OutboundClient(OutboundPolicy.build(["127.0.0.1"]), purpose="test")
    try:
        yield
    finally:
        admin.runtime.outbound = before


def mask(*paths: str) -> field_mask_pb2.FieldMask:
    return field_mask_pb2.FieldMask(paths=list(paths))


async def test_intent_settings_are_read_changed_and_audited(admin, loopback_allowed, upstream):  # noqa: F811
    await admin.store.put_tenant(TENANT, TenantSettings())
    stub = pb_grpc.IntentServiceStub(admin.channel)
    got = await stub.GetIntentSettings(pb.GetIntentSettingsRequest(tenant=TENANT), metadata=auth(ROOT))
    assert got.settings == pb.IntentSettings(undetermined=pb.UNDETERMINED_ACTION_DENY)
    assert not got.catalog.fetched and list(got.catalog.catalog_tools) == []

    changed = await stub.UpdateIntentSettings(
        pb.UpdateIntentSettingsRequest(
            tenant=TENANT,
            settings=pb.IntentSettings(
                undetermined=pb.UNDETERMINED_ACTION_POLICY, tools_url=upstream, refresh_interval_s=60
            ),
        ),
        metadata=auth(ROOT),
    )
    assert changed.settings.tools_url == upstream and changed.settings.refresh_interval_s == 60
    stored = await admin.store.get_tenant(TENANT)
    assert (stored.intent_undetermined, stored.tools_url, stored.intent_refresh_s) == (
        "policy",
        upstream,
        60.0,
    )

    # a masked update changes only the named field
    await stub.UpdateIntentSettings(
        pb.UpdateIntentSettingsRequest(
            tenant=TENANT,
            settings=pb.IntentSettings(undetermined=pb.UNDETERMINED_ACTION_DENY),
            update_mask=mask("undetermined"),
        ),
        metadata=auth(ROOT),
    )
    stored = await admin.store.get_tenant(TENANT)
    assert (stored.intent_undetermined, stored.tools_url, stored.intent_refresh_s) == ("deny", upstream, 60.0)
    events = [e for e in await admin_events(admin.store, TENANT) if e["action"].startswith("tenant.intent")]
    assert [e["action"] for e in events] == ["tenant.intent.settings.update"] * 2
    assert events[-1]["details"]["fields"] == ["undetermined"]

    # bad values are refused with the field named
    for settings, field in (
        (pb.IntentSettings(tools_url="ftp://x"), "tools_url"),
        (pb.IntentSettings(refresh_interval_s=3), "refresh_interval_s"),
    ):
        code, status = await failure(
            stub.UpdateIntentSettings(
                pb.UpdateIntentSettingsRequest(tenant=TENANT, settings=settings), metadata=auth(ROOT)
            )
        )
        assert code is grpc.StatusCode.INVALID_ARGUMENT and field in status.message
    code, _ = await failure(
        stub.UpdateIntentSettings(
            pb.UpdateIntentSettingsRequest(tenant=TENANT, update_mask=mask("catalog")), metadata=auth(ROOT)
        )
    )
    assert code is grpc.StatusCode.INVALID_ARGUMENT


async def test_a_tools_url_the_outbound_rules_refuse_is_refused_and_audited(admin, upstream):  # noqa: F811
    """Without the operator's allowlist, a loopback upstream is refused (SSRF guard)."""
    await admin.store.put_tenant("refused-co", TenantSettings())
    stub = pb_grpc.IntentServiceStub(admin.channel)
    code, status = await failure(
        stub.UpdateIntentSettings(
            pb.UpdateIntentSettingsRequest(
                tenant="refused-co", settings=pb.IntentSettings(tools_url=upstream)
            ),
            metadata=auth(ROOT),
        )
    )
    assert code is grpc.StatusCode.FAILED_PRECONDITION and "refused" in status.message
    assert (await admin.store.get_tenant("refused-co")).tools_url is None
    actions = [e["action"] for e in await admin_events(admin.store, "refused-co")]
    assert actions == ["tenant.intent.settings.refused"]


async def test_refresh_fetches_stores_and_audits_and_a_failed_refresh_keeps_the_catalog(
    admin,  # noqa: F811
    loopback_allowed,
    upstream,  # noqa: F811
):
    tenant = "refresh-co"
    await admin.store.put_tenant(tenant, TenantSettings(intent_mode="enforce", tools_url=upstream))
    stub = pb_grpc.IntentServiceStub(admin.channel)
    refreshed = await stub.RefreshIntentCatalog(
        pb.RefreshIntentCatalogRequest(tenant=tenant), metadata=auth(ROOT)
    )
    assert refreshed.outcome == "updated" and refreshed.HasField("fetched_at")
    assert set(refreshed.catalog.catalog_tools) == DEMO_TOOLS and refreshed.catalog.upstream_tools == 4
    stored = await admin.store.get_tenant(tenant)
    assert {t["name"] for t in stored.upstream_tools} == DEMO_TOOLS
    again = await stub.RefreshIntentCatalog(
        pb.RefreshIntentCatalogRequest(tenant=tenant), metadata=auth(ROOT)
    )
    assert again.outcome == "unchanged"

    # the upstream goes away: a clear UNAVAILABLE, and the stored list (so the catalog) stays
    dead = closed_port_url()
    await admin.store.put_tenant(
        tenant, TenantSettings(intent_mode="enforce", tools_url=dead, upstream_tools=stored.upstream_tools)
    )
    code, status = await failure(
        stub.RefreshIntentCatalog(pb.RefreshIntentCatalogRequest(tenant=tenant), metadata=auth(ROOT))
    )
    assert code is grpc.StatusCode.UNAVAILABLE
    assert "the previous catalog stays" in status.message and dead in status.message
    kept = await stub.GetIntentSettings(pb.GetIntentSettingsRequest(tenant=tenant), metadata=auth(ROOT))
    assert set(kept.catalog.catalog_tools) == DEMO_TOOLS and kept.catalog.fetched
    assert (await admin.store.get_tenant(tenant)).upstream_tools == stored.upstream_tools

    events = [e for e in await admin_events(admin.store, tenant) if e["action"].startswith("tenant.intent")]
    assert [e["action"] for e in events] == [
        "tenant.intent.refresh",
        "tenant.intent.refresh",
        "tenant.intent.refresh.failed",
    ]
    assert [e["details"].get("outcome") for e in events[:2]] == ["updated", "unchanged"]
    assert events[2]["details"]["kept_tools"] == 4
    assert "prompt" not in json.dumps(events)


async def test_refresh_without_tools_url_or_allowlist_fails_clearly(admin, upstream):  # noqa: F811
    stub = pb_grpc.IntentServiceStub(admin.channel)
    await admin.store.put_tenant("plain-co", TenantSettings())
    code, status = await failure(
        stub.RefreshIntentCatalog(pb.RefreshIntentCatalogRequest(tenant="plain-co"), metadata=auth(ROOT))
    )
    assert code is grpc.StatusCode.FAILED_PRECONDITION and "no tools_url" in status.message
    # stored before the operator narrowed the rules: the refresh is refused before any connection
    await admin.store.put_tenant("narrowed-co", TenantSettings(tools_url=upstream))
    code, status = await failure(
        stub.RefreshIntentCatalog(pb.RefreshIntentCatalogRequest(tenant="narrowed-co"), metadata=auth(ROOT))
    )
    assert code is grpc.StatusCode.FAILED_PRECONDITION and "refused" in status.message
    assert (await admin.store.get_tenant("narrowed-co")).upstream_tools is None


async def test_roles_viewer_reads_operator_refreshes_admin_changes(admin, loopback_allowed, upstream):  # noqa: F811
    tenant = "roles-co"
    await admin.store.put_tenant(tenant, TenantSettings(tools_url=upstream))
    stub = pb_grpc.IntentServiceStub(admin.channel)
    viewer = await admin.new_key(keys_pb.ROLE_VIEWER, tenant, "intent-viewer")
    operator = await admin.new_key(keys_pb.ROLE_OPERATOR, tenant, "intent-operator")
    await stub.GetIntentSettings(pb.GetIntentSettingsRequest(tenant=tenant), metadata=auth(viewer))
    code, _ = await failure(
        stub.RefreshIntentCatalog(pb.RefreshIntentCatalogRequest(tenant=tenant), metadata=auth(viewer))
    )
    assert code is grpc.StatusCode.PERMISSION_DENIED
    done = await stub.RefreshIntentCatalog(
        pb.RefreshIntentCatalogRequest(tenant=tenant), metadata=auth(operator)
    )
    assert done.outcome == "updated"
    code, _ = await failure(
        stub.UpdateIntentSettings(
            pb.UpdateIntentSettingsRequest(tenant=tenant, settings=pb.IntentSettings()),
            metadata=auth(operator),
        )
    )
    assert code is grpc.StatusCode.PERMISSION_DENIED
    code, _ = await failure(
        stub.GetIntentSettings(pb.GetIntentSettingsRequest(tenant="acme"), metadata=auth(viewer))
    )
    assert code is grpc.StatusCode.PERMISSION_DENIED  # another tenant's settings


async def test_a_servers_catalog_is_shown_and_refreshed_on_its_own_and_audited(
    admin,  # noqa: F811
    loopback_allowed,
    upstream,  # noqa: F811
):
    """Catalogs are per (tenant, server): ``server`` names the tool server whose catalog Get shows and
    Refresh fetches from that server's own tools_url, leaving the main endpoint's alone."""
    tenant = "servers-co"
    billing = {"catalog": {}, "tools_url": upstream}
    await admin.store.put_tenant(tenant, TenantSettings(server_catalogs={"billing": billing}))
    stub = pb_grpc.IntentServiceStub(admin.channel)

    def get(server: str = ""):
        return stub.GetIntentSettings(
            pb.GetIntentSettingsRequest(tenant=tenant, server=server), metadata=auth(ROOT)
        )

    def refresh(server: str = ""):
        return stub.RefreshIntentCatalog(
            pb.RefreshIntentCatalogRequest(tenant=tenant, server=server), metadata=auth(ROOT)
        )

    before = await get("billing")
    assert before.settings.tools_url == upstream and not before.catalog.fetched
    assert (await get()).settings.tools_url == ""  # the main endpoint has none

    refreshed = await refresh("billing")
    assert refreshed.outcome == "updated" and refreshed.catalog.fetched
    assert set(refreshed.catalog.catalog_tools) == DEMO_TOOLS and refreshed.catalog.upstream_tools == 4
    stored = await admin.store.get_tenant(tenant)
    assert {t["name"] for t in stored.server_catalogs["billing"]["upstream_tools"]} == DEMO_TOOLS
    assert stored.upstream_tools is None  # the main endpoint's list is untouched
    shown = await get("billing")
    assert shown.catalog.fetched and set(shown.catalog.catalog_tools) == DEMO_TOOLS
    main = await get("default")
    assert not main.catalog.fetched and list(main.catalog.catalog_tools) == []
    assert (await refresh("billing")).outcome == "unchanged"

    # the main endpoint has no tools_url; an unknown server is NOT_FOUND, for reads and refreshes
    code, status = await failure(refresh())
    assert code is grpc.StatusCode.FAILED_PRECONDITION and "no tools_url" in status.message
    for call in (get("payroll"), refresh("payroll")):
        code, status = await failure(call)
        assert code is grpc.StatusCode.NOT_FOUND and "payroll" in status.message

    # the server's upstream goes away: UNAVAILABLE, its stored list stays, the failure is audited
    dead = closed_port_url()
    kept = stored.server_catalogs["billing"]["upstream_tools"]
    await admin.store.put_tenant(
        tenant,
        TenantSettings(
            server_catalogs={"billing": {"catalog": {}, "tools_url": dead, "upstream_tools": kept}}
        ),
    )
    code, status = await failure(refresh("billing"))
    assert code is grpc.StatusCode.UNAVAILABLE and dead in status.message
    assert (await admin.store.get_tenant(tenant)).server_catalogs["billing"]["upstream_tools"] == kept

    events = [e for e in await admin_events(admin.store, tenant) if e["action"].startswith("tenant.intent")]
    assert [e["action"] for e in events] == [
        "tenant.intent.refresh",
        "tenant.intent.refresh",
        "tenant.intent.refresh.failed",
    ]
    assert [e["details"]["server"] for e in events] == ["billing"] * 3
    assert [e["details"].get("outcome") for e in events[:2]] == ["updated", "unchanged"]
    assert events[2]["details"]["kept_tools"] == 4
