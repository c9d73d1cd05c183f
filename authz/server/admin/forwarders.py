"""``ForwarderConfigService``: a tenant's SIEM sinks and notification routes, and dead-letter replays.

Validation is :mod:`authz.forward._tenant`'s (kinds, options, settings, secret names, match, rate, link
templates); URLs are vetted against the outbound rules here, so a sink the forwarder would refuse to call
is refused when it is set (the refused attempt is audited with why). Every change commits with its audit
event (``run_audited``); the details hold the stored spec, which names secrets but never holds one.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any
from urllib.parse import urlsplit

from authz.api.admin.v1 import forwarder_config_service_pb2 as pb
from authz.api.admin.v1 import forwarder_config_service_pb2_grpc as pb_grpc
from authz.errors import ConfigError, DependencyError, InvalidArgument, NotFound, OutboundRefused
from authz.forward import (
    ROUTE_KINDS,
    SINK_KINDS,
    SINK_NAME,
    forwarder_sink_name,
    request_replay,
    spec_urls,
    validate_route_spec,
    validate_sink_spec,
)
from authz.outbound import OutboundClient
from authz.server.admin import convert
from authz.server.admin._common import AdminRuntime
from authz.server.admin.auth import principal
from authz.storage import SinkConfig


def _valid(build: Callable[[], dict[str, Any]]) -> dict[str, Any]:
    try:
        return build()
    except ConfigError as exc:
        raise InvalidArgument(exc.message, reason="FORWARDER_CONFIG_INVALID", metadata=exc.metadata) from None


def _route_fields(route: pb.NotificationRoute) -> dict[str, Any]:
    match = None
    if route.HasField("match"):
        m = route.match
        match = {
            "decisions": list(m.decisions),
            "checks": list(m.checks),
            "codes": list(m.codes),
            "tools": list(m.tools),
            "actions": list(m.actions),
        }
    rate = (route.rate.more_than, route.rate.minutes) if route.HasField("rate") else None
    return {
        "match": match,
        "rate": rate,
        "link_template": route.link_template,
        "approval_link_template": route.approval_link_template,
    }


class ForwarderConfigService(pb_grpc.ForwarderConfigServiceServicer):
    def __init__(self, runtime: AdminRuntime):
        self.rt = runtime
        # the operator's outbound rules, named for what they vet here (only vet() is used: no request)
        self._vetter = OutboundClient(runtime.outbound.policy, purpose="audit forwarder")

    # -- shared ----------------------------------------------------------------------------------------
    @staticmethod
    def _check_name(name: str) -> None:
        if not SINK_NAME.match(name):
            raise InvalidArgument(
                f"name {name!r} must match {SINK_NAME.pattern} (lowercase letters, digits, '_', '.', '-')",
                metadata={"field": "name"},
            )

    async def _load(self, tenant: str, name: str, route: bool) -> SinkConfig:
        await self.rt.require_tenant(tenant)
        config = await self.rt.store.get_sink_config(tenant, name)
        kinds = ROUTE_KINDS if route else SINK_KINDS
        if config is None or config.kind not in kinds:
            what = "notification route" if route else "sink"
            raise NotFound(
                f"tenant {tenant!r} has no {what} named {name!r}",
                reason="ROUTE_NOT_FOUND" if route else "SINK_NOT_FOUND",
                metadata={"tenant": tenant, "name": name},
            )
        return config

    async def _vet(self, tenant: str, name: str, spec: dict[str, Any], action: str) -> None:
        """Refuse a URL that is not http(s) or that the outbound rules refuse (audited as refused)."""
        for option, url in spec_urls(spec):
            parts = urlsplit(url)
            if parts.scheme not in ("http", "https") or not parts.hostname:
                raise InvalidArgument(
                    f"options.{option} must be an http or https URL, not {url!r}",
                    reason="FORWARDER_CONFIG_INVALID",
                    metadata={"field": f"options.{option}"},
                )
            try:
                await self._vetter.vet(url)
            except OutboundRefused as exc:
                await self.rt.audit(
                    tenant, f"{action}.refused", name, {f"options.{option}": url, "reason": exc.message}
                )
                raise InvalidArgument(
                    f"options.{option} refused: {exc.message}",
                    reason="OUTBOUND_REFUSED",
                    metadata={"field": f"options.{option}", **exc.metadata},
                ) from None
            except DependencyError:
                pass  # a name that does not resolve yet: vetted again at every delivery

    async def _create(self, tenant: str, name: str, kind: str, spec: dict[str, Any], what: str) -> SinkConfig:
        await self._vet(tenant, f"{what}:{name}", spec, f"{what}.create")
        now = self.rt.clock()
        config = SinkConfig(tenant, name, kind, spec, 1, now, now)
        await self.rt.audited(
            lambda: self.rt.store.create_sink_config(config),
            tenant,
            f"{what}.create",
            f"{what}:{name}",
            {"kind": kind, **spec},
        )
        return config

    @staticmethod
    def _same_kind(current: SinkConfig, kind: str) -> str:
        if kind and kind != current.kind:
            raise InvalidArgument(
                f"the kind of {current.name!r} is {current.kind}; create another one to change it",
                reason="FORWARDER_CONFIG_INVALID",
                metadata={"field": "kind"},
            )
        return current.kind

    async def _update(
        self, current: SinkConfig, spec: dict[str, Any], expected: int, what: str
    ) -> SinkConfig:
        tenant, name = current.tenant, current.name
        await self._vet(tenant, f"{what}:{name}", spec, f"{what}.update")
        return await self.rt.audited(
            lambda: self.rt.store.update_sink_config(
                tenant, name, spec, self.rt.clock(), expected_version=expected or None
            ),
            tenant,
            f"{what}.update",
            f"{what}:{name}",
            lambda updated: {"kind": updated.kind, "version": updated.version, **spec},
        )

    async def _delete(self, config: SinkConfig, what: str) -> None:
        async def delete() -> bool:
            if not await self.rt.store.delete_sink_config(config.tenant, config.name):
                raise NotFound(f"{config.name!r} was deleted meanwhile")
            return True

        await self.rt.audited(
            delete, config.tenant, f"{what}.delete", f"{what}:{config.name}", {"kind": config.kind}
        )

    # -- sinks -----------------------------------------------------------------------------------------
    @staticmethod
    def _sink_pb(config: SinkConfig) -> pb.Sink:
        spec = config.spec
        return pb.Sink(
            name=config.name,
            kind=config.kind,
            options=convert.struct_of(spec.get("options") or {}),
            secret=spec.get("secret") or "",
            version=config.version,
            created_at=convert.timestamp(config.created_at),
            updated_at=convert.timestamp(config.updated_at),
            forwarder_sink=forwarder_sink_name(config.tenant, config.name),
        )

    @staticmethod
    def _sink_spec(sink: pb.Sink) -> dict[str, Any]:
        options = convert.dict_of(sink.options)
        return _valid(lambda: validate_sink_spec(sink.kind, options, sink.secret, route=False))

    async def CreateSink(self, request: pb.CreateSinkRequest, context) -> pb.CreateSinkResponse:
        await self.rt.require_tenant(request.tenant)
        self._check_name(request.sink.name)
        spec = self._sink_spec(request.sink)
        config = await self._create(request.tenant, request.sink.name, request.sink.kind, spec, "sink")
        return pb.CreateSinkResponse(sink=self._sink_pb(config))

    async def ListSinks(self, request: pb.ListSinksRequest, context) -> pb.ListSinksResponse:
        await self.rt.require_tenant(request.tenant)
        configs = await self.rt.store.list_sink_configs(request.tenant)
        return pb.ListSinksResponse(sinks=[self._sink_pb(c) for c in configs if c.kind in SINK_KINDS])

    async def GetSink(self, request: pb.GetSinkRequest, context) -> pb.GetSinkResponse:
        return pb.GetSinkResponse(sink=self._sink_pb(await self._load(request.tenant, request.name, False)))

    async def UpdateSink(self, request: pb.UpdateSinkRequest, context) -> pb.UpdateSinkResponse:
        current = await self._load(request.tenant, request.name, False)
        if request.sink.name not in ("", request.name):
            raise InvalidArgument("a sink cannot be renamed", metadata={"field": "sink.name"})
        kind = self._same_kind(current, request.sink.kind)
        sink = pb.Sink(kind=kind, options=request.sink.options, secret=request.sink.secret)
        spec = self._sink_spec(sink)
        updated = await self._update(current, spec, request.expected_version, "sink")
        return pb.UpdateSinkResponse(sink=self._sink_pb(updated))

    async def DeleteSink(self, request: pb.DeleteSinkRequest, context) -> pb.DeleteSinkResponse:
        await self._delete(await self._load(request.tenant, request.name, False), "sink")
        return pb.DeleteSinkResponse()

    # -- notification routes ---------------------------------------------------------------------------
    @staticmethod
    def _route_pb(config: SinkConfig) -> pb.NotificationRoute:
        spec = config.spec
        match = spec.get("match")
        rate = spec.get("rate")
        return pb.NotificationRoute(
            name=config.name,
            kind=config.kind,
            secret=spec.get("secret") or "",
            match=pb.NotificationMatch(**match) if match else None,
            rate=pb.RateRule(**rate) if rate else None,
            link_template=spec.get("link_template") or "",
            approval_link_template=spec.get("approval_link_template") or "",
            options=convert.struct_of(spec.get("options") or {}),
            version=config.version,
            created_at=convert.timestamp(config.created_at),
            updated_at=convert.timestamp(config.updated_at),
            forwarder_sink=forwarder_sink_name(config.tenant, config.name),
        )

    @staticmethod
    def _route_spec(route: pb.NotificationRoute, kind: str) -> dict[str, Any]:
        options = convert.dict_of(route.options)
        fields = _route_fields(route)
        return _valid(lambda: validate_route_spec(kind, options, route.secret, **fields))

    async def CreateNotificationRoute(
        self, request: pb.CreateNotificationRouteRequest, context
    ) -> pb.CreateNotificationRouteResponse:
        await self.rt.require_tenant(request.tenant)
        route = request.route
        self._check_name(route.name)
        spec = self._route_spec(route, route.kind)
        config = await self._create(request.tenant, route.name, route.kind, spec, "notification_route")
        return pb.CreateNotificationRouteResponse(route=self._route_pb(config))

    async def ListNotificationRoutes(
        self, request: pb.ListNotificationRoutesRequest, context
    ) -> pb.ListNotificationRoutesResponse:
        await self.rt.require_tenant(request.tenant)
        configs = await self.rt.store.list_sink_configs(request.tenant)
        return pb.ListNotificationRoutesResponse(
            routes=[self._route_pb(c) for c in configs if c.kind in ROUTE_KINDS]
        )

    async def GetNotificationRoute(
        self, request: pb.GetNotificationRouteRequest, context
    ) -> pb.GetNotificationRouteResponse:
        config = await self._load(request.tenant, request.name, True)
        return pb.GetNotificationRouteResponse(route=self._route_pb(config))

    async def UpdateNotificationRoute(
        self, request: pb.UpdateNotificationRouteRequest, context
    ) -> pb.UpdateNotificationRouteResponse:
        current = await self._load(request.tenant, request.name, True)
        if request.route.name not in ("", request.name):
            raise InvalidArgument("a route cannot be renamed", metadata={"field": "route.name"})
        spec = self._route_spec(request.route, self._same_kind(current, request.route.kind))
        updated = await self._update(current, spec, request.expected_version, "notification_route")
        return pb.UpdateNotificationRouteResponse(route=self._route_pb(updated))

    async def DeleteNotificationRoute(
        self, request: pb.DeleteNotificationRouteRequest, context
    ) -> pb.DeleteNotificationRouteResponse:
        await self._delete(await self._load(request.tenant, request.name, True), "notification_route")
        return pb.DeleteNotificationRouteResponse()

    # -- dead letters ----------------------------------------------------------------------------------
    async def ReplayDeadLetter(
        self, request: pb.ReplayDeadLetterRequest, context
    ) -> pb.ReplayDeadLetterResponse:
        if request.id <= 0:
            raise InvalidArgument("id is required", reason="FIELD_REQUIRED", metadata={"field": "id"})
        dead = await request_replay(self.rt.store, request.id, principal().identity, tenant=request.tenant)
        return pb.ReplayDeadLetterResponse(
            sink=dead.sink,
            from_seq=dead.from_seq,
            to_seq=dead.to_seq,
            replay_requested_at=convert.timestamp(dead.replay_requested_at),
        )
