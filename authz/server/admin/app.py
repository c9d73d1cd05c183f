"""Builds and runs the admin service process (``tessera serve-admin``), ARCHITECTURE §11.

One ``grpc.aio`` server on the admin port (``TESSERA_ADMIN_PORT``, default 9192) with the six
``authz.api.admin.v1`` services behind :class:`~.auth.AdminAuthInterceptor`, ``grpc.health.v1`` and
server reflection (``grpc.reflection.v1alpha``, also answered under ``grpc.reflection.v1``). It shares
the check service's store and master key (:func:`authz.config.load`) and runs the approval webhook
notifier. Envoy serves the same services as REST through its gRPC-JSON transcoder.

First start: when the store holds no admin key at all, an admin key with the all-tenants scope is
created: ``TESSERA_BOOTSTRAP_ADMIN_KEY`` when set (only its hash is stored), else a generated one,
printed once to standard output inside a banner and nowhere else (never logged).

Environment (besides :mod:`authz.config`): ``TESSERA_BOOTSTRAP_ADMIN_KEY``,
``TESSERA_WEBHOOK_POLL_S`` (default 2), ``TESSERA_WEBHOOK_RETRY_S`` (first retry delay, default 5),
``TESSERA_WEBHOOK_TIMEOUT_S`` (default 5), ``TESSERA_ADMIN_FORWARDER`` (``on``: also run the audit
forwarders, :mod:`authz.forward`). Approvals that time out undecided are recorded as ``approval.expired``
events (:mod:`authz.admin.expiry`) every ``TESSERA_WEBHOOK_POLL_S``.
"""

from __future__ import annotations

import asyncio
import ipaddress
import logging
import os
import signal
import sys
import time
from collections.abc import Mapping
from contextlib import AsyncExitStack
from dataclasses import dataclass
from typing import Any, TextIO

import grpc
from grpc_health.v1 import health, health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha import reflection, reflection_pb2

from authz.admin.expiry import ApprovalExpiry
from authz.admin.keys import ADMIN_CHAIN, new_admin_key
from authz.admin.limiter import AuthFailureLimiter
from authz.admin.oidc import OidcSettings, OidcVerifier
from authz.admin.webhook import KEY_PURPOSE, ApprovalNotifier
from authz.api.admin.v1 import (
    admin_key_service_pb2,
    admin_key_service_pb2_grpc,
    approval_service_pb2,
    approval_service_pb2_grpc,
    audit_service_pb2,
    audit_service_pb2_grpc,
    forwarder_config_service_pb2,
    forwarder_config_service_pb2_grpc,
    integration_service_pb2,
    integration_service_pb2_grpc,
    intent_service_pb2,
    intent_service_pb2_grpc,
    memory_writer_service_pb2,
    memory_writer_service_pb2_grpc,
    policy_service_pb2,
    policy_service_pb2_grpc,
    receipt_key_service_pb2,
    receipt_key_service_pb2_grpc,
    tenant_service_pb2,
    tenant_service_pb2_grpc,
    token_exchange_service_pb2,
    token_exchange_service_pb2_grpc,
    token_service_pb2,
    token_service_pb2_grpc,
)
from authz.audit import audited_mutation
from authz.config import TesseraConfig
from authz.errors import ConfigError
from authz.observability import AdminMetrics, new_registry, serve_http, setup_tracing
from authz.outbound import OutboundClient, policy_from_config
from authz.receipts import self_receipt_issuer
from authz.secrets import Secret
from authz.server.admin._common import LOOPBACK_PROXIES, AdminRuntime
from authz.server.admin.approvals import ApprovalService
from authz.server.admin.audit import AuditService
from authz.server.admin.auth import AdminAuthInterceptor
from authz.server.admin.exchange import TokenExchangeService, enable_token_exchange
from authz.server.admin.forwarders import ForwarderConfigService
from authz.server.admin.integrations import IntegrationService
from authz.server.admin.intent import IntentService
from authz.server.admin.keys import AdminKeyService
from authz.server.admin.memory_writers import MemoryWriterService
from authz.server.admin.observe import AdminMetricsInterceptor, count_pending_approvals
from authz.server.admin.policies import PolicyService
from authz.server.admin.receipt_keys import RECEIPT_KIDS, SELF_RECEIPTS, ReceiptKeyService
from authz.server.admin.tenants import TenantService
from authz.server.admin.tokens import TokenService
from authz.storage import Store, open_store
from authz.storage.pruning import StatePruner
from authz.token import KeyRing, TokenAuthenticator

