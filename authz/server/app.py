"""Builds and runs a check service process from a :class:`authz.config.TesseraConfig`."""

from __future__ import annotations

import asyncio
import functools
import gc
import logging
import signal
from contextlib import AsyncExitStack
from dataclasses import dataclass, field
from typing import Any

import grpc
from envoy.service.auth.v3 import external_auth_pb2_grpc
from grpc_health.v1 import health, health_pb2, health_pb2_grpc

from authz.audit import make_recorder
from authz.check import DecisionRecorder, Pipeline, TenantDirectory
from authz.config import TesseraConfig
from authz.intent import (
    CatalogExtractor,
    CatalogRefresher,
    HttpExtractor,
    catalog_for_settings,
    fetch_tools_list,
)
from authz.oauth import accept_access_tokens
from authz.observability import CheckMetrics, Tracing, new_registry, serve_http, setup_tracing
from authz.outbound import OutboundClient, policy_from_config
from authz.policy import OpaClients, compile_policy
from authz.receipts import ReceiptSigner, derived_keys, self_receipt_issuer
from authz.server.check_service import AuthorizationService
from authz.server.list_service import add_list_processor, list_filter_for
from authz.storage import Store, TenantSettings, open_store
from authz.tenants import apply_tenants_file
from authz.token import KeyRing, TokenAuthenticator

log = logging.getLogger("tessera")

CHECK_SERVICE_NAME = "envoy.service.auth.v3.Authorization"

#: Envoy multiplexes every Check on one HTTP/2 connection per worker: allow many concurrent streams, and
#: no SO_REUSEPORT (several processes on one port would not share that one connection anyway).
GRPC_SERVER_OPTIONS = [("grpc.so_reuseport", 0), ("grpc.max_concurrent_streams", 1000)]


def grpc_server_options(*, reuse_port: bool = False) -> list[tuple[str, int]]:
    """:data:`GRPC_SERVER_OPTIONS`, with ``SO_REUSEPORT`` for the workers that share one check port
    (authz.server.workers): the kernel spreads the clients' connections over them."""
    return [("grpc.so_reuseport", int(reuse_port)), *GRPC_SERVER_OPTIONS[1:]]


def tune_gc() -> None:
    """Keep the cyclic garbage collector off the hot path.

    A check allocates only short-lived, acyclic objects (freed by reference counting), yet the default
    thresholds run a collection every 700 allocations, and each full collection walks every long-lived
    object (compiled policies, token and intent caches): measured at ~90 µs per check. Objects alive
    after startup are frozen out of collection, and collections become rarer.
    """
    gc.collect()
    gc.freeze()
    gc.set_threshold(50_000, 50, 100)


@dataclass
class CheckRuntime:
    """Everything a running check service holds; built by :func:`build_runtime`."""

    config: TesseraConfig
    store: Store
    keyring: KeyRing
    directory: TenantDirectory
    pipeline: Pipeline
    recorder: DecisionRecorder
    metrics: CheckMetrics
    #: Connections to the OPA servers of tenants that decide through OPA (authz.policy.OpaClients).
    opa: OpaClients = field(default_factory=OpaClients)
    jwks: Any = None  # authz.oauth.JwksCache when OAuth access tokens are accepted
    #: None unless the OTEL_* variables turn tracing on.
    tracing: Tracing | None = None
    #: Signs the receipt of each allowed request (None when TESSERA_RECEIPTS is off).
    receipts: ReceiptSigner | None = None


def _extractor_factory(config: TesseraConfig):
    http = None
    if config.intent.http_url:
        http = HttpExtractor(
            config.intent.http_url,
            timeout=config.intent.http_timeout_s,
            cache_size=config.intent.cache_size,
            cache_ttl=config.intent.cache_ttl_s,
            policy=policy_from_config(config),
        )

    def build(tenant: str, settings: TenantSettings) -> Any | None:
        if settings.intent_mode == "off":
            return None
        if http is not None:
            return http
        return CatalogExtractor({tenant: catalog_for_settings(settings.catalog, settings.upstream_tools)})

    return build


def _catalog_refresher(config: TesseraConfig, store: Store, keyring: KeyRing) -> CatalogRefresher:
    """Fetches each tenant's upstream ``tools/list`` on a schedule (tenants with ``intent.tools_url``)."""

    outbound = OutboundClient(
        policy_from_config(config), timeout_s=config.intent.refresh_timeout_s, purpose="intent tools/list"
    )
    receipt_for = self_receipt_issuer(config.receipts, keyring.derive_subkey)

    async def fetch(url: str) -> dict[str, Any]:
        return await fetch_tools_list(
            url, outbound=outbound, timeout_s=config.intent.refresh_timeout_s, receipt_for=receipt_for
        )

    return CatalogRefresher(store, interval_s=config.intent.refresh_s, fetch=fetch)


