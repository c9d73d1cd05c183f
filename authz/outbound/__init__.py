"""Outbound HTTP to URLs an admin or a tenant file chose (approval webhooks, the intent extractor;
forwarders, OPA and notifications as they come): one client, one set of rules.

* :class:`OutboundPolicy` — which addresses and ports are refused, and the operator allowlist
  (``TESSERA_OUTBOUND_ALLOW``) that permits some of them.
* :class:`OutboundClient` — resolves once, vets every address, connects to the vetted one, vets each
  redirect, bounds time and answer size; raises :class:`authz.errors.OutboundRefused` with the reason.
* :func:`pinned_request_hook` — the same for an httpx client Tessera hands to another library (the
  ``mcp`` SDK's client fetching an upstream's tools/list), after :meth:`OutboundClient.vet`.
* :func:`pin_botocore_client` — the same pinning for a boto3/botocore client (the S3 sink), which
  opens its own connections: each request is vetted and sent to the vetted address.
* :func:`policy_from_config` — the policy a process uses, from :class:`authz.config.TesseraConfig`.
"""

from __future__ import annotations

from typing import Any

from authz.outbound._botocore import PinnedBotocoreSender, pin_botocore_client
from authz.outbound._client import (
    OutboundClient,
    OutboundResponse,
    Resolver,
    pinned_request_hook,
    system_resolver,
    vet_host_sync,
)
from authz.outbound._policy import METADATA_ADDRESSES, AllowEntry, OutboundPolicy, parse_allow_entry


def policy_from_config(config: Any) -> OutboundPolicy:
    """The allowlist from ``config.outbound``; refused ports are the service's own listeners (check,
    admin, metrics) plus ``config.outbound.refused_ports`` (Envoy's listener and admin)."""
    listen = config.listen
    ports = {listen.check_port, listen.admin_port, listen.metrics_port, *config.outbound.refused_ports}
    return OutboundPolicy.build(config.outbound.allow, ports)


__all__ = [
    "METADATA_ADDRESSES",
    "AllowEntry",
    "OutboundClient",
    "OutboundPolicy",
    "OutboundResponse",
    "PinnedBotocoreSender",
    "Resolver",
    "parse_allow_entry",
    "pin_botocore_client",
    "pinned_request_hook",
    "policy_from_config",
    "system_resolver",
    "vet_host_sync",
]