log = logging.getLogger("tessera.admin")

_SERVICES = (
    (
        token_service_pb2,
        "TokenService",
        token_service_pb2_grpc.add_TokenServiceServicer_to_server,
        TokenService,
    ),
    (
        policy_service_pb2,
        "PolicyService",
        policy_service_pb2_grpc.add_PolicyServiceServicer_to_server,
        PolicyService,
    ),
    (
        approval_service_pb2,
        "ApprovalService",
        approval_service_pb2_grpc.add_ApprovalServiceServicer_to_server,
        ApprovalService,
    ),
    (
        tenant_service_pb2,
        "TenantService",
        tenant_service_pb2_grpc.add_TenantServiceServicer_to_server,
        TenantService,
    ),
    (
        audit_service_pb2,
        "AuditService",
        audit_service_pb2_grpc.add_AuditServiceServicer_to_server,
        AuditService,
    ),
    (
        admin_key_service_pb2,
        "AdminKeyService",
        admin_key_service_pb2_grpc.add_AdminKeyServiceServicer_to_server,
        AdminKeyService,
    ),
    (
        integration_service_pb2,
        "IntegrationService",
        integration_service_pb2_grpc.add_IntegrationServiceServicer_to_server,
        IntegrationService,
    ),
    (
        token_exchange_service_pb2,
        "TokenExchangeService",
        token_exchange_service_pb2_grpc.add_TokenExchangeServiceServicer_to_server,
        TokenExchangeService,
    ),
    (
        intent_service_pb2,
        "IntentService",
        intent_service_pb2_grpc.add_IntentServiceServicer_to_server,
        IntentService,
    ),
    (
        forwarder_config_service_pb2,
        "ForwarderConfigService",
        forwarder_config_service_pb2_grpc.add_ForwarderConfigServiceServicer_to_server,
        ForwarderConfigService,
    ),
    (
        memory_writer_service_pb2,
        "MemoryWriterService",
        memory_writer_service_pb2_grpc.add_MemoryWriterServiceServicer_to_server,
        MemoryWriterService,
    ),
    (
        receipt_key_service_pb2,
        "ReceiptKeyService",
        receipt_key_service_pb2_grpc.add_ReceiptKeyServiceServicer_to_server,
        ReceiptKeyService,
    ),
)
#: Fully qualified names of the admin services, e.g. ``authz.api.admin.v1.TokenService``.
SERVICE_NAMES = tuple(module.DESCRIPTOR.services_by_name[name].full_name for module, name, _, _ in _SERVICES)

BANNER_RULE = "=" * 78

#: How often the admin service recounts pending approvals for ``tessera_approvals_pending``.
APPROVALS_GAUGE_INTERVAL_S = 5.0


