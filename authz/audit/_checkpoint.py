"""Signed checkpoints: Ed25519 over ``{tenant, seq, hash, created_at}`` (RFC 8785 bytes).

A checkpoint exported off the box pins a chain prefix: whoever later deletes or rewrites events at or
before its seq (and fixes the head row to match) cannot produce a chain that still contains that
``(seq, hash)``, and cannot forge a new checkpoint without the signing key. The signing key is
derived from a 32-byte seed the caller passes (the service uses
``keyring.derive_subkey("audit-checkpoint", tenant)``), so it never needs to be stored.
"""

from __future__ import annotations

import base64
import json
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

import rfc8785
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey
from cryptography.hazmat.primitives.serialization import Encoding, PublicFormat

from authz.errors import InvalidArgument
from authz.storage.protocols import AuditCheckpoint

CHECKPOINT_TYPE = "tessera.audit.checkpoint"
CHECKPOINT_VERSION = 1


def _b64u(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def _unb64u(text: str) -> bytes:
    if not isinstance(text, str):
        raise InvalidArgument("expected a base64url string")
    try:
        return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))
    except ValueError as exc:
        raise InvalidArgument(f"not base64url: {exc}") from None


def checkpoint_signing_key(seed: bytes) -> Ed25519PrivateKey:
    """The Ed25519 key of a 32-byte seed (deterministic: the same seed gives the same key)."""
    if not isinstance(seed, bytes | bytearray) or len(seed) != 32:
        raise InvalidArgument("the checkpoint key seed must be 32 bytes")
    return Ed25519PrivateKey.from_private_bytes(bytes(seed))


def checkpoint_public_key(seed: bytes) -> bytes:
    """The raw 32-byte Ed25519 public key of a seed (to pin which key must have signed a checkpoint)."""
    return checkpoint_signing_key(seed).public_key().public_bytes(Encoding.Raw, PublicFormat.Raw)


@dataclass(frozen=True, slots=True)
class Checkpoint:
    """A signed ``(tenant, seq, hash)`` of one chain; ``public_key`` and ``signature`` are raw bytes."""

    tenant: str
    seq: int
    hash: str
    created_at: str
    public_key: bytes
    signature: bytes

    def body(self) -> dict[str, Any]:
        """What is signed (as RFC 8785 bytes)."""
        return {
            "type": CHECKPOINT_TYPE,
            "v": CHECKPOINT_VERSION,
            "tenant": self.tenant,
            "seq": self.seq,
            "hash": self.hash,
            "created_at": self.created_at,
        }

    def signed_bytes(self) -> bytes:
        return rfc8785.dumps(self.body())

    def signature_valid(self, public_key: bytes | None = None) -> bool:
        """True when the signature verifies under ``public_key`` (default: the embedded key).

        Pass the expected key (:func:`checkpoint_public_key`) to also reject a checkpoint someone signed
        with a key of their own.
        """
        if public_key is not None and public_key != self.public_key:
            return False
        try:
            Ed25519PublicKey.from_public_bytes(self.public_key).verify(self.signature, self.signed_bytes())
        except (InvalidSignature, ValueError):
            return False
        return True

    def export(self) -> str:
        """The portable form: the signed fields plus ``alg``, ``public_key`` and ``signature``
        (base64url, no padding), as indented JSON."""
        doc = {**self.body(), "alg": "Ed25519", "public_key": _b64u(self.public_key)}
        doc["signature"] = _b64u(self.signature)
        return json.dumps(doc, indent=2, sort_keys=True) + "\n"

    @classmethod
    def from_export(cls, exported: str | bytes | Mapping[str, Any]) -> Checkpoint:
        """Parse :meth:`export` output. InvalidArgument when it is not a checkpoint."""
        if isinstance(exported, str | bytes):
            try:
                doc = json.loads(exported)
            except ValueError as exc:
                raise InvalidArgument(f"checkpoint is not JSON: {exc}") from None
        else:
            doc = dict(exported)
        if not isinstance(doc, dict) or doc.get("type") != CHECKPOINT_TYPE:
            raise InvalidArgument(f"not a Tessera audit checkpoint (type must be {CHECKPOINT_TYPE!r})")
        if doc.get("v") != CHECKPOINT_VERSION or doc.get("alg") != "Ed25519":
            raise InvalidArgument("unsupported checkpoint version or algorithm")
        try:
            checkpoint = cls(
                tenant=doc["tenant"],
                seq=doc["seq"],
                hash=doc["hash"],
                created_at=doc["created_at"],
                public_key=_unb64u(doc["public_key"]),
                signature=_unb64u(doc["signature"]),
            )
        except KeyError as exc:
            raise InvalidArgument(f"checkpoint field {exc.args[0]!r} missing") from None
        types_ok = (
            isinstance(checkpoint.tenant, str)
            and isinstance(checkpoint.seq, int)
            and not isinstance(checkpoint.seq, bool)
            and checkpoint.seq >= 1
            and isinstance(checkpoint.hash, str)
            and isinstance(checkpoint.created_at, str)
        )
        if not types_ok:
            raise InvalidArgument("checkpoint fields have the wrong types")
        return checkpoint

    def to_record(self) -> AuditCheckpoint:
        return AuditCheckpoint(
            self.tenant, self.seq, self.hash, self.created_at, _b64u(self.public_key), _b64u(self.signature)
        )

    @classmethod
    def from_record(cls, record: AuditCheckpoint) -> Checkpoint:
        return cls(
            record.tenant,
            record.seq,
            record.hash,
            record.created_at,
            _unb64u(record.public_key),
            _unb64u(record.signature),
        )


def sign_checkpoint(
    tenant: str, seq: int, hash_hex: str, seed: bytes, *, created_at: str | None = None
) -> Checkpoint:
    """Sign ``(tenant, seq, hash)`` without touching a store."""
    key = checkpoint_signing_key(seed)
    if created_at is None:
        created_at = datetime.now(UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")
    unsigned = Checkpoint(tenant, seq, hash_hex, created_at, checkpoint_public_key(seed), b"")
    return Checkpoint(
        tenant, seq, hash_hex, created_at, unsigned.public_key, key.sign(unsigned.signed_bytes())
    )
