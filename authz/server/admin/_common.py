"""What every admin servicer shares: the runtime it works on, and auditing a mutation."""

from __future__ import annotations

import time
from collections.abc import Callable, Coroutine, Mapping
from dataclasses import dataclass, field
from ipaddress import IPv4Network, IPv6Network, ip_network
from typing import Any, TypeVar

from authz.admin.keys import ADMIN_CHAIN
from authz.admin.limiter import AuthFailureLimiter
from authz.audit import append_admin_event, audited_mutation
from authz.errors import InvalidArgument, NotFound
from authz.outbound import OutboundClient, OutboundPolicy
from authz.server.admin.auth import principal
from authz.storage import Store
from authz.tenants import valid_tenant_name
from authz.token import KeyRing, TokenAuthenticator

T = TypeVar("T")


#: The local stack's Envoy runs on loopback; elsewhere set TESSERA_ADMIN_TRUSTED_PROXIES to the gateway's
#: addresses.
LOOPBACK_PROXIES = (ip_network("127.0.0.0/8"), ip_network("::1/128"))


@dataclass
class AdminRuntime:
    """The admin service's dependencies (built by :func:`authz.server.admin.app.build_admin_runtime`)."""

    store: Store
    keyring: KeyRing
    authenticator: TokenAuthenticator
    clock: Callable[[], float] = time.time
    #: The check services extract intent over HTTP (TESSERA_INTENT_URL), not from tenant catalogs.
    intent_http: bool = False
    extras: dict[str, Any] = field(default_factory=dict)
    #: Vets URLs admins set (approval webhook) under the operator's outbound rules (authz.outbound).
    outbound: OutboundClient = field(
        default_factory=lambda: OutboundClient(OutboundPolicy(), purpose="approval webhook")
    )
    #: Failed admin authentications, per source and key id (see authz.admin.limiter).
    auth_limiter: AuthFailureLimiter = field(default_factory=AuthFailureLimiter)
    #: Peers whose ``x-forwarded-for`` names the real client (Envoy in front of the admin port): the
    #: limiter counts that client, not the proxy every REST caller shares.
    trusted_proxies: tuple[IPv4Network | IPv6Network, ...] = LOOPBACK_PROXIES
    #: The Rego engine the check services compile policies with (TESSERA_POLICY_ENGINE): validation,
    #: dry runs and promotions compile on the same one.
    policy_engine: str = "regopy"

    async def audit(self, tenant: str | None, action: str, target: str, details: Mapping[str, Any]) -> None:
        """Record one mutation in the tenant's chain (``_admin`` when it belongs to no tenant), as the
        calling key. ``details`` must hold no secret."""
        await append_admin_event(
            self.store, tenant or ADMIN_CHAIN, principal().identity, action, target, dict(details)
        )

    async def audited(
        self,
        mutation: Callable[[], Coroutine[Any, Any, T]],
        tenant: str | None,
        action: str,
        target: str | Callable[[T], str],
        details: Mapping[str, Any] | Callable[[T], Mapping[str, Any]],
    ) -> T:
        """Run a store mutation and record it in the tenant's chain in ONE transaction, as the calling
        key: if the event cannot be written, the change does not stand. ``target`` and ``details`` may
        be functions of the mutation's result; ``details`` must hold no secret."""
        return await audited_mutation(
            self.store, mutation, tenant or ADMIN_CHAIN, principal().identity, action, target, details
        )

    async def require_tenant(self, tenant: str) -> None:
        """NotFound unless the tenant exists (InvalidArgument for a name that cannot be one)."""
        if not valid_tenant_name(tenant):
            raise InvalidArgument(f"invalid tenant name {tenant!r}", metadata={"field": "tenant"})
        if await self.store.get_tenant(tenant) is None:
            raise NotFound(
                f"tenant {tenant!r} not found", reason="TENANT_NOT_FOUND", metadata={"tenant": tenant}
            )