@dataclass(frozen=True, slots=True)
class AdminSettings:
    """The admin service's own settings (the rest comes from :class:`authz.config.TesseraConfig`)."""

    bootstrap_key: Secret | None = None
    webhook_poll_s: float = 2.0
    webhook_retry_s: float = 5.0
    webhook_timeout_s: float = 5.0
    #: Scheduled pruning of expired budget counters and approvals (authz.storage.pruning).
    prune_interval_s: float = 60.0
    prune_grace_s: float = 300.0
    approval_retention_s: float = 86400.0
    #: Failed admin authentications: this many within the window lock the source or key id out.
    auth_max_failures: int = 10
    auth_window_s: float = 60.0
    auth_lockout_s: float = 60.0
    #: Proxies (Envoy) whose x-forwarded-for names the client the limiter counts.
    trusted_proxies: tuple[Any, ...] = LOOPBACK_PROXIES
    #: Run the audit forwarders (authz.forward) in this process (TESSERA_ADMIN_FORWARDER); with several
    #: admin replicas, per sink one holds the lease.
    forwarder: bool = False
    #: People signed in with the organisation's OpenID provider (the console); None: admin keys only.
    oidc: OidcSettings | None = None

    @classmethod
    def from_env(cls, env: Mapping[str, str] | None = None) -> AdminSettings:
        env = os.environ if env is None else env

        def number(name: str, default: float) -> float:
            raw = env.get(name)
            if not raw:
                return default
            try:
                value = float(raw)
            except ValueError:
                raise ConfigError(f"{name} must be a number, got {raw!r}") from None
            if value <= 0:
                raise ConfigError(f"{name} must be positive")
            return value

        key = env.get("TESSERA_BOOTSTRAP_ADMIN_KEY")
        return cls(
            bootstrap_key=Secret(key) if key else None,
            webhook_poll_s=number("TESSERA_WEBHOOK_POLL_S", 2.0),
            webhook_retry_s=number("TESSERA_WEBHOOK_RETRY_S", 5.0),
            webhook_timeout_s=number("TESSERA_WEBHOOK_TIMEOUT_S", 5.0),
            prune_interval_s=number("TESSERA_PRUNE_INTERVAL_S", 60.0),
            prune_grace_s=number("TESSERA_PRUNE_GRACE_S", 300.0),
            approval_retention_s=number("TESSERA_APPROVAL_RETENTION_S", 86400.0),
            auth_max_failures=int(number("TESSERA_ADMIN_AUTH_MAX_FAILURES", 10)),
            auth_window_s=number("TESSERA_ADMIN_AUTH_WINDOW_S", 60.0),
            auth_lockout_s=number("TESSERA_ADMIN_AUTH_LOCKOUT_S", 60.0),
            trusted_proxies=_networks(env, "TESSERA_ADMIN_TRUSTED_PROXIES", LOOPBACK_PROXIES),
            forwarder=_switch(env, "TESSERA_ADMIN_FORWARDER"),
            oidc=OidcSettings.from_env(env),
        )


def _switch(env: Mapping[str, str], name: str) -> bool:
    raw = (env.get(name) or "off").strip().lower()
    if raw in ("on", "true", "1", "yes"):
        return True
    if raw in ("off", "false", "0", "no"):
        return False
    raise ConfigError(f"{name} must be on or off, got {raw!r}")


def _networks(env: Mapping[str, str], name: str, default: tuple[Any, ...]) -> tuple[Any, ...]:
    raw = env.get(name)
    if raw is None:
        return default
    try:
        return tuple(
            ipaddress.ip_network(part.strip(), strict=False) for part in raw.split(",") if part.strip()
        )
    except ValueError as exc:
        raise ConfigError(f"{name} must be comma-separated addresses or CIDR ranges: {exc}") from None


class _NotFirst(Exception):
    """Unwinds the bootstrap transaction when an admin key exists already."""


async def bootstrap_admin_key(store: Store, given: Secret | None, out: TextIO | None = None) -> str | None:
    """Create the first admin key when the store has none; returns the key when one was generated
    (and printed to ``out``, default standard output), else None.

    ``given`` (``TESSERA_BOOTSTRAP_ADMIN_KEY``) is used as is and never printed. Safe with several
    replicas starting at once: the store creates at most one first key.
    """
    if await store.list_admin_keys(include_revoked=True):
        return None
    key = given.reveal().decode() if given is not None else None
    record, secret = new_admin_key("bootstrap", "admin", None, "bootstrap", key=key)
    source = "env" if given else "generated"
    details = {"name": record.name, "role": record.role, "tenant": None, "source": source}

    async def create() -> bool:
        if not await store.bootstrap_admin_key(record):
            raise _NotFirst  # another replica created the first key: nothing to audit
        return True

    try:
        await audited_mutation(
            store, create, ADMIN_CHAIN, "bootstrap", "admin_key.create", f"admin_key:{record.key_id}", details
        )
    except _NotFirst:
        return None
    if given is not None:
        log.info("created the first admin key %s from TESSERA_BOOTSTRAP_ADMIN_KEY", record.key_id)
        return None
    stream = out if out is not None else sys.stdout
    stream.write(
        f"\n{BANNER_RULE}\n"
        "Tessera: first start, created an admin key (role admin, all tenants).\n"
        "It is shown this once and stored only as a hash; keep it somewhere safe:\n\n"
        f"    {secret}\n\n"
        "Use it as: authorization: Bearer <key>   (create more keys with AdminKeyService)\n"
        f"{BANNER_RULE}\n\n"
    )
    stream.flush()
    return secret


