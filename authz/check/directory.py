"""What the check path knows about each tenant, kept in memory and refreshed when the store changes.

The hot path reads an immutable snapshot (settings, intent extractor, compiled policy); a background
task swaps in a new snapshot when the store's change counters move (SQLite: a cheap poll; PostgreSQL:
LISTEN/NOTIFY wakes the same refresh). Readers never lock: a swap is one attribute assignment.
Compiled policies are reused by content hash, so a refresh compiles only what changed.
"""

from __future__ import annotations

import asyncio
import json
import logging
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field, replace
from types import MappingProxyType
from typing import Any

from authz.budget import BudgetRule, parse_rules
from authz.errors import ConfigError, DependencyError, InvalidArgument
from authz.provenance import NO_WRITERS, WriterKeys
from authz.storage import PolicyVersion, Store, StoreVersions, TenantSettings

log = logging.getLogger("tessera.directory")


@dataclass(frozen=True, slots=True)
class TenantView:
    name: str
    settings: TenantSettings
    policy: Any | None  # authz.policy.CompiledPolicy
    policy_version: PolicyVersion | None
    extractor: Any | None  # intent extractor for this tenant (None: intent off)
    budget_rules: tuple[BudgetRule, ...] = ()
    #: Set when the stored settings cannot be used (e.g. a malformed budget rule): the tenant's
    #: tool calls deny with -32018 until the settings are fixed, rather than running unbudgeted.
    settings_error: str | None = None
    #: The tenant's registered memory writers with their keys loaded (authz.provenance.WriterKeys).
    writers: WriterKeys = NO_WRITERS
    #: Intent extractors per MCP tool server (``settings.server_catalogs``), and the one for a named
    #: server without a catalog of its own (an empty catalog); see :meth:`extractor_for`.
    server_extractors: Mapping[str, Any] = field(default_factory=lambda: MappingProxyType({}))
    unlisted_server_extractor: Any | None = None

    def extractor_for(self, server: str | None) -> Any | None:
        """The intent extractor for a request to ``server`` (None: the main endpoint). Catalogs are per
        (tenant, server): ``read_invoice`` of one server is not ``read_invoice`` of another."""
        if server is None:
            return self.extractor
        found = self.server_extractors.get(server)
        return found if found is not None else self.unlisted_server_extractor


class UnusableCatalog:
    """The intent extractor of a server whose catalog does not load: every extraction fails, so its
    calls with a prompt deny with -32018 (the pipeline's one fail-closed boundary)."""

    def __init__(self, reason: str):
        self.reason = reason

    async def extract(self, tenant: str, agent: str | None, prompt: str) -> Any:
        raise DependencyError(self.reason)


def settings_for_server(settings: TenantSettings, server: str | None) -> TenantSettings:
    """The tenant's settings as a request to ``server`` sees them: that server's catalog, tools URL and
    fetched tool list in place of the main endpoint's (an empty catalog when it has none)."""
    if server is None:
        return settings
    entry = settings.server_catalogs.get(server) or {}
    upstream = entry.get("upstream_tools")
    return replace(
        settings,
        catalog=dict(entry.get("catalog") or {}),
        tools_url=entry.get("tools_url") or None,
        upstream_tools=tuple(upstream) if isinstance(upstream, list | tuple) else None,
        server_catalogs={},
    )


