"""Memory provenance (ARCHITECTURE §8): signed memory entries an agent presents with a call.

**Writer signatures (the scheme to use).** Each tenant registers its memory writers (a RAG ingester, a
vector-store loader) through the admin API: a writer id, its Ed25519 public key, the ``source`` values it
may write, an optional expiry. The writer signs each entry with its own private key (SDK
``MemoryWriter``); Tessera never holds it. An entry is::

    {"id", "content_sha256", "source", "written_at", "writer", "signature"}

``signature``: Ed25519 over the RFC 8785 bytes of ``{id, content_sha256, source, written_at, writer}``,
base64url without padding. An entry signed by an unknown, disabled or expired writer, for a source the
writer is not registered for, or with a wrong signature, denies the call (-32014).

**HMAC tags (deprecated).** The first version's entries carry ``tag = HMAC-SHA256(tenant memory key,
JCS({id, content_sha256, source, written_at}))`` under a key derived from the master secret, so whoever
signs can forge for the whole tenant. They still verify during the deprecation window (documented in
docs/provenance.md), marked ``scheme: "hmac"`` in the policy input and ``(hmac)`` in the audit event's
``memory_writers``, so a policy can refuse them today.

On a call the agent presents the entries that shaped it, each with its ``content`` or
``content_sha256``; each entry is verified on its own, so nothing has to be replayed. The writers are
looked up in memory (:class:`WriterKeys`, rebuilt by the tenant directory when the store changes): no
store read per call.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey

from authz.canonical import canonical_json
from authz.echo import echo
from authz.storage.memory_writers import RegisteredWriter

_HMAC_FIELDS = ("id", "content_sha256", "source", "written_at")
_SIGNED_FIELDS = ("id", "content_sha256", "source", "written_at", "writer")
#: Verified signatures remembered per writer.
VERIFIED_CACHE = 4096
#: How an HMAC-tagged entry's writer is named in the audit event (not a valid writer id).
HMAC_WRITER = "(hmac)"


@dataclass(frozen=True, slots=True)
class ProvenanceResult:
    """``error`` is set when the presentation must be denied (-32014). ``writers``: the writers named
    by the entries examined, in order (the offending entry's too), for the audit event."""

    presented: bool
    verified: bool
    entries: tuple[dict[str, Any], ...] = ()
    error: str | None = None
    writers: tuple[str, ...] = ()

    def to_policy_input(self) -> dict[str, Any]:
        return {"presented": self.presented, "verified": self.verified, "entries": list(self.entries)}


NOT_PRESENTED = ProvenanceResult(presented=False, verified=False)


class _Writer:
    """A registered writer with its keys loaded once (verification must not parse keys per call)."""

    __slots__ = ("keys", "record", "verified")

    def __init__(self, record: RegisteredWriter):
        self.record = record
        self.keys = {key: Ed25519PublicKey.from_public_bytes(key) for key in _keys(record)}
        #: (signature, payload) -> the key bytes it verified under. Agents present the same entries again
        #: and again; a signature's validity depends only on key and bytes, so it is checked once (the
        #: writer's state, checked before, and the key's grace, checked on use, are never cached).
        self.verified: dict[tuple[bytes, bytes], bytes] = {}

    def verify(self, signature: bytes, payload: bytes, now: float) -> bool:
        live = self.record.keys_at(now)
        known = self.verified.get((signature, payload))
        if known is not None:
            return known in live
        for raw in live:
            try:
                self.keys[raw].verify(signature, payload)
            except InvalidSignature:
                continue
            if len(self.verified) >= VERIFIED_CACHE:
                self.verified.pop(next(iter(self.verified)))  # oldest first: bounded memory
            self.verified[(signature, payload)] = raw
            return True
        return False


def _keys(record: RegisteredWriter) -> tuple[bytes, ...]:
    keys = [record.public_key]
    if record.previous_public_key is not None:
        keys.append(record.previous_public_key)
    return tuple(keys)


class WriterKeys:
    """One tenant's registered writers, in memory. Immutable; :meth:`updated` builds the next one and
    reuses the loaded keys of writers that did not change."""

    __slots__ = ("_writers",)

    def __init__(self, writers: Mapping[str, _Writer] | None = None):
        self._writers: Mapping[str, _Writer] = writers or {}

    @classmethod
    def build(cls, records: Iterable[RegisteredWriter], previous: WriterKeys | None = None) -> WriterKeys:
        old = previous._writers if previous is not None else {}
        writers: dict[str, _Writer] = {}
        for record in records:
            known = old.get(record.writer_id)
            writers[record.writer_id] = (
                known if known is not None and known.record == record else _Writer(record)
            )
        return cls(writers)

    def get(self, writer_id: str) -> _Writer | None:
        return self._writers.get(writer_id)

    def __len__(self) -> int:
        return len(self._writers)


NO_WRITERS = WriterKeys()


def signed_payload(entry: Mapping[str, Any]) -> bytes:
    """The RFC 8785 bytes a writer signs (the five signed fields)."""
    return canonical_json({name: entry[name] for name in _SIGNED_FIELDS})


def _hmac_payload(entry: Mapping[str, Any]) -> bytes:
    return canonical_json({name: entry[name] for name in _HMAC_FIELDS})


def content_digest(content: str | bytes) -> str:
    return hashlib.sha256(content.encode() if isinstance(content, str) else content).hexdigest()


def sign_entry(
    memory_key: bytes, *, entry_id: str, content: str | bytes, source: str, written_at: str
) -> dict:
    """Sign one entry with the deprecated HMAC scheme (kept for tests of the deprecation window)."""
    entry = {
        "id": entry_id,
        "content_sha256": content_digest(content),
        "source": source,
        "written_at": written_at,
    }
    entry["tag"] = hmac.new(memory_key, _hmac_payload(entry), hashlib.sha256).hexdigest()
    return entry


def _unb64u(text: str) -> bytes | None:
    try:
        return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))
    except (binascii.Error, ValueError):
        return None


