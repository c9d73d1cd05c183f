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

import httpx

from authz.errors import InvalidArgument
from authz.storage import Approval

log = logging.getLogger("tessera.admin.webhook")

KEY_PURPOSE = "approval-webhook"
SIGNATURE_HEADER = "x-tessera-signature"
EVENT_TYPE = "approval.pending"


def validate_webhook_url(url: str) -> None:
    parts = urlsplit(url)
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise InvalidArgument(f"approval_webhook_url must be an http or https URL, not {url!r}")


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
    ):
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
        async with httpx.AsyncClient(timeout=self._timeout_s, follow_redirects=False) as client:
            while True:
                try:
                    await self.poll_once(client)
                except asyncio.CancelledError:
                    raise
                except Exception as exc:
                    log.warning("approval webhook round failed: %s", exc)
                await asyncio.sleep(self._poll_interval_s)

    async def poll_once(self, client: httpx.AsyncClient) -> int:
        """One round: claim what is due and post it; returns how many were delivered."""
        hooks = {
            name: settings.approval_webhook_url
            for name, settings in (await self._store.list_tenants()).items()
            if settings.approval_webhook_url
        }
        if not hooks:
            return 0
        due = await self._store.claim_approval_notifications(list(hooks), self._clock(), self._retry_s)
        results = await asyncio.gather(*(self._deliver(client, hooks[a.tenant], a) for a in due))
        return sum(results)

    async def _deliver(self, client: httpx.AsyncClient, url: str, approval: Approval) -> bool:
        body = notification_body(approval, self._clock())
        headers = {
            "content-type": "application/json",
            SIGNATURE_HEADER: sign(self._key_for(approval.tenant), body),
            "x-tessera-event": EVENT_TYPE,
            "x-tessera-delivery": approval.approval_id,
        }
        try:
            response = await client.post(url, content=body, headers=headers)
        except httpx.HTTPError as exc:
            self.failed += 1
            log.info("approval %s: webhook %s failed: %s", approval.approval_id, url, exc)
            return False
        if not 200 <= response.status_code < 300:
            self.failed += 1
            log.info("approval %s: webhook %s answered %s", approval.approval_id, url, response.status_code)
            return False
        await self._store.mark_approval_notified(approval.tenant, approval.approval_id, self._clock())
        self.delivered += 1
        return True
