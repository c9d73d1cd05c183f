"""Generic webhook sink: a JSON batch, HMAC-signed over a timestamp and the body.

Request: ``POST <url>``, body ``{"sink": name, "tenant": T, "events": [document, ...]}`` (see
:meth:`ForwardEvent.document`), headers

* ``x-tessera-timestamp``: Unix seconds when the request was signed;
* ``x-tessera-signature``: ``v1=`` + hex HMAC-SHA256(secret, ``<timestamp>.`` + body);
* ``idempotency-key``: the chain hash of the batch's last event (each event also carries its own).

Replay safety for the receiver (:func:`verify_webhook`): reject a signature that does not match, a
timestamp outside a tolerance window (a captured request cannot be resent later), and events whose chain
hash it has stored already (a resend within the window, or Tessera's own at-least-once resends).
"""

from __future__ import annotations

import hashlib
import hmac
import time
from collections.abc import Callable, Mapping, Sequence

from authz.forward._event import ForwardEvent, json_bytes
from authz.forward._sink import HttpClient, Outcome, classify_http
from authz.secrets import Secret

TIMESTAMP_HEADER = "x-tessera-timestamp"
SIGNATURE_HEADER = "x-tessera-signature"


def webhook_signature(secret: bytes, timestamp: str, body: bytes) -> str:
    return "v1=" + hmac.new(secret, timestamp.encode() + b"." + body, hashlib.sha256).hexdigest()


def verify_webhook(
    secret: bytes,
    body: bytes,
    headers: Mapping[str, str],
    *,
    now: float | None = None,
    tolerance_s: float = 300,
) -> bool:
    """For receivers: is the request signed with ``secret`` and its timestamp within ``tolerance_s``?"""
    timestamp = headers.get(TIMESTAMP_HEADER, "")
    if not timestamp.isdigit():
        return False
    if abs((time.time() if now is None else now) - int(timestamp)) > tolerance_s:
        return False
    return hmac.compare_digest(webhook_signature(secret, timestamp, body), headers.get(SIGNATURE_HEADER, ""))


class WebhookSink:
    def __init__(
        self, name: str, url: str, secret: Secret, http: HttpClient, *, clock: Callable[[], float] = time.time
    ):
        self.name = name
        self.url = url
        self._secret = secret
        self._http = http
        self._clock = clock

    async def send(self, batch: Sequence[ForwardEvent]) -> Outcome:
        # The documents' bytes are shared by every sink: the batch is spliced, not re-encoded.
        body = b"".join(
            (
                b'{"sink":',
                json_bytes(self.name),
                b',"tenant":',
                json_bytes(batch[0].tenant),
                b',"events":[',
                b",".join(e.document_bytes() for e in batch),
                b"]}",
            )
        )
        timestamp = str(int(self._clock()))
        headers = {
            "content-type": "application/json",
            TIMESTAMP_HEADER: timestamp,
            SIGNATURE_HEADER: webhook_signature(self._secret.reveal(), timestamp, body),
            "idempotency-key": batch[-1].idempotency_key,
        }
        response = await self._http.request("POST", self.url, content=body, headers=headers)
        return classify_http(response, f"webhook {self.name}")

    async def aclose(self) -> None:
        return None