def _check_signature(entry: dict[str, Any], writers: WriterKeys, now: float) -> str | None:
    """None when the writer may sign this entry and its signature verifies; else the denial reason."""
    name = entry["writer"]
    label = f"provenance entry {echo(entry['id'])}"
    writer = writers.get(name)
    if writer is None:
        return f"{label} is signed by unknown memory writer {echo(name)}"
    record = writer.record
    if record.disabled:
        return f"{label} is signed by disabled memory writer {echo(name)}"
    if record.expires_at is not None and now >= record.expires_at:
        return f"{label} is signed by expired memory writer {echo(name)}"
    if not record.allows_source(entry["source"]):
        return f"{label}: memory writer {echo(name)} may not write source {echo(entry['source'])}"
    signature = _unb64u(entry["signature"])
    if signature is None or len(signature) != 64:
        return f"{label} has a malformed signature"
    try:
        payload = signed_payload(entry)
    except Exception:  # e.g. a lone surrogate: RFC 8785 cannot encode it, so nobody can have signed it
        return f"{label} cannot be canonicalized"
    return None if writer.verify(signature, payload, now) else f"{label} has a wrong signature"


def verify_entries(
    memory_key: bytes | None,
    raw: Any,
    writers: WriterKeys = NO_WRITERS,
    now: float = 0.0,
) -> ProvenanceResult:
    """Check every presented entry; one unsigned, malformed or forged entry fails the presentation.

    ``writers``: the tenant's registered writers; ``now``: epoch seconds (writer expiry, key grace).
    ``memory_key``: the tenant's HMAC key for the deprecated scheme (None: HMAC tags are refused).
    """
    if raw is None:
        return NOT_PRESENTED
    if not isinstance(raw, list) or not raw:
        return ProvenanceResult(True, False, error="provenance must be a non-empty list of signed entries")
    verified: list[dict[str, Any]] = []
    named: list[str] = []

    def fail(reason: str) -> ProvenanceResult:
        return ProvenanceResult(True, False, tuple(verified), error=reason, writers=tuple(named))

    for index, entry in enumerate(raw):
        if not isinstance(entry, dict):
            return fail(f"provenance entry {index} is not an object")
        entry = dict(entry)
        content = None
        if "content" in entry:
            content = entry.pop("content")
            if not isinstance(content, str):
                return fail(f"provenance entry {index}: content must be a string")
            digest = content_digest(content)
            if entry.setdefault("content_sha256", digest) != digest:
                return fail(f"provenance entry {index}: content does not match its hash")
        signed = "signature" in entry or "writer" in entry
        required = (*_SIGNED_FIELDS, "signature") if signed else (*_HMAC_FIELDS, "tag")
        missing = [name for name in required if not isinstance(entry.get(name), str)]
        if missing:
            what = "unsigned" if ("tag" in missing or "signature" in missing) else "incomplete"
            return fail(f"provenance entry {index} is {what} (missing {', '.join(missing)})")
        if signed:
            if entry["writer"] not in named:
                named.append(entry["writer"])
            reason = _check_signature(entry, writers, now)
            if reason is not None:
                return fail(reason)
            checked = {name: entry[name] for name in _SIGNED_FIELDS} | {"scheme": "ed25519", "verified": True}
            if content is not None:  # matched its signed hash: the policy may look inside (an IBAN)
                checked["content"] = content
            verified.append(checked)
            continue
        if HMAC_WRITER not in named:
            named.append(HMAC_WRITER)
        if memory_key is None:
            return fail(f"provenance entry {echo(entry['id'])} uses the retired HMAC tag scheme")
        expected = hmac.new(memory_key, _hmac_payload(entry), hashlib.sha256).hexdigest()
        if not hmac.compare_digest(expected, entry["tag"]):
            return fail(f"provenance entry {echo(entry['id'])} has a wrong tag")
        verified.append(
            {name: entry[name] for name in _HMAC_FIELDS}
            | {"writer": None, "scheme": "hmac", "verified": True}
        )
    return ProvenanceResult(True, True, tuple(verified), writers=tuple(named))


__all__ = [
    "HMAC_WRITER",
    "NOT_PRESENTED",
    "NO_WRITERS",
    "ProvenanceResult",
    "WriterKeys",
    "content_digest",
    "sign_entry",
    "signed_payload",
    "verify_entries",
]