async def build_runtime(config: TesseraConfig) -> CheckRuntime:
    store = open_store(config.store.database_url)
    if config.tenants_file is not None:
        validate = functools.partial(compile_policy, engine=config.check.policy_engine)
        for change in await apply_tenants_file(store, config.tenants_file, validate_policy=validate):
            log.info("%s", change)
    keyring = KeyRing(
        config.keys.master_key, active_kid=config.keys.active_kid, live_kids=config.keys.live_kids
    )
    opa = OpaClients(policy_from_config(config))
    directory = TenantDirectory(
        store,
        compile_policy=lambda source, version: compile_policy(
            source, version=version, engine=config.check.policy_engine
        ),
        build_extractor=_extractor_factory(config),
        poll_interval_s=config.store.poll_interval_s,
        remote_policy=opa.policy,
    )
    await directory.refresh(force=True)
    metrics = CheckMetrics(tenant_label=config.observability.metrics_tenant_label)
    tracing = setup_tracing("tessera-check") if config.observability.tracing else None
    authenticator, jwks = accept_access_tokens(
        config.oauth_issuers_file,
        TokenAuthenticator(keyring, cache_size=config.check.token_cache_size),
        outbound=OutboundClient(policy_from_config(config), timeout_s=5.0, purpose="OAuth JWKS"),
    )
    if jwks is not None:
        await jwks.refresh()
    pipeline = Pipeline(
        authenticator=authenticator,
        store=store,
        directory=directory,
        memory_key=lambda tenant: keyring.derive_subkey("memory", tenant),
        approval_ttl_s=config.check.approval_ttl_s,
        approval_quorum=config.check.approval_quorum,
        default_deadline_s=config.check.deadline_ms / 1000,
        observer=metrics,
        tracer=(
            tracing.pipeline_tracer(stages=config.observability.trace_stages) if tracing is not None else None
        ),
    )
    recorder = make_recorder(config, store)
    receipts = None
    if config.receipts.enabled:
        active = derived_keys(config.receipts.kids[:1], keyring.derive_subkey)[0]
        receipts = ReceiptSigner(active, ttl_s=config.receipts.ttl_s)
    return CheckRuntime(
        config,
        store,
        keyring,
        directory,
        pipeline,
        recorder,
        metrics,
        opa,
        jwks=jwks,
        tracing=tracing,
        receipts=receipts,
    )


async def serve_check(
    config: TesseraConfig, *, ready: asyncio.Event | None = None, reuse_port: bool = False
) -> None:
    """Run the check service until SIGTERM/SIGINT: ext_authz + health on the check port, metrics HTTP.

    ``reuse_port``: bind the check port with SO_REUSEPORT (one of several workers, authz.server.workers).
    """
    runtime = await build_runtime(config)
    tune_gc()
    # With tracing off there is no interceptor at all: a grpc.aio interceptor costs on every call.
    interceptors = runtime.tracing.server_interceptors() if runtime.tracing is not None else None
    server = grpc.aio.server(options=grpc_server_options(reuse_port=reuse_port), interceptors=interceptors)
    listing = list_filter_for(runtime)
    service = AuthorizationService(
        runtime.pipeline,
        runtime.recorder,
        deadline_cap_s=config.check.deadline_ms / 1000,
        strip_authorization=config.check.strip_authorization,
        metrics=runtime.metrics,
        body_limits=config.body,
        tracing=runtime.tracing,
        listing=listing,
        receipts=runtime.receipts,
    )
    external_auth_pb2_grpc.add_AuthorizationServicer_to_server(service, server)
    add_list_processor(listing, server, recorder=runtime.recorder)
    health_servicer = health.aio.HealthServicer()
    health_pb2_grpc.add_HealthServicer_to_server(health_servicer, server)
    address = f"{config.listen.host}:{config.listen.check_port}"
    if server.add_insecure_port(address) == 0:
        raise OSError(f"cannot listen on {address}")
    async with AsyncExitStack() as stack:
        # Exit callbacks run last-in-first-out: stop the server (drain in-flight checks), then flush the
        # audit recorder, then close the store.
        stack.push_async_callback(runtime.store.close)
        if runtime.tracing is not None:
            stack.callback(runtime.tracing.shutdown)  # flushes the last spans after the server stopped
        stack.push_async_callback(runtime.opa.aclose)
        closer = getattr(runtime.recorder, "aclose", None)
        if closer is not None:
            stack.push_async_callback(closer)
        stack.push_async_callback(service.aclose)  # aggregated denials, before the recorder closes
        await server.start()
        stack.push_async_callback(server.stop, 2.0)
        for name in ("", CHECK_SERVICE_NAME):
            await health_servicer.set(name, health_pb2.HealthCheckResponse.SERVING)
        http = await serve_http(
            config.listen.host,
            config.listen.metrics_port,
            new_registry(runtime.metrics),
            ready=lambda: runtime.directory.versions is not None and runtime.directory.last_error is None,
        )
        stack.callback(http.close)
        refresher = asyncio.create_task(runtime.directory.run(), name="tenant-refresh")
        stack.callback(refresher.cancel)
        catalogs = asyncio.create_task(
            _catalog_refresher(config, runtime.store, runtime.keyring).run(), name="catalog-refresh"
        )
        stack.callback(catalogs.cancel)
        if runtime.jwks is not None:
            stack.push_async_callback(runtime.jwks.aclose)
            stack.callback(asyncio.create_task(runtime.jwks.run(), name="jwks-refresh").cancel)
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(sig, stop.set)
        log.info("check service listening on %s (metrics on :%s)", address, config.listen.metrics_port)
        if ready is not None:
            ready.set()
        await stop.wait()
        log.info("check service stopping")
