"""``TenantService``: create, list, get, settings, budgets, webhook key (ARCHITECTURE §5, §7, §8)."""

from __future__ import annotations

import dataclasses
import math
from typing import Any

from authz.admin.webhook import KEY_PURPOSE, SIGNATURE_HEADER, validate_webhook_url, vet_webhook_url
from authz.api.admin.v1 import tenant_service_pb2 as pb
from authz.api.admin.v1 import tenant_service_pb2_grpc as pb_grpc
from authz.budget import parse_rules, window_bounds
from authz.errors import AlreadyExists, ConfigError, DependencyError, InvalidArgument, OutboundRefused
from authz.intent import ToolCatalog
from authz.policy import OpaSettings
from authz.server.admin import convert
from authz.server.admin._common import AdminRuntime
from authz.server.admin.access import in_scope
from authz.server.admin.auth import principal
from authz.storage import TenantSettings
from authz.tenants import valid_tenant_name
from authz.token import valid_name

_HOUR_MS = 3_600_000


def validated_settings(fields: dict[str, Any], *, intent_http: bool = False) -> TenantSettings:
    """TenantSettings from converted fields, refusing what the check path could not use (it would
    deny the tenant's calls with -32018 until fixed). ``intent_http``: intent comes from the HTTP
    extractor, so intent modes need no catalog."""
    if fields["intent_mode"] not in ("off", "advisory", "enforce"):
        raise InvalidArgument(
            f"unknown intent mode {fields['intent_mode']!r}", metadata={"field": "intent_mode"}
        )
    for tool in fields["provenance_required_tools"]:
        if not valid_name(tool):
            raise InvalidArgument(f"invalid tool name {tool!r} in provenance_required_tools")
    for tool, cost in fields["tool_costs"].items():
        if not valid_name(tool) or not math.isfinite(cost) or cost < 0:
            raise InvalidArgument(f"tool_costs[{tool!r}] must be a finite, non-negative number")
    # a catalog derived from the upstream's tools/list (tools_url) needs no hand-written one
    if (
        fields["intent_mode"] != "off"
        and not intent_http
        and not fields["catalog"]
        and not fields.get("tools_url")
    ):
        raise InvalidArgument(
            f"intent mode {fields['intent_mode']} needs a tool catalog (the built-in extractor reads it)",
            metadata={"field": "catalog"},
        )
    if fields["catalog"]:
        try:
            ToolCatalog.from_mapping(fields["catalog"])
        except ConfigError as exc:
            raise InvalidArgument(
                f"invalid tool catalog: {exc.message}", metadata={"field": "catalog"}
            ) from None
    parse_rules(fields["budget_rules"])  # InvalidArgument with the rule's problem
    if fields["approval_webhook_url"]:
        validate_webhook_url(fields["approval_webhook_url"])
    if fields.get("policy_engine"):
        try:
            fields["policy_engine"] = OpaSettings.parse(fields["policy_engine"]).to_json()
        except InvalidArgument as exc:
            raise InvalidArgument(exc.message, metadata={"field": "policy_engine"}) from None
    return TenantSettings(**fields)


