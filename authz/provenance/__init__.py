"""Memory provenance (ARCHITECTURE §8): signed memory entries an agent presents with a call.

A memory writer signs each entry: ``tag = HMAC-SHA256(tenant memory key, JCS({id, content_sha256,
source, written_at}))``, hex-encoded. The tenant memory key is derived from the master secret. On a
call the agent presents the entries that shaped it, each with its ``content`` or ``content_sha256`` and
its ``tag``; each entry is verified on its own, so nothing has to be replayed.
"""

from __future__ import annotations

import hashlib
import hmac
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import rfc8785

from authz.echo import echo

_SIGNED_FIELDS = ("id", "content_sha256", "source", "written_at")


@dataclass(frozen=True, slots=True)
class ProvenanceResult:
    """``error`` is set when the presentation must be denied (-32014)."""

    presented: bool
    verified: bool
    entries: tuple[dict[str, Any], ...] = ()
    error: str | None = None

    def to_policy_input(self) -> dict[str, Any]:
        return {"presented": self.presented, "verified": self.verified, "entries": list(self.entries)}


NOT_PRESENTED = ProvenanceResult(presented=False, verified=False)


def _signed_payload(entry: Mapping[str, Any]) -> bytes:
    return rfc8785.dumps({name: entry[name] for name in _SIGNED_FIELDS})


def content_digest(content: str | bytes) -> str:
    return hashlib.sha256(content.encode() if isinstance(content, str) else content).hexdigest()


def sign_entry(
    memory_key: bytes, *, entry_id: str, content: str | bytes, source: str, written_at: str
) -> dict:
    """Sign one memory entry; returns the entry as an agent presents it (with content hash and tag)."""
    entry = {
        "id": entry_id,
        "content_sha256": content_digest(content),
        "source": source,
        "written_at": written_at,
    }
    entry["tag"] = hmac.new(memory_key, _signed_payload(entry), hashlib.sha256).hexdigest()
    return entry


def verify_entries(memory_key: bytes, raw: Any) -> ProvenanceResult:
    """Check every presented entry; one unsigned, malformed or forged entry fails the presentation."""
    if raw is None:
        return NOT_PRESENTED
    if not isinstance(raw, list) or not raw:
        return ProvenanceResult(True, False, error="provenance must be a non-empty list of signed entries")
    verified: list[dict[str, Any]] = []
    for index, entry in enumerate(raw):
        if not isinstance(entry, dict):
            return ProvenanceResult(True, False, error=f"provenance entry {index} is not an object")
        entry = dict(entry)
        if "content" in entry:
            content = entry.pop("content")
            if not isinstance(content, str):
                return ProvenanceResult(
                    True, False, error=f"provenance entry {index}: content must be a string"
                )
            digest = content_digest(content)
            if entry.setdefault("content_sha256", digest) != digest:
                return ProvenanceResult(
                    True, False, error=f"provenance entry {index}: content does not match its hash"
                )
        missing = [name for name in (*_SIGNED_FIELDS, "tag") if not isinstance(entry.get(name), str)]
        if missing:
            what = "unsigned" if "tag" in missing else "incomplete"
            return ProvenanceResult(
                True, False, error=f"provenance entry {index} is {what} (missing {', '.join(missing)})"
            )
        expected = hmac.new(memory_key, _signed_payload(entry), hashlib.sha256).hexdigest()
        if not hmac.compare_digest(expected, entry["tag"]):
            return ProvenanceResult(
                True, False, error=f"provenance entry {echo(entry['id'])} has a wrong tag"
            )
        verified.append({name: entry[name] for name in _SIGNED_FIELDS} | {"verified": True})
    return ProvenanceResult(True, True, tuple(verified))


__all__ = ["NOT_PRESENTED", "ProvenanceResult", "content_digest", "sign_entry", "verify_entries"]