async def build_admin_runtime(config: TesseraConfig, settings: AdminSettings | None = None) -> AdminRuntime:
    settings = settings or AdminSettings.from_env()
    store = open_store(config.store.database_url)
    keyring = KeyRing(
        config.keys.master_key, active_kid=config.keys.active_kid, live_kids=config.keys.live_kids
    )
    runtime = AdminRuntime(
        store=store,
        keyring=keyring,
        authenticator=TokenAuthenticator(keyring, cache_size=1000),
        clock=time.time,
        intent_http=bool(config.intent.http_url),
        policy_engine=config.check.policy_engine,
        outbound=OutboundClient(
            policy_from_config(config),
            timeout_s=settings.webhook_timeout_s,
            max_response_bytes=64 * 1024,
            purpose="approval webhook",
        ),
        auth_limiter=AuthFailureLimiter(
            max_failures=settings.auth_max_failures,
            window_s=settings.auth_window_s,
            lockout_s=settings.auth_lockout_s,
        ),
        trusted_proxies=settings.trusted_proxies,
    )
    if settings.oidc is not None:
        runtime.extras["oidc"] = OidcVerifier(
            settings.oidc,
            outbound=OutboundClient(
                policy_from_config(config),
                timeout_s=5.0,
                max_response_bytes=256 * 1024,
                purpose="OIDC provider",
            ),
        )
    runtime.extras["metrics"] = AdminMetrics(tenant_label=config.observability.metrics_tenant_label)
    await enable_token_exchange(runtime, config)
    runtime.extras[RECEIPT_KIDS] = config.receipts.kids
    # Tessera's own requests to tool servers (RefreshIntentCatalog's tools/list) carry a receipt too.
    runtime.extras[SELF_RECEIPTS] = self_receipt_issuer(config.receipts, runtime.keyring.derive_subkey)
    await bootstrap_admin_key(store, settings.bootstrap_key)
    return runtime


def build_server(runtime: AdminRuntime, tracing_interceptors: list[Any] = ()) -> tuple[grpc.aio.Server, Any]:
    """The gRPC server with every admin service, health and reflection (not started, no port).

    Interceptors, outermost first: tracing (when on), metrics (when the runtime has them), auth."""
    metrics = runtime.extras.get("metrics")
    outer = [AdminMetricsInterceptor(metrics)] if metrics is not None else []
    server = grpc.aio.server(
        interceptors=[
            *tracing_interceptors,
            *outer,
            AdminAuthInterceptor(
                runtime.store,
                limiter=runtime.auth_limiter,
                trusted_proxies=runtime.trusted_proxies,
                oidc=runtime.extras.get("oidc"),
            ),
        ],
        options=[("grpc.so_reuseport", 0), ("grpc.max_receive_message_length", 8 * 1024 * 1024)],
    )
    for _module, _name, add, servicer in _SERVICES:
        add(servicer(runtime), server)
    health_servicer = health.aio.HealthServicer()
    health_pb2_grpc.add_HealthServicer_to_server(health_servicer, server)
    names = (*SERVICE_NAMES, health.SERVICE_NAME, reflection.SERVICE_NAME)
    reflection.enable_server_reflection(names, server)
    # grpc.reflection.v1 has the same messages as v1alpha: answer it too (newer grpcurl and buf curl
    # ask for v1 first).
    v1 = reflection.aio.ReflectionServicer(names)
    server.add_generic_rpc_handlers(
        (
            grpc.method_handlers_generic_handler(
                "grpc.reflection.v1.ServerReflection",
                {
                    "ServerReflectionInfo": grpc.stream_stream_rpc_method_handler(
                        v1.ServerReflectionInfo,
                        request_deserializer=reflection_pb2.ServerReflectionRequest.FromString,
                        response_serializer=reflection_pb2.ServerReflectionResponse.SerializeToString,
                    )
                },
            ),
        )
    )
    return server, health_servicer


