"""``IntentService``: a tenant's intent settings (undetermined, tools_url, refresh interval) and a
refresh of its derived catalog on request (``RefreshIntentCatalog``). Get and Refresh also take an MCP
tool server (``server``): catalogs are per (tenant, server), each server's from its own ``tools_url``."""

from __future__ import annotations

import dataclasses
from typing import Any

from authz.api.admin.v1 import intent_service_pb2 as pb
from authz.api.admin.v1 import intent_service_pb2_grpc as pb_grpc
from authz.check.directory import settings_for_server
from authz.errors import (
    ConfigError,
    DependencyError,
    FailedPrecondition,
    InvalidArgument,
    NotFound,
    OutboundRefused,
)
from authz.intent import catalog_for_settings, catalog_from_tools_list, fetch_tools_list
from authz.outbound import OutboundClient
from authz.server.admin import convert
from authz.server.admin._common import AdminRuntime
from authz.server.admin.receipt_keys import SELF_RECEIPTS
from authz.server.admin.tenants import validated_settings
from authz.storage import TenantSettings
from authz.token import DEFAULT_SERVER

FIELDS = tuple(f.name for f in pb.IntentSettings.DESCRIPTOR.fields)
#: The shortest per-tenant refresh interval: a tenant cannot make every replica poll its upstream
#: continuously.
MIN_REFRESH_S = 10
REFRESH_TIMEOUT_S = 10.0
_UNDETERMINED = {pb.UNDETERMINED_ACTION_DENY: "deny", pb.UNDETERMINED_ACTION_POLICY: "policy"}
_UNDETERMINED_PB = {name: value for value, name in _UNDETERMINED.items()}


def intent_settings(settings: TenantSettings) -> pb.IntentSettings:
    return pb.IntentSettings(
        undetermined=_UNDETERMINED_PB.get(settings.intent_undetermined, pb.UNDETERMINED_ACTION_DENY),
        tools_url=settings.tools_url or "",
        refresh_interval_s=int(settings.intent_refresh_s or 0),
    )


def catalog_state(settings: TenantSettings) -> pb.IntentCatalogState:
    try:
        tools = sorted(catalog_for_settings(settings.catalog, settings.upstream_tools).tool_names)
    except ConfigError:  # a stored list that no longer derives: show it as such, never fail the read
        tools = []
    overrides = settings.catalog.get("tools", settings.catalog) if settings.catalog else {}
    return pb.IntentCatalogState(
        upstream_tools=len(settings.upstream_tools or ()),
        fetched=settings.upstream_tools is not None,
        catalog_tools=tools,
        overrides=len(overrides) if isinstance(overrides, dict) else 0,
    )


def _fields(given: pb.IntentSettings) -> dict[str, Any]:
    """The request's values as TenantSettings fields (validated)."""
    if given.undetermined not in (pb.UNDETERMINED_ACTION_UNSPECIFIED, *_UNDETERMINED):
        raise InvalidArgument("unknown undetermined action", metadata={"field": "undetermined"})
    url = given.tools_url.strip()
    if url and not url.startswith(("http://", "https://")):
        raise InvalidArgument("tools_url must be an http:// or https:// URL", metadata={"field": "tools_url"})
    interval = given.refresh_interval_s
    if interval < 0 or 0 < interval < MIN_REFRESH_S:
        raise InvalidArgument(
            f"refresh_interval_s must be 0 (the service default) or at least {MIN_REFRESH_S}",
            metadata={"field": "refresh_interval_s"},
        )
    return {
        "undetermined": _UNDETERMINED.get(given.undetermined, "deny"),
        "tools_url": url or None,
        "refresh_interval_s": float(interval) if interval else None,
    }


