"""The approval webhook: pending approvals posted to a tenant's URL, HMAC-signed (ARCHITECTURE §7).

The check service creates approvals and must never wait on a webhook, so delivery is an outbox the
admin service polls (:meth:`ApprovalNotifier.run`): each round claims the due, pending, unexpired and
not yet delivered approvals of the tenants that have ``approval_webhook_url`` set (a claim leases them
with backoff, see :meth:`authz.storage.protocols.AdminStore.claim_approval_notifications`), posts each
one, and marks it delivered on a 2xx answer. At-least-once: a receiver may see an approval twice
(dedupe on ``approval_id``); a failing receiver is retried with backoff until the approval is decided
or expires. A webhook failure never affects a decision.

Body (JSON, UTF-8)::

    {"type": "approval.pending", "tenant": ..., "approval_id": ..., "agent": ..., "tool": ...,
     "arguments_sha256": ..., "reason": ..., "quorum": N, "created_at": RFC 3339, "expires_at": RFC 3339,
     "decision_id": ..., "sent_at": RFC 3339}

Headers: ``x-tessera-signature: sha256=<hex HMAC-SHA256(key, raw body)>`` with
``key = KeyRing.derive_subkey("approval-webhook", tenant)`` (the admin API's GetWebhookSecret),
``x-tessera-event: approval.pending``, ``x-tessera-delivery: <approval id>``.
"""

from __future__ import annotations

import asyncio
import hashlib
import hmac
import json
import logging
import time
from collections.abc import Callable
from datetime import UTC, datetime
from typing import Any
from urllib.parse import urlsplit

from authz.audit import append_admin_event
from authz.errors import DependencyError, InvalidArgument, OutboundRefused
from authz.outbound import OutboundClient, OutboundPolicy
from authz.storage import Approval

log = logging.getLogger("tessera.admin.webhook")

KEY_PURPOSE = "approval-webhook"
SIGNATURE_HEADER = "x-tessera-signature"
EVENT_TYPE = "approval.pending"


def validate_webhook_url(url: str) -> None:
    parts = urlsplit(url)
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise InvalidArgument(f"approval_webhook_url must be an http or https URL, not {url!r}")


async def vet_webhook_url(url: str, outbound: OutboundClient) -> None:
    """Refuse, when an admin sets it, a webhook URL the notifier would refuse to call: the API error
    (``OUTBOUND_REFUSED``) says why. A name that does not resolve yet is accepted (it is vetted again
    at every delivery)."""
    validate_webhook_url(url)
    try:
        await outbound.vet(url)
    except OutboundRefused as exc:
        raise InvalidArgument(
            f"approval_webhook_url refused: {exc.message}",
            reason="OUTBOUND_REFUSED",
            metadata={"field": "approval_webhook_url", **exc.metadata},
        ) from None
    except DependencyError:
        pass


def sign(key: bytes, body: bytes) -> str:
    """The ``x-tessera-signature`` value of ``body``."""
    return "sha256=" + hmac.new(key, body, hashlib.sha256).hexdigest()


def verify_signature(key: bytes, body: bytes, header: str) -> bool:
    """For receivers (and tests): does ``header`` sign ``body`` under ``key``?"""
    return hmac.compare_digest(sign(key, body), header or "")


def _rfc3339(epoch: float) -> str:
    return datetime.fromtimestamp(epoch, UTC).isoformat().replace("+00:00", "Z")


def notification_body(approval: Approval, now: float) -> bytes:
    return json.dumps(
        {
            "type": EVENT_TYPE,
            "tenant": approval.tenant,
            "approval_id": approval.approval_id,
            "agent": approval.agent,
            "tool": approval.tool,
            "arguments_sha256": approval.arguments_sha256,
            "reason": approval.reason,
            "quorum": approval.quorum,
            "created_at": _rfc3339(approval.created_at),
            "expires_at": _rfc3339(approval.expires_at),
            "decision_id": approval.decision_id,
            "sent_at": _rfc3339(now),
        },
        separators=(",", ":"),
        sort_keys=True,
    ).encode()


