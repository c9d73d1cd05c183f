"""The one event shape every sink receives: the stored OCSF-shaped audit event plus its chain link.

Cost (issue 18): one process forwards every event to every sink, so the per-event work is done once and
shared, never once per sink. The stored event is already JSON (RFC 8785, exactly as hashed): a sink's
document is those bytes with the chain link spliced in (no decode and re-encode), computed once per
event and reused by every sink and every resend; the event is decoded only when a sink needs a field of
it, at most once per event.
"""

from __future__ import annotations

import json
import re
from typing import Any

from authz.storage.protocols import AuditRecord

#: gzip level of the compressed sinks (Datadog, Sentinel, S3 by default): level 1 costs a quarter of the
#: CPU of zlib's default 6 on audit NDJSON, for objects about a fifth larger (~3 % of the raw size).
GZIP_LEVEL = 1


def json_bytes(value: Any) -> bytes:
    return json.dumps(value, separators=(",", ":"), ensure_ascii=False).encode()


_QUOTED: dict[str, bytes] = {}


def quoted(name: str) -> bytes:
    """A tenant name or decision as a JSON string: the few distinct values are encoded once each."""
    out = _QUOTED.get(name)
    if out is None:
        out = json_bytes(name)
        if len(_QUOTED) < 10_000:
            _QUOTED[name] = out
    return out


def json_hex(value: str) -> bytes:
    """A chain hash (lowercase hex, nothing to escape) as a JSON string."""
    return b'"' + value.encode() + b'"' if value.isalnum() and value.isascii() else json_bytes(value)


#: A JSON string, its escapes included.
_STRING = re.compile(rb'"[^"\\]*(?:\\.[^"\\]*)*"')


def _structure(prefix: bytes) -> bytes | None:
    """``prefix`` of a JSON text without its strings (what is left is punctuation and numbers), or None
    when it ends inside a string."""
    if b"\\" not in prefix:  # the usual event: every quote opens or closes a string
        parts = prefix.split(b'"')
        return b"".join(parts[::2]) if len(parts) % 2 else None
    structure = _STRING.sub(b"", prefix)
    return None if b'"' in structure else structure


def has_text_member(raw: bytes, name: str) -> bool:
    """Whether the JSON object ``raw`` (unique member names, as the stored canonical events have) has
    the top-level member ``name`` holding a non-empty string, answered without decoding it (decoding is
    most of a sink's CPU per event).

    Exact when True: a candidate ``"name":"x`` counts only if the text before it, its strings removed,
    leaves no string open (else the candidate is inside a string value) and ends at depth 1 with ``{``
    or ``,`` (a member of the outermost object). False may also mean "cannot tell": callers decode."""
    needle = b'"' + name.encode() + b'":"'
    at = raw.find(needle)
    while at != -1:
        if raw[at + len(needle) : at + len(needle) + 1] not in (b'"', b""):  # a non-empty string
            structure = _structure(raw[:at])
            if (
                structure is not None
                and structure[-1:] in (b"{", b",")
                and structure.count(b"{")
                + structure.count(b"[")
                - structure.count(b"}")
                - structure.count(b"]")
                == 1
            ):
                return True
        at = raw.find(needle, at + 1)
    return False


class ForwardEvent:
    """One committed audit event on its way to a sink.

    ``hash`` (the event's chain hash, lowercase hex) is the idempotency key: it is unique per event and
    the same on every resend, so a receiver that keeps the keys it has seen drops the duplicates that
    at-least-once delivery produces. ``decision`` is the store's index column (``tessera.decision``),
    readable without decoding the event. ``raw`` is the stored canonical JSON of the event.
    """

    __slots__ = ("_document", "_event", "decision", "hash", "prev_hash", "raw", "seq", "tenant", "time_ms")

    def __init__(
        self,
        tenant: str,
        seq: int,
        hash: str,
        prev_hash: str,
        time_ms: int,
        decision: str,
        raw: bytes,
    ):
        self.tenant = tenant
        self.seq = seq
        self.hash = hash
        self.prev_hash = prev_hash
        self.time_ms = time_ms
        self.decision = decision
        self.raw = raw
        self._event: dict[str, Any] | None = None
        self._document: bytes | None = None

    def __repr__(self) -> str:
        return f"ForwardEvent(tenant={self.tenant!r}, seq={self.seq}, hash={self.hash[:12]}…)"

    @property
    def idempotency_key(self) -> str:
        return self.hash

    @property
    def event(self) -> dict[str, Any]:
        """The audit event, decoded on first use (shared by every sink holding this object: treat it as
        read-only)."""
        if self._event is None:
            self._event = json.loads(self.raw)
        return self._event

    def _chain(self) -> dict[str, Any]:
        return {"tenant": self.tenant, "seq": self.seq, "hash": self.hash, "prev_hash": self.prev_hash}

    def document(self) -> dict[str, Any]:
        """The event as sinks send it: the audit event unchanged (the OCSF class 6003 fields and the
        ``tessera`` object) plus ``tessera_chain`` {tenant, seq, hash, prev_hash}, so a receiver can also
        check the chain link (``hash = SHA-256(prev_hash || JCS(event))``) without asking Tessera."""
        doc = dict(self.event)
        doc["tessera_chain"] = self._chain()
        return doc

    def document_bytes(self) -> bytes:
        """:meth:`document` as JSON: the stored canonical bytes of the event (its members in JCS order)
        with ``tessera_chain`` added as the last member. Computed once per event."""
        if self._document is None:
            raw = self.raw.rstrip()
            if not raw.endswith(b"}"):  # never for a stored event (always an object); encode it whole
                self._document = json_bytes(self.document())
            else:
                chain = b"".join(
                    (
                        b'{"tenant":',
                        quoted(self.tenant),
                        b',"seq":',
                        str(self.seq).encode(),
                        b',"hash":',
                        json_hex(self.hash),
                        b',"prev_hash":',
                        json_hex(self.prev_hash),
                        b"}",
                    )
                )
                body = raw[:-1].rstrip()
                separator = b"," if body != b"{" else b""
                self._document = body + separator + b'"tessera_chain":' + chain + b"}"
        return self._document

    def ndjson_line(self) -> bytes:
        return self.document_bytes() + b"\n"


def forward_event(record: AuditRecord) -> ForwardEvent:
    event = record.event
    return ForwardEvent(
        tenant=record.tenant,
        seq=record.seq,
        hash=record.hash,
        prev_hash=record.prev_hash,
        time_ms=record.time_ms,
        decision=record.decision,
        raw=event.encode() if isinstance(event, str) else bytes(event),
    )