class IntentService(pb_grpc.IntentServiceServicer):
    def __init__(self, runtime: AdminRuntime):
        self.rt = runtime

    async def _settings(self, tenant: str) -> TenantSettings:
        await self.rt.require_tenant(tenant)
        settings = await self.rt.store.get_tenant(tenant)
        assert settings is not None
        return settings

    async def _server_view(self, tenant: str, server: str) -> tuple[TenantSettings, str | None]:
        """The tenant's settings and, for a named tool server, those settings as that server sees them
        (its catalog, tools_url and fetched list); the server is None for the main endpoint."""
        settings = await self._settings(tenant)
        if server in ("", DEFAULT_SERVER):
            return settings, None
        if server not in settings.server_catalogs:
            raise NotFound(
                f"tenant {tenant!r} has no MCP server {server!r}",
                reason="SERVER_NOT_FOUND",
                metadata={"tenant": tenant, "server": server},
            )
        return settings, server

    def _outbound(self) -> OutboundClient:
        # The operator's outbound rules (the runtime's policy), named for what this client fetches.
        return OutboundClient(
            self.rt.outbound.policy, timeout_s=REFRESH_TIMEOUT_S, purpose="intent tools/list"
        )

    async def GetIntentSettings(
        self, request: pb.GetIntentSettingsRequest, context
    ) -> pb.GetIntentSettingsResponse:
        settings, server = await self._server_view(request.tenant, request.server)
        view = settings_for_server(settings, server)
        return pb.GetIntentSettingsResponse(settings=intent_settings(view), catalog=catalog_state(view))

    async def UpdateIntentSettings(
        self, request: pb.UpdateIntentSettingsRequest, context
    ) -> pb.UpdateIntentSettingsResponse:
        tenant = request.tenant
        current = await self._settings(tenant)
        paths = list(request.update_mask.paths)
        unknown = sorted(set(paths) - set(FIELDS))
        if unknown:
            raise InvalidArgument(
                f"unknown intent settings field(s) in update_mask: {', '.join(unknown)}",
                metadata={"field": "update_mask", "allowed": ",".join(FIELDS)},
            )
        given = _fields(request.settings)
        wanted = {
            "undetermined": current.intent_undetermined,
            "tools_url": current.tools_url,
            "refresh_interval_s": current.intent_refresh_s,
        }
        for name in paths or FIELDS:
            wanted[name] = given[name]
        fields = {f.name: getattr(current, f.name) for f in dataclasses.fields(TenantSettings)}
        fields.update(
            intent_undetermined=wanted["undetermined"],
            tools_url=wanted["tools_url"],
            intent_refresh_s=wanted["refresh_interval_s"],
        )
        if fields["tools_url"] != current.tools_url:
            # the list fetched from the old upstream does not describe the new one
            fields["upstream_tools"] = None
            if fields["tools_url"]:
                await self._vet(tenant, fields["tools_url"], "tenant.intent.settings.refused")
        settings = validated_settings(fields, intent_http=self.rt.intent_http)

        async def update() -> None:
            if settings != current:
                await self.rt.store.put_tenant(tenant, settings)

        await self.rt.audited(
            update,
            tenant,
            "tenant.intent.settings.update",
            f"tenant:{tenant}",
            {
                "fields": paths or list(FIELDS),
                "undetermined": settings.intent_undetermined,
                "tools_url": settings.tools_url or "",
                "refresh_interval_s": settings.intent_refresh_s or 0,
            },
        )
        return pb.UpdateIntentSettingsResponse(
            settings=intent_settings(settings), catalog=catalog_state(settings)
        )

    async def _vet(self, tenant: str, url: str, refused_action: str) -> None:
        """FailedPrecondition (OUTBOUND_REFUSED) when the outbound rules refuse ``url``; audited."""
        async with self._outbound() as outbound:
            try:
                await outbound.vet(url)
            except OutboundRefused as exc:
                await self.rt.audit(
                    tenant, refused_action, f"tenant:{tenant}", {"tools_url": url, "reason": exc.message}
                )
                raise FailedPrecondition(
                    f"tools_url refused: {exc.message}",
                    reason="OUTBOUND_REFUSED",
                    metadata={"field": "tools_url", **exc.metadata},
                ) from None
            except DependencyError:
                pass  # a name that does not resolve yet: vetted again at every fetch

    async def RefreshIntentCatalog(
        self, request: pb.RefreshIntentCatalogRequest, context
    ) -> pb.RefreshIntentCatalogResponse:
        tenant = request.tenant
        stored, server = await self._server_view(tenant, request.server)
        current = settings_for_server(stored, server)
        # The audit names the server whose catalog this was (absent: the main endpoint's).
        named = {"server": server} if server is not None else {}
        url = current.tools_url
        if not url:
            whose = f"tenant {tenant!r}" + (f" server {server!r}" if server else "")
            raise FailedPrecondition(
                f"{whose} has no tools_url: its catalog is the hand-written one",
                reason="NO_TOOLS_URL",
                metadata={"tenant": tenant, **named},
            )
        fetched_at = self.rt.clock()
        try:
            async with self._outbound() as outbound:
                listed = await fetch_tools_list(
                    url,
                    outbound=outbound,
                    timeout_s=REFRESH_TIMEOUT_S,
                    receipt_for=self.rt.extras.get(SELF_RECEIPTS),
                )
            catalog_from_tools_list(listed)  # refuse to store what cannot become a catalog
        except (DependencyError, ConfigError) as exc:
            # The stored list (and the catalog every replica derived from it) stays as it was.
            refused = isinstance(exc, OutboundRefused)
            await self.rt.audit(
                tenant,
                "tenant.intent.refresh.failed",
                f"tenant:{tenant}",
                {
                    **named,
                    "tools_url": url,
                    "reason": exc.message,
                    "kept_tools": len(current.upstream_tools or ()),
                },
            )
            metadata = {"tenant": tenant, **named, "tools_url": url, **exc.metadata}
            if refused:
                raise FailedPrecondition(
                    f"tools_url refused: {exc.message}; the previous catalog stays",
                    reason="OUTBOUND_REFUSED",
                    metadata=metadata,
                ) from None
            raise DependencyError(
                f"refreshing the catalog failed: {exc.message}; the previous catalog stays",
                reason="INTENT_REFRESH_FAILED",
                metadata=metadata,
            ) from None
        tools = tuple(listed["tools"])
        latest = await self._settings(tenant)  # settings may have changed while fetching
        if server is not None and server not in latest.server_catalogs:
            raise FailedPrecondition(
                f"the tenant's server {server!r} was removed during the refresh; nothing was stored",
                reason="SETTINGS_CHANGED",
                metadata={"tenant": tenant, **named},
            )
        latest_view = settings_for_server(latest, server)
        if latest_view.tools_url != url:
            raise FailedPrecondition(
                "the tenant's tools_url changed during the refresh; nothing was stored",
                reason="SETTINGS_CHANGED",
                metadata={"tenant": tenant, **named},
            )
        changed = tools != latest_view.upstream_tools
        if not changed:
            updated, settings = latest, latest_view
        elif server is None:
            updated = settings = dataclasses.replace(latest, upstream_tools=tools)
        else:  # stored as the scheduled refresher stores a server's list (authz.intent refresh_catalogs)
            entry = {**latest.server_catalogs[server], "upstream_tools": list(tools)}
            updated = dataclasses.replace(latest, server_catalogs={**latest.server_catalogs, server: entry})
            settings = settings_for_server(updated, server)

        async def store() -> None:
            if changed:
                await self.rt.store.put_tenant(tenant, updated)

        outcome = "updated" if changed else "unchanged"
        await self.rt.audited(
            store,
            tenant,
            "tenant.intent.refresh",
            f"tenant:{tenant}",
            {**named, "tools_url": url, "outcome": outcome, "tools": [t.get("name", "") for t in tools]},
        )
        return pb.RefreshIntentCatalogResponse(
            outcome=outcome, catalog=catalog_state(settings), fetched_at=convert.timestamp(fetched_at)
        )
