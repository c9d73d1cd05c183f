"""The one event shape every sink receives: the stored OCSF-shaped audit event plus its chain link."""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any

from authz.storage.protocols import AuditRecord


@dataclass(frozen=True, slots=True)
class ForwardEvent:
    """One committed audit event on its way to a sink.

    ``hash`` (the event's chain hash, lowercase hex) is the idempotency key: it is unique per event and
    the same on every resend, so a receiver that keeps the keys it has seen drops the duplicates that
    at-least-once delivery produces.
    """

    tenant: str
    seq: int
    hash: str
    prev_hash: str
    time_ms: int
    event: dict[str, Any]

    @property
    def idempotency_key(self) -> str:
        return self.hash

    def document(self) -> dict[str, Any]:
        """The event as sinks send it: the audit event unchanged (the OCSF class 6003 fields and the
        ``tessera`` object) plus ``tessera_chain`` {tenant, seq, hash, prev_hash}, so a receiver can also
        check the chain link (``hash = SHA-256(prev_hash || JCS(event))``) without asking Tessera."""
        doc = dict(self.event)
        doc["tessera_chain"] = {
            "tenant": self.tenant,
            "seq": self.seq,
            "hash": self.hash,
            "prev_hash": self.prev_hash,
        }
        return doc

    def ndjson_line(self) -> bytes:
        return json.dumps(self.document(), separators=(",", ":"), ensure_ascii=False).encode() + b"\n"


def forward_event(record: AuditRecord) -> ForwardEvent:
    return ForwardEvent(
        tenant=record.tenant,
        seq=record.seq,
        hash=record.hash,
        prev_hash=record.prev_hash,
        time_ms=record.time_ms,
        event=json.loads(record.event),
    )
