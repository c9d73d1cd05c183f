"""Keeping each tenant's derived catalog current: fetch the upstream's MCP ``tools/list`` and store it.

A tenant names its upstream MCP endpoint (``intent.tools_url`` in the tenants file); the fetched tool list
is stored in the tenant's settings (``upstream_tools``), so every check service replica builds the same
catalog from the store (:func:`catalog_for_settings`), and a replica that cannot reach the upstream keeps
the last list. Refreshes run on a schedule (:class:`CatalogRefresher`: the tenant's own interval, set
through the admin API's ``IntentService``, else ``TESSERA_INTENT_REFRESH_S``) and on an operator's request
(``tessera intent refresh``, ``RefreshIntentCatalog``).

The fetch uses the official ``mcp`` SDK (``initialize`` then ``tools/list``, following pagination),
bounded in time, pages and tools. A failed fetch changes nothing: the stored list stays.
"""

from __future__ import annotations

import asyncio
import dataclasses
import logging
import time
from collections.abc import Awaitable, Callable, Iterable
from typing import Any

from authz.errors import ConfigError, DependencyError, InvalidArgument
from authz.intent._catalog import ToolCatalog
from authz.intent._derive import MAX_TOOLS, catalog_from_tools_list
from authz.outbound import OutboundClient, pinned_request_hook
from authz.receipts import HEADER as RECEIPT_HEADER

__all__ = ["CatalogRefresher", "catalog_for_settings", "fetch_tools_list", "refresh_catalogs"]

log = logging.getLogger("tessera.intent")

MAX_PAGES = 20
#: How often the scheduled refresher looks for tenants that are due (at most).
TICK_S = 10.0
#: After a failed scheduled fetch, the next try comes this much later (or one interval, if shorter).
RETRY_S = 30.0
#: Keys of a tool kept from ``tools/list`` (the rest, e.g. output schemas, is not used for intent).
_KEPT = ("name", "title", "description", "inputSchema", "annotations")

Fetch = Callable[[str], Awaitable[dict[str, Any]]]


async def fetch_tools_list(
    url: str,
    *,
    outbound: OutboundClient,
    timeout_s: float = 10.0,
    receipt_for: Callable[[bytes], str] | None = None,
) -> dict[str, Any]:
    """``{"tools": [...]}`` from the MCP server at ``url`` (streamable HTTP); raises DependencyError
    (:class:`authz.errors.OutboundRefused` when ``outbound``'s policy refuses the address).

    ``receipt_for`` (:func:`authz.receipts.self_receipts`) puts a Tessera receipt on every request of the
    session, so a tool server that refuses requests without one (``ReceiptMiddleware``) answers.

    The URL is vetted by Tessera's one outbound client (resolved once, loopback/private/metadata
    addresses refused unless ``TESSERA_OUTBOUND_ALLOW`` permits them). The MCP session then connects to
    the vetted address itself (:func:`authz.outbound.pinned_request_hook`; ``Host``, TLS SNI and the
    certificate check keep the name), so a DNS answer that changes after the check cannot redirect it.
    Redirects are not followed."""
    # The SDK's first import takes a while: done on a thread, so a check service's event loop keeps
    # answering checks (and its readiness probe) while its first scheduled refresh starts.
    httpx2, ClientSession, streamable_http_client = await asyncio.to_thread(_client_modules)

    try:
        parsed, _host, address = await outbound.vet(url)
    except InvalidArgument as exc:
        raise DependencyError(f"tools/list URL refused: {exc.message}") from None
    hooks: dict[str, list[Any]] = {"request": [pinned_request_hook(parsed, address)]}
    if receipt_for is not None:

        async def add_receipt(request: Any) -> None:
            request.headers[RECEIPT_HEADER] = receipt_for(request.content)

        hooks["request"].append(add_receipt)
    client = httpx2.AsyncClient(timeout=timeout_s, follow_redirects=False, trust_env=False, event_hooks=hooks)
    tools: list[dict[str, Any]] = []
    try:
        async with (
            asyncio.timeout(timeout_s),
            client,
            streamable_http_client(url, http_client=client) as streams,
            ClientSession(streams[0], streams[1]) as session,
        ):
            await session.initialize()
            cursor = None
            for _ in range(MAX_PAGES):
                if cursor is None:
                    result = await session.list_tools()
                else:
                    from mcp.types import PaginatedRequestParams

                    result = await session.list_tools(params=PaginatedRequestParams(cursor=cursor))
                for tool in result.tools:
                    dumped = tool.model_dump(by_alias=True, exclude_none=True, mode="json")
                    tools.append({k: dumped[k] for k in _KEPT if k in dumped})
                if len(tools) > MAX_TOOLS:
                    raise DependencyError(f"{url}: tools/list has more than {MAX_TOOLS} tools")
                cursor = getattr(result, "next_cursor", None) or getattr(result, "nextCursor", None)
                if not cursor:
                    break
    except DependencyError:
        raise
    except TimeoutError:
        raise DependencyError(f"{url}: tools/list did not answer within {timeout_s:g}s") from None
    except Exception as exc:  # transport, protocol or server errors: the stored list stays
        raise DependencyError(f"{url}: tools/list failed: {type(exc).__name__}: {exc}") from None
    return {"tools": tools}