async def _start_forwarder(stack: AsyncExitStack, store: Store, config: TesseraConfig) -> None:
    """The audit forwarders in this process, stopped (leases released) before the store closes."""
    from authz.forward import supervisor_from_config

    supervisor = supervisor_from_config(store, config)
    stop = asyncio.Event()
    task = asyncio.create_task(supervisor.run(stop), name="audit-forwarder")

    async def finish() -> None:
        stop.set()
        await task

    stack.push_async_callback(finish)
    log.info("audit forwarder running in the admin process (TESSERA_ADMIN_FORWARDER=on)")


async def serve_admin(
    config: TesseraConfig, *, settings: AdminSettings | None = None, ready: asyncio.Event | None = None
) -> None:
    """Run the admin service until SIGTERM/SIGINT."""
    settings = settings or AdminSettings.from_env()
    runtime = await build_admin_runtime(config, settings)
    tracing = setup_tracing("tessera-admin") if config.observability.tracing else None
    server, health_servicer = build_server(runtime, tracing.server_interceptors() if tracing else [])
    address = f"{config.listen.host}:{config.listen.admin_port}"
    if server.add_insecure_port(address) == 0:
        raise OSError(f"cannot listen on {address}")
    notifier = ApprovalNotifier(
        runtime.store,
        lambda tenant: runtime.keyring.derive_subkey(KEY_PURPOSE, tenant),
        poll_interval_s=settings.webhook_poll_s,
        retry_s=settings.webhook_retry_s,
        timeout_s=settings.webhook_timeout_s,
        outbound=runtime.outbound,
    )
    async with AsyncExitStack() as stack:
        stack.push_async_callback(runtime.store.close)
        if tracing is not None:
            stack.callback(tracing.shutdown)
        await server.start()
        stack.push_async_callback(server.stop, 2.0)
        for name in ("", *SERVICE_NAMES):
            await health_servicer.set(name, health_pb2.HealthCheckResponse.SERVING)
        task = asyncio.create_task(notifier.run(), name="approval-webhook")
        stack.callback(task.cancel)
        metrics = runtime.extras["metrics"]
        gauge = asyncio.create_task(
            count_pending_approvals(runtime.store, metrics, APPROVALS_GAUGE_INTERVAL_S),
            name="approvals-gauge",
        )
        stack.callback(gauge.cancel)
        http = await serve_http(
            config.listen.host, config.listen.admin_metrics_port, new_registry(metrics), ready=lambda: True
        )
        stack.callback(http.close)
        pruner = StatePruner(
            runtime.store,
            interval_s=settings.prune_interval_s,
            grace_s=settings.prune_grace_s,
            approval_retention_s=settings.approval_retention_s,
        )
        pruning = asyncio.create_task(pruner.run(), name="state-pruning")
        stack.callback(pruning.cancel)
        jwks = runtime.extras.get("jwks")
        if jwks is not None:  # the token exchange's view of the issuers' keys, refreshed like the check's
            stack.push_async_callback(jwks.aclose)
            stack.callback(asyncio.create_task(jwks.run(), name="jwks-refresh").cancel)
        expiry = asyncio.create_task(
            ApprovalExpiry(runtime.store, interval_s=settings.webhook_poll_s).run(), name="approval-expiry"
        )
        stack.callback(expiry.cancel)
        if settings.forwarder:
            await _start_forwarder(stack, runtime.store, config)
        if "oidc" in runtime.extras:  # the provider's signing keys, kept fresh
            keys = asyncio.create_task(runtime.extras["oidc"].run(), name="oidc-keys")
            stack.callback(keys.cancel)
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(sig, stop.set)
        log.info("admin service listening on %s", address)
        if ready is not None:
            ready.set()
        await stop.wait()
        log.info("admin service stopping")
