"""The audit chain's arithmetic: a leaf module that :mod:`authz.audit` and every store implementation use.

``hash = SHA-256(prev_hash || JCS(event))``: ``prev_hash`` is the previous event's hash as 32 raw bytes
(32 zero bytes for a tenant's first event), ``JCS`` is RFC 8785 canonical JSON, hashes are stored and
exchanged as lowercase hex. Stores call :func:`canonical_event` before their append transaction and
:func:`chain_hash` inside it, after reading (and locking) the tenant's head; PostgreSQL computes the
same hash server-side instead (``tessera_audit_append()``, its migration 0007), on the same bytes.
It imports nothing from :mod:`authz.audit` or :mod:`authz.storage`, so neither package imports the
other's internals.
"""

from __future__ import annotations

import hashlib
from collections.abc import Mapping
from typing import Any

from authz.canonical import canonical_json

#: ``prev_hash`` of every tenant's first event: 32 zero bytes, hex.
GENESIS_HASH = "00" * 32


def canonical_event(event: Mapping[str, Any]) -> bytes:
    """RFC 8785 bytes of an event (what is hashed and what the store keeps, as UTF-8 text)."""
    return canonical_json(event)


def chain_hash(prev_hash: str, canonical: bytes) -> str:
    """``SHA-256(bytes.fromhex(prev_hash) || canonical)`` as lowercase hex."""
    return hashlib.sha256(bytes.fromhex(prev_hash) + canonical).hexdigest()


def event_index(event: Mapping[str, Any]) -> tuple[int, str, str | None]:
    """The indexed columns a store keeps beside the event: ``(time_ms, decision, agent)``.

    Every event built by :mod:`authz.audit` carries ``time`` (epoch milliseconds), ``tessera.decision``
    (``allow``, ``deny``, ``escalate``, ``admin`` for admin mutations, ``list`` for a list answer the list
    processor handled) and ``tessera.agent``.
    Verification checks that the columns still match the event.
    """
    tessera = event.get("tessera") or {}
    agent = tessera.get("agent")
    return int(event["time"]), str(tessera["decision"]), (str(agent) if agent is not None else None)