def _client_modules() -> tuple[Any, Any, Any]:
    import httpx2
    from mcp.client.session import ClientSession
    from mcp.client.streamable_http import streamable_http_client

    return httpx2, ClientSession, streamable_http_client


def catalog_for_settings(catalog: dict[str, Any] | None, upstream_tools: Iterable[Any] | None) -> ToolCatalog:
    """A tenant's catalog: derived from its stored upstream tool list, hand-written entries overriding.

    Raises :class:`ConfigError` for malformed hand-written entries or a malformed stored list.
    """
    overrides = ToolCatalog.from_mapping(catalog, origin="catalog") if catalog else None
    if upstream_tools is None:
        return overrides if overrides is not None else ToolCatalog(())
    return catalog_from_tools_list({"tools": list(upstream_tools)}, overrides=overrides)


async def refresh_catalogs(
    store: Any, *, fetch: Fetch, tenants: Iterable[str] | None = None
) -> dict[str, str]:
    """Fetch ``tools/list`` for each tenant with a ``tools_url`` (or just ``tenants``) and store changes.

    Returns tenant → what happened (``updated``, ``unchanged`` or the error); never raises for one
    tenant's upstream failing.
    """
    wanted = set(tenants) if tenants is not None else None
    outcome: dict[str, str] = {}
    known = await store.list_tenants()
    for name in sorted((wanted or set()) - set(known)):
        outcome[name] = "unknown tenant"
    for name, settings in sorted(known.items()):
        if wanted is not None and name not in wanted:
            continue
        servers = sorted(s for s, e in settings.server_catalogs.items() if e.get("tools_url"))
        for server in servers:  # catalogs are per (tenant, server): each server's list is its own
            outcome[f"{name}/{server}"] = await _refresh_server(store, name, server, fetch)
        url = getattr(settings, "tools_url", None)
        if not url:
            if wanted is not None and not servers:
                outcome[name] = "no tools_url configured"
            continue
        try:
            listed = await fetch(url)
            catalog_from_tools_list(listed)  # refuse to store what cannot be turned into a catalog
        except (DependencyError, ConfigError) as exc:
            outcome[name] = f"failed: {exc.message}"
            log.warning("tenant %s: tools/list refresh failed: %s", name, exc.message)
            continue
        tools = tuple(listed["tools"])
        if tools == settings.upstream_tools:
            outcome[name] = "unchanged"
            continue
        current = await store.get_tenant(name)  # re-read: settings may have changed while fetching
        if current is None or current.tools_url != url:
            outcome[name] = "skipped: settings changed during the refresh"
            continue
        await store.put_tenant(name, dataclasses.replace(current, upstream_tools=tools))
        outcome[name] = f"updated ({len(tools)} tools)"
        log.info("tenant %s: catalog refreshed from %s (%d tools)", name, url, len(tools))
    return outcome