class TenantDirectory:
    """Snapshot of every tenant; ``refresh()`` reloads what changed, ``run()`` keeps it fresh."""

    def __init__(
        self,
        store: Store,
        *,
        compile_policy: Callable[[str, int], Any],
        build_extractor: Callable[[str, TenantSettings], Any | None],
        poll_interval_s: float = 0.5,
        remote_policy: Callable[[str, dict[str, Any], PolicyVersion], Any] | None = None,
    ):
        # remote_policy(tenant, settings.policy_engine, active version): the policy object of a tenant
        # that decides through a policy server (authz.policy.OpaPolicy); without it such a tenant has
        # no usable policy and denies.
        self._remote_policy = remote_policy
        self._remote: dict[tuple[str, str, str], Any] = {}
        self._store = store
        self._compile = compile_policy
        self._build_extractor = build_extractor
        self._poll_interval_s = poll_interval_s
        self._tenants: MappingProxyType[str, TenantView] = MappingProxyType({})
        self._compiled: dict[str, Any] = {}  # content hash -> CompiledPolicy
        self._versions: StoreVersions | None = None
        self.last_error: str | None = None

    def get(self, tenant: str) -> TenantView | None:
        return self._tenants.get(tenant)

    @property
    def versions(self) -> StoreVersions | None:
        return self._versions

    async def refresh(self, *, force: bool = False) -> bool:
        """Reload when the store's counters moved; True when a new snapshot was installed."""
        versions = await self._store.versions()
        if not force and versions == self._versions:
            return False
        settings = await self._store.list_tenants()
        policies = await self._store.active_policies()
        writers = await self._memory_writers()
        views: dict[str, TenantView] = {}
        old = self._tenants
        compiled: dict[str, Any] = {}
        for name, tenant_settings in settings.items():
            version = policies.get(name)
            policy = None
            if version is not None:
                policy = self._compiled.get(version.content_hash)
                if policy is None:
                    try:
                        policy = self._compile(version.source, version.version)
                    except Exception as exc:  # a stored policy that no longer compiles: the tenant denies
                        log.error("tenant %s policy v%s does not compile: %s", name, version.version, exc)
                        policy = None
                if policy is not None:
                    compiled[version.content_hash] = policy
                if tenant_settings.policy_engine:
                    policy = self._remote_for(name, tenant_settings.policy_engine, version)
            previous = old.get(name)
            tenant_writers = WriterKeys.build(
                writers.get(name, ()), previous.writers if previous is not None else None
            )
            if previous is not None and previous.settings == tenant_settings:
                views[name] = replace(previous, policy=policy, policy_version=version, writers=tenant_writers)
                continue
            rules: tuple[BudgetRule, ...] = ()
            settings_error = None
            try:
                rules = parse_rules(tenant_settings.budget_rules)
                extractor = self._build_extractor(name, tenant_settings)
            except (InvalidArgument, ConfigError) as exc:
                log.error("tenant %s settings are unusable: %s", name, exc.message)
                extractor, settings_error = None, f"tenant settings are unusable: {exc.message}"
            servers, unlisted = self._server_extractors(name, tenant_settings)
            views[name] = TenantView(
                name,
                tenant_settings,
                policy,
                version,
                extractor,
                rules,
                settings_error,
                tenant_writers,
                MappingProxyType(servers),
                unlisted,
            )
        self._compiled = compiled
        self._tenants = MappingProxyType(views)
        self._versions = versions
        return True

    def _server_extractors(self, name: str, settings: TenantSettings) -> tuple[dict[str, Any], Any | None]:
        """Per-server extractors of a tenant, and the one for servers without a catalog (intent off: none)."""
        if settings.intent_mode == "off":
            return {}, None
        servers = {
            server: self._server_extractor(name, settings, server) for server in settings.server_catalogs
        }
        return servers, self._server_extractor(name, settings, None)

    def _server_extractor(self, name: str, settings: TenantSettings, server: str | None) -> Any | None:
        """One server's extractor (``server`` None: for servers without a catalog, an empty one). A
        catalog that does not load fails that server's calls closed, not the tenant's other servers."""
        try:
            return self._build_extractor(name, settings_for_server(settings, server or "\x00unlisted"))
        except (InvalidArgument, ConfigError) as exc:
            log.error("tenant %s: the catalog of server %s is unusable: %s", name, server, exc.message)
            return UnusableCatalog(f"the catalog of server {server!r} is unusable: {exc.message}")

    async def _memory_writers(self) -> dict[str, list[Any]]:
        """Every tenant's registered memory writers (read with the settings: a writer change bumps the
        settings version, so a disable reaches this replica within one refresh)."""
        by_tenant: dict[str, list[Any]] = {}
        for record in await self._store.list_memory_writers():
            by_tenant.setdefault(record.tenant, []).append(record)
        return by_tenant

    def _remote_for(self, name: str, engine: dict[str, Any], version: PolicyVersion) -> Any | None:
        if self._remote_policy is None:
            log.error(
                "tenant %s decides through %s, which this service cannot use", name, engine.get("engine")
            )
            return None
        key = (name, version.content_hash, json.dumps(engine, sort_keys=True))
        policy = self._remote.get(key)
        if policy is None:
            try:
                policy = self._remote_policy(name, engine, version)
            except Exception as exc:  # unusable settings: the tenant denies
                log.error("tenant %s policy engine is unusable: %s", name, exc)
                return None
            self._remote = {k: v for k, v in self._remote.items() if k[0] != name}
            self._remote[key] = policy
        return policy

    async def run(self) -> None:
        """Refresh until cancelled. A failed refresh keeps the last good snapshot and retries.

        A store with ``wait_for_change`` (PostgreSQL: LISTEN/NOTIFY) wakes the refresh as soon as another
        replica commits a change, and at least every poll interval anyway; other stores are polled.
        """
        wait_for_change = getattr(self._store, "wait_for_change", None)
        while True:
            if wait_for_change is None:
                await asyncio.sleep(self._poll_interval_s)
            else:
                await wait_for_change(self._poll_interval_s)  # returns True/False, never raises
            try:
                await self.refresh()
                self.last_error = None
            except asyncio.CancelledError:
                raise
            except Exception as exc:
                self.last_error = str(exc)
                log.warning("tenant refresh failed: %s", exc)
