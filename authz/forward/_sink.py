"""What a sink is: a small adapter that encodes a batch, sends it and classifies the answer.

Everything else (reading from the cursor, batching, retries with backoff and jitter, acknowledgement,
dead letters, the lease) lives once in :class:`authz.forward.Forwarder`.
"""

from __future__ import annotations

import email.utils
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Protocol

from authz.forward._event import ForwardEvent


@dataclass(frozen=True, slots=True)
class Ack:
    """The sink stored every event of the batch: the cursor may pass it."""


@dataclass(frozen=True, slots=True)
class Retry:
    """A transient failure (429, 5xx, timeout, connection refused): send the same batch again later.

    ``after_s`` is the receiver's own hint (``Retry-After``), honoured as a lower bound of the backoff.
    """

    reason: str
    after_s: float | None = None


@dataclass(frozen=True, slots=True)
class Reject:
    """The receiver refused the batch for good (a 4xx other than 408/429): resending cannot help, so
    the batch goes to a dead letter at once."""

    reason: str


Outcome = Ack | Retry | Reject


class Sink(Protocol):
    """A destination for audit events. ``name`` identifies it in the store (lease, cursors, dead
    letters): renaming a sink starts it from the beginning of every chain."""

    name: str

    async def send(self, batch: Sequence[ForwardEvent]) -> Outcome:
        """Deliver ``batch`` (1..batch_size events of ONE tenant, ascending seq) and classify the answer.

        May raise: any exception counts as :class:`Retry` with its message (the driver never lets a sink
        error skip events)."""

    async def aclose(self) -> None: ...


class HttpResponse(Protocol):
    status_code: int
    headers: Mapping[str, str]
    content: bytes


class HttpClient(Protocol):
    """The slice of :class:`authz.outbound.OutboundClient` sinks use (an ``httpx.AsyncClient`` has the same
    shape). Sinks never open their own connections: the operator's outbound rules apply to every URL."""

    async def request(
        self, method: str, url: str, *, content: bytes | None = None, headers: Mapping[str, str] | None = None
    ) -> HttpResponse: ...


def parse_retry_after(value: str | None, now: float | None = None) -> float | None:
    """``Retry-After`` as seconds from now: delta-seconds or an HTTP date (RFC 9110 §10.2.3); None when
    absent or unreadable."""
    if not value:
        return None
    value = value.strip()
    if value.isdigit():
        return float(value)
    try:
        when = email.utils.parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return None
    if when is None:
        return None
    return max(0.0, when.timestamp() - (time.time() if now is None else now))


def classify_http(response: HttpResponse, what: str) -> Outcome:
    """The usual HTTP answer classes: 2xx acknowledged; 408, 429 and 5xx retried (honouring
    ``Retry-After``); any other status rejected."""
    status = response.status_code
    if 200 <= status < 300:
        return Ack()
    snippet = response.content[:200].decode("utf-8", "replace").strip()
    reason = f"{what} answered HTTP {status}" + (f": {snippet}" if snippet else "")
    if status in (408, 429) or status >= 500:
        return Retry(reason, parse_retry_after(response.headers.get("retry-after")))
    return Reject(reason)