class ApprovalNotifier:
    """Polls the store's approval outbox and posts what is due. One per admin service process."""

    def __init__(
        self,
        store: Any,
        key_for: Callable[[str], bytes],
        *,
        poll_interval_s: float = 2.0,
        retry_s: float = 5.0,
        timeout_s: float = 5.0,
        clock: Callable[[], float] = time.time,
        outbound: OutboundClient | None = None,
    ):
        # Every delivery goes through the outbound rules (no loopback, private or metadata address, none
        # of Tessera's own ports, unless the operator allowlist says so); see authz.outbound.
        self._outbound = outbound or OutboundClient(
            OutboundPolicy(), timeout_s=timeout_s, max_response_bytes=64 * 1024, purpose="approval webhook"
        )
        self._refusals_audited: set[tuple[str, str]] = set()
        self._store = store
        self._key_for = key_for
        self._poll_interval_s = poll_interval_s
        self._retry_s = retry_s
        self._timeout_s = timeout_s
        self._clock = clock
        self.delivered = 0
        self.failed = 0

    async def run(self) -> None:
        """Poll until cancelled; a failing round is logged and retried at the next interval."""
        async with self._outbound:
            while True:
                try:
                    await self.poll_once()
                except asyncio.CancelledError:
                    raise
                except Exception as exc:
                    log.warning("approval webhook round failed: %s", exc)
                await asyncio.sleep(self._poll_interval_s)

    async def poll_once(self) -> int:
        """One round: claim what is due and post it; returns how many were delivered."""
        hooks = {
            name: settings.approval_webhook_url
            for name, settings in (await self._store.list_tenants()).items()
            if settings.approval_webhook_url
        }
        if not hooks:
            return 0
        due = await self._store.claim_approval_notifications(list(hooks), self._clock(), self._retry_s)
        results = await asyncio.gather(*(self._deliver(hooks[a.tenant], a) for a in due))
        return sum(results)

    async def _deliver(self, url: str, approval: Approval) -> bool:
        body = notification_body(approval, self._clock())
        headers = {
            "content-type": "application/json",
            SIGNATURE_HEADER: sign(self._key_for(approval.tenant), body),
            "x-tessera-event": EVENT_TYPE,
            "x-tessera-delivery": approval.approval_id,
        }
        try:
            response = await self._outbound.post(url, content=body, headers=headers)
        except OutboundRefused as exc:
            self.failed += 1
            log.warning("approval %s: webhook %s refused: %s", approval.approval_id, url, exc.message)
            await self._audit_refusal(url, approval, exc)
            return False
        except DependencyError as exc:
            self.failed += 1
            log.info("approval %s: webhook %s failed: %s", approval.approval_id, url, exc.message)
            return False
        if not 200 <= response.status_code < 300:
            self.failed += 1
            log.info("approval %s: webhook %s answered %s", approval.approval_id, url, response.status_code)
            return False
        await self._store.mark_approval_notified(approval.tenant, approval.approval_id, self._clock())
        self.delivered += 1
        return True

    async def _audit_refusal(self, url: str, approval: Approval, exc: OutboundRefused) -> None:
        """The tenant's chain says why its webhook was not called (once per URL and process, so a
        refused URL cannot fill the chain with retries)."""
        if (approval.tenant, url) in self._refusals_audited:
            return
        self._refusals_audited.add((approval.tenant, url))
        try:
            await append_admin_event(
                self._store,
                approval.tenant,
                "tessera",
                "approval.webhook.refused",
                f"approval:{approval.approval_id}",
                {"url": url, "reason": exc.message, "error": exc.reason},
            )
        except Exception as audit_exc:  # the refusal stands; only its record failed
            log.error("could not audit the webhook refusal for %s: %s", approval.tenant, audit_exc)