async def _refresh_server(store: Any, tenant: str, server: str, fetch: Fetch) -> str:
    """Fetch one tool server's ``tools/list`` into ``server_catalogs[server].upstream_tools``."""
    settings = await store.get_tenant(tenant)
    entry = (settings.server_catalogs.get(server) or {}) if settings is not None else {}
    url = entry.get("tools_url")
    if not url:
        return "no tools_url configured"
    try:
        listed = await fetch(url)
        catalog_from_tools_list(listed)
    except (DependencyError, ConfigError) as exc:
        log.warning("tenant %s server %s: tools/list refresh failed: %s", tenant, server, exc.message)
        return f"failed: {exc.message}"
    tools = list(listed["tools"])
    current = await store.get_tenant(tenant)  # re-read: settings may have changed while fetching
    entry = (current.server_catalogs.get(server) or {}) if current is not None else {}
    if current is None or entry.get("tools_url") != url:
        return "skipped: settings changed during the refresh"
    if entry.get("upstream_tools") == tools:
        return "unchanged"
    catalogs = {**current.server_catalogs, server: {**entry, "upstream_tools": tools}}
    await store.put_tenant(tenant, dataclasses.replace(current, server_catalogs=catalogs))
    log.info("tenant %s server %s: catalog refreshed from %s (%d tools)", tenant, server, url, len(tools))
    return f"updated ({len(tools)} tools)"


class CatalogRefresher:
    """Refreshes each tenant's upstream tool list now, then every ``intent_refresh_s`` of the tenant's
    settings (``interval_s`` when the tenant sets none), until cancelled.

    It wakes every ``tick_s`` (at most :data:`TICK_S`) to see which tenants are due, so a changed
    interval or a new ``tools_url`` takes effect within a tick. A failed fetch counts as a refresh (the
    next try is :data:`RETRY_S` later, or one interval when that is shorter: an upstream that starts after
    Tessera is picked up soon, and an unreachable one is not hammered)."""

    def __init__(
        self,
        store: Any,
        *,
        interval_s: float,
        fetch: Fetch,
        tick_s: float | None = None,
        clock: Callable[[], float] = time.monotonic,
    ):
        self._store = store
        self._interval_s = interval_s
        self._fetch = fetch
        self._tick_s = tick_s if tick_s is not None else min(interval_s, TICK_S)
        self._clock = clock
        self._last: dict[tuple[str, str], float] = {}  # (tenant, tools_url) -> when last refreshed

    async def run_once(self) -> dict[str, str]:
        """Refresh the tenants that are due; returns what happened to each (see refresh_catalogs)."""
        now = self._clock()
        due: dict[str, tuple[str, float]] = {}
        for name, settings in (await self._store.list_tenants()).items():
            # the tenant's URLs, its servers' included (catalogs per tenant and server)
            urls = " ".join(
                filter(
                    None,
                    [settings.tools_url, *(e.get("tools_url") for e in settings.server_catalogs.values())],
                )
            )
            if not urls:
                continue
            interval = settings.intent_refresh_s or self._interval_s
            last = self._last.get((name, urls))
            if last is None or now - last >= interval:
                due[name] = (urls, interval)
                self._last[(name, urls)] = now
        if not due:
            return {}
        outcome = await refresh_catalogs(self._store, fetch=self._fetch, tenants=due)
        for name, (url, interval) in due.items():
            if any(
                v.startswith("failed") for k, v in outcome.items() if k == name or k.startswith(name + "/")
            ):
                self._last[(name, url)] = now - interval + min(interval, RETRY_S)
        return outcome

    async def run(self) -> None:
        while True:
            try:
                await self.run_once()
            except asyncio.CancelledError:
                raise
            except Exception as exc:  # the store is down: try again next round
                log.warning("catalog refresh failed: %s", exc)
            await asyncio.sleep(self._tick_s)
