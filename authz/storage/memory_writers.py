"""Registered memory writers (ARCHITECTURE §8): the record both stores keep, and its row form.

A memory writer (a RAG ingester, a vector-store loader) signs the memory entries it writes with its own
Ed25519 key; Tessera keeps only the public key. Each tenant registers its writers; a writer may sign
only the ``sources`` it was registered for, until ``expires_at``, and not once disabled. A rotation
replaces the key; the previous key may stay valid for a grace period (``previous_until``) so entries
written just before the rotation still verify.
"""

from __future__ import annotations

import base64
import json
from dataclasses import dataclass, replace

from authz.errors import FailedPrecondition

#: Column order of the ``memory_writers`` table as both stores read and write it.
WRITER_COLUMNS = (
    "tenant, writer_id, public_key, sources, expires_at, created_at, created_by, updated_at, "
    "disabled_at, disabled_by, previous_public_key, previous_until"
)


@dataclass(frozen=True, slots=True)
class RegisteredWriter:
    """One memory writer of one tenant.

    ``public_key``: raw 32-byte Ed25519 public key. ``sources``: the ``source`` values its entries may
    carry; a value ending in ``*`` allows every source with that prefix (``s3://docs/*``).
    ``expires_at``/``disabled_at``/``previous_until``: epoch seconds or None.
    """

    tenant: str
    writer_id: str
    public_key: bytes
    sources: tuple[str, ...]
    expires_at: float | None
    created_at: float
    created_by: str
    updated_at: float
    disabled_at: float | None = None
    disabled_by: str | None = None
    previous_public_key: bytes | None = None
    previous_until: float | None = None

    @property
    def disabled(self) -> bool:
        return self.disabled_at is not None

    def allows_source(self, source: str) -> bool:
        return any(
            source.startswith(allowed[:-1]) if allowed.endswith("*") else source == allowed
            for allowed in self.sources
        )

    def keys_at(self, now: float) -> tuple[bytes, ...]:
        """The public keys an entry may be signed with at ``now`` (the previous one during its grace)."""
        if (
            self.previous_public_key is not None
            and self.previous_until is not None
            and now < self.previous_until
        ):
            return (self.public_key, self.previous_public_key)
        return (self.public_key,)


def _b64(data: bytes | None) -> str | None:
    return None if data is None else base64.b64encode(data).decode("ascii")


def _unb64(text: str | None) -> bytes | None:
    return None if text is None else base64.b64decode(text)


def writer_row(writer: RegisteredWriter) -> tuple:
    """The row for :data:`WRITER_COLUMNS` (keys base64, sources a JSON array)."""
    return (
        writer.tenant,
        writer.writer_id,
        _b64(writer.public_key),
        json.dumps(list(writer.sources)),
        writer.expires_at,
        writer.created_at,
        writer.created_by,
        writer.updated_at,
        writer.disabled_at,
        writer.disabled_by,
        _b64(writer.previous_public_key),
        writer.previous_until,
    )


def writer_from_row(row: tuple) -> RegisteredWriter:
    (
        tenant,
        writer_id,
        key,
        sources,
        expires,
        created,
        created_by,
        updated,
        disabled,
        disabled_by,
        prev,
        until,
    ) = row
    return RegisteredWriter(
        tenant,
        writer_id,
        _unb64(key) or b"",
        tuple(json.loads(sources)),
        expires,
        created,
        created_by,
        updated,
        disabled,
        disabled_by,
        _unb64(prev),
        until,
    )


def rotated(
    writer: RegisteredWriter, public_key: bytes, previous_until: float | None, now: float
) -> RegisteredWriter:
    """``writer`` with ``public_key`` as its key; the old key stays valid until ``previous_until`` (None:
    retired at once). A disabled writer is never rotated back into use (FailedPrecondition)."""
    if writer.disabled:
        raise FailedPrecondition(
            f"memory writer {writer.writer_id!r} is disabled; register a new writer", reason="WRITER_DISABLED"
        )
    return replace(
        writer,
        public_key=public_key,
        previous_public_key=writer.public_key if previous_until is not None else None,
        previous_until=previous_until,
        updated_at=now,
    )