class TenantService(pb_grpc.TenantServiceServicer):
    def __init__(self, runtime: AdminRuntime):
        self.rt = runtime

    async def _summaries(self, names: list[str], settings: dict[str, TenantSettings], with_settings: bool):
        store, now = self.rt.store, self.rt.clock()
        active = await store.active_policies()
        pending: dict[str, int] = {}
        for approval in await store.list_approvals(None, "pending"):
            if approval.tenant in settings and approval.effective_status(now) == "pending":
                pending[approval.tenant] = pending.get(approval.tenant, 0) + 1
        counts = await store.decision_counts(names, int(now * 1000) - _HOUR_MS)
        result = []
        for name in names:
            policy = active.get(name)
            hour = counts.get(name, {})
            result.append(
                pb.Tenant(
                    name=name,
                    settings=convert.settings(settings[name]) if with_settings else None,
                    active_policy_version=policy.version if policy else 0,
                    active_policy_hash=policy.content_hash if policy else "",
                    pending_approvals=pending.get(name, 0),
                    last_hour=pb.DecisionCounts(
                        allow=hour.get("allow", 0), deny=hour.get("deny", 0), escalate=hour.get("escalate", 0)
                    ),
                )
            )
        return result

    async def _vet_outbound(self, tenant: str, settings: TenantSettings) -> None:
        """Refuse a webhook or OPA URL the outbound rules refuse; the refused attempt is audited with why."""
        if settings.policy_engine:
            await self._vet_policy_engine(tenant, settings.policy_engine["url"])
        if not settings.approval_webhook_url:
            return
        try:
            await vet_webhook_url(settings.approval_webhook_url, self.rt.outbound)
        except InvalidArgument as exc:
            if exc.reason == "OUTBOUND_REFUSED":
                await self.rt.audit(
                    tenant,
                    "tenant.settings.refused",
                    f"tenant:{tenant}",
                    {"approval_webhook_url": settings.approval_webhook_url, "reason": exc.message},
                )
            raise

    async def _vet_policy_engine(self, tenant: str, url: str) -> None:
        try:
            await self.rt.outbound.vet(url)
        except OutboundRefused as exc:
            await self.rt.audit(
                tenant,
                "tenant.settings.refused",
                f"tenant:{tenant}",
                {"policy_engine.url": url, "reason": exc.message},
            )
            raise InvalidArgument(
                f"policy_engine.url refused: {exc.message}",
                reason="OUTBOUND_REFUSED",
                metadata={"field": "policy_engine", **exc.metadata},
            ) from None
        except DependencyError:
            pass  # a name that does not resolve yet: vetted again when the check service connects

    async def _one(self, tenant: str) -> pb.Tenant:
        await self.rt.require_tenant(tenant)
        settings = await self.rt.store.get_tenant(tenant)
        assert settings is not None
        (summary,) = await self._summaries([tenant], {tenant: settings}, True)
        return summary

    async def CreateTenant(self, request: pb.CreateTenantRequest, context) -> pb.CreateTenantResponse:
        if not valid_tenant_name(request.tenant):
            raise InvalidArgument(
                "tenant names are 1-128 characters without whitespace, '|' or ',' and do not start with '_'",
                metadata={"field": "tenant"},
            )
        settings = validated_settings(
            convert.settings_fields(request.settings), intent_http=self.rt.intent_http
        )
        await self._vet_outbound(request.tenant, settings)
        if await self.rt.store.get_tenant(request.tenant) is not None:
            raise AlreadyExists(f"tenant {request.tenant!r} exists already", reason="TENANT_EXISTS")
        await self.rt.audited(
            lambda: self.rt.store.put_tenant(request.tenant, settings),
            request.tenant,
            "tenant.create",
            f"tenant:{request.tenant}",
            settings.to_json(),
        )
        return pb.CreateTenantResponse(tenant=await self._one(request.tenant))

    async def ListTenants(self, request: pb.ListTenantsRequest, context) -> pb.ListTenantsResponse:
        everything = await self.rt.store.list_tenants()
        names = in_scope(principal(), sorted(everything))
        return pb.ListTenantsResponse(tenants=await self._summaries(names, everything, False))

    async def GetTenant(self, request: pb.GetTenantRequest, context) -> pb.GetTenantResponse:
        return pb.GetTenantResponse(tenant=await self._one(request.tenant))

    async def UpdateTenantSettings(
        self, request: pb.UpdateTenantSettingsRequest, context
    ) -> pb.UpdateTenantSettingsResponse:
        await self.rt.require_tenant(request.tenant)
        current = await self.rt.store.get_tenant(request.tenant)
        assert current is not None
        given = convert.settings_fields(request.settings)
        paths = list(request.update_mask.paths)
        unknown = sorted(set(paths) - set(convert.SETTINGS_FIELDS))
        if unknown:
            raise InvalidArgument(
                f"unknown settings field(s) in update_mask: {', '.join(unknown)}",
                metadata={"field": "update_mask", "allowed": ",".join(convert.SETTINGS_FIELDS)},
            )
        fields = {f.name: getattr(current, f.name) for f in dataclasses.fields(TenantSettings)}
        for name in paths or convert.SETTINGS_FIELDS:
            fields[name] = given[name]
        settings = validated_settings(fields, intent_http=self.rt.intent_http)
        if (settings.approval_webhook_url, settings.policy_engine) != (
            current.approval_webhook_url,
            current.policy_engine,
        ):
            await self._vet_outbound(request.tenant, settings)

        async def update() -> None:
            if settings != current:
                await self.rt.store.put_tenant(request.tenant, settings)

        await self.rt.audited(
            update,
            request.tenant,
            "tenant.settings.update",
            f"tenant:{request.tenant}",
            {"fields": paths or list(convert.SETTINGS_FIELDS), "settings": settings.to_json()},
        )
        return pb.UpdateTenantSettingsResponse(settings=convert.settings(settings))

    async def GetTenantBudgets(
        self, request: pb.GetTenantBudgetsRequest, context
    ) -> pb.GetTenantBudgetsResponse:
        await self.rt.require_tenant(request.tenant)
        settings = await self.rt.store.get_tenant(request.tenant)
        assert settings is not None
        tenant, now = request.tenant, self.rt.clock()
        rules = []
        for raw, rule in zip(settings.budget_rules, parse_rules(settings.budget_rules), strict=True):
            start, end = window_bounds(rule.window, now)
            usage = []
            for kind, limit in (("calls", rule.max_calls), ("cost", rule.max_cost)):
                if limit is None:
                    continue
                if rule.scope == "tenant" or rule.agent or request.agent:
                    agent = None if rule.scope == "tenant" else (rule.agent or request.agent)
                    if rule.agent and request.agent and rule.agent != request.agent:
                        continue
                    key = rule.counter_key(tenant, agent, kind)
                    counters = {key: await self.rt.store.usage(key, start)}
                else:  # every agent has its own counter: show those with usage in this window
                    prefix, suffix = f"{tenant}/rule/agent/", f"/{rule.window}/{kind}"
                    counters = {
                        k: v
                        for k, v in (await self.rt.store.usage_counters(prefix, start)).items()
                        if k.endswith(suffix)
                    }
                for key, used in counters.items():
                    who = ""
                    if rule.scope == "agent":
                        who = key[len(f"{tenant}/rule/agent/") : -len(f"/{rule.window}/{kind}")]
                    usage.append(
                        pb.BudgetUsage(
                            agent="" if who == "-" else who,
                            kind=kind,
                            used=used,
                            limit=limit,
                            counter_key=key,
                        )
                    )
            rules.append(
                pb.BudgetRuleUsage(
                    rule=convert.budget_rule(raw),
                    window_start=convert.timestamp(start),
                    window_end=convert.timestamp(end),
                    usage=usage,
                )
            )
        return pb.GetTenantBudgetsResponse(rules=rules, tool_costs=dict(settings.tool_costs))

    async def GetWebhookSecret(
        self, request: pb.GetWebhookSecretRequest, context
    ) -> pb.GetWebhookSecretResponse:
        await self.rt.require_tenant(request.tenant)
        secret = self.rt.keyring.derive_subkey(KEY_PURPOSE, request.tenant)
        # A read, but of a secret: who looked at it belongs in the chain.
        await self.rt.audit(request.tenant, "tenant.webhook_secret.read", f"tenant:{request.tenant}", {})
        return pb.GetWebhookSecretResponse(secret_hex=secret.hex(), header=SIGNATURE_HEADER)
