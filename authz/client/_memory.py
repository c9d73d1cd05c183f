"""Signing memory entries with a memory writer's own Ed25519 key (ARCHITECTURE §8).

A memory writer (a RAG ingester, a vector-store loader) is registered with Tessera by its id and public
key; its private key never leaves it. Each entry it writes carries::

    {"id", "content_sha256", "source", "written_at", "writer", "signature"}

``signature`` is the Ed25519 signature, base64url without padding, over the RFC 8785 (JCS) bytes of
``{id, content_sha256, source, written_at, writer}``. The agent presents the signed entries that shaped
a call (``provenance=`` on :class:`Gateway` calls), with the ``content`` added or without it.

``cryptography`` is imported when a :class:`MemoryWriter` is made, not when ``authz.client`` is imported,
so agents that only call tools need nothing beyond httpx and pymacaroons.
"""

from __future__ import annotations

import base64
import hashlib
import json
from collections.abc import Iterable, Mapping
from datetime import UTC, datetime
from typing import Any

#: The signed fields, in the order they are documented (JCS sorts them anyway).
SIGNED_FIELDS = ("id", "content_sha256", "source", "written_at", "writer")


def _b64u(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).decode("ascii").rstrip("=")


def signed_payload(entry: Mapping[str, Any]) -> bytes:
    """The bytes a writer signs: RFC 8785 of the signed fields, all of which are strings.

    For an object whose keys are ASCII and whose values are strings, RFC 8785 output is exactly
    ``json.dumps(sort_keys=True, separators=(",", ":"), ensure_ascii=False)`` (same escapes, and code
    point order equals UTF-16 order for ASCII keys); a lone surrogate cannot be encoded and is refused.
    """
    fields = {}
    for name in SIGNED_FIELDS:
        value = entry.get(name)
        if not isinstance(value, str):
            raise ValueError(f"memory entry field {name!r} must be a string")
        fields[name] = value
    try:
        return json.dumps(fields, sort_keys=True, separators=(",", ":"), ensure_ascii=False).encode()
    except UnicodeEncodeError as exc:
        raise ValueError("memory entry fields must be valid Unicode (no lone surrogates)") from exc


def content_sha256(content: str | bytes) -> str:
    """Hex SHA-256 of the content (UTF-8 for a str)."""
    if isinstance(content, str):
        content = content.encode()
    if not isinstance(content, bytes | bytearray):
        raise TypeError(f"memory content must be str or bytes, got {type(content).__name__}")
    return hashlib.sha256(content).hexdigest()


def _now() -> str:
    return datetime.now(UTC).replace(microsecond=0).isoformat().replace("+00:00", "Z")


def _load_private_key(private_key: Any) -> Any:
    from cryptography.hazmat.primitives import serialization
    from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

    if isinstance(private_key, Ed25519PrivateKey):
        return private_key
    if isinstance(private_key, bytes | bytearray) and len(private_key) == 32:
        return Ed25519PrivateKey.from_private_bytes(bytes(private_key))
    if isinstance(private_key, str):
        private_key = private_key.encode()
    if isinstance(private_key, bytes | bytearray) and b"-----BEGIN" in private_key:
        key = serialization.load_pem_private_key(bytes(private_key), password=None)
        if isinstance(key, Ed25519PrivateKey):
            return key
        raise TypeError("the PEM key is not an Ed25519 private key")
    raise TypeError(
        "private_key must be an Ed25519PrivateKey, its 32-byte raw seed, or an unencrypted PKCS#8 PEM"
    )


class MemoryWriter:
    """Signs memory entries as the registered writer ``writer_id``.

    ::

        writer = MemoryWriter(private_key, "rag-ingester")
        entry = writer.sign("doc-17", "Pay ACME to IBAN DE89 3704 ...", "erp")
        gw.tool_call("transfer_funds", args, provenance=[entry])

    ``private_key`` is an ``Ed25519PrivateKey``, its 32-byte raw seed, or an unencrypted PKCS#8 PEM.
    """

    def __init__(self, private_key: Any, writer_id: str):
        if not isinstance(writer_id, str) or not writer_id.strip():
            raise ValueError("writer_id must be a non-empty string")
        self._key = _load_private_key(private_key)
        self.writer_id = writer_id

    @property
    def public_key(self) -> bytes:
        """The raw 32-byte public key, as registered with Tessera (admin API ``MemoryWriterService``)."""
        from cryptography.hazmat.primitives import serialization

        return self._key.public_key().public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)

    def sign(
        self,
        entry_id: str,
        content: str | bytes,
        source: str,
        *,
        written_at: str | None = None,
        include_content: bool = False,
    ) -> dict[str, str]:
        """One signed entry. ``written_at`` defaults to now (RFC 3339, UTC); ``include_content`` keeps
        the content in the entry (Tessera then checks it against ``content_sha256``)."""
        entry = {
            "id": entry_id,
            "content_sha256": content_sha256(content),
            "source": source,
            "written_at": written_at if written_at is not None else _now(),
            "writer": self.writer_id,
        }
        entry["signature"] = _b64u(self._key.sign(signed_payload(entry)))
        if include_content:
            entry["content"] = content if isinstance(content, str) else bytes(content).decode()
        return entry

    def sign_record(
        self, record: Any, *, source: str | None = None, written_at: str | None = None
    ) -> dict[str, str]:
        """Sign an entry as a memory store returned it.

        Understood shapes: a mapping or an object with ``id`` and one of ``content``, ``text``,
        ``page_content`` or ``document`` (LangChain ``Document``, Chroma and most vector-store rows),
        and optionally ``source`` and ``written_at`` (or ``created_at``), directly or under ``metadata``.
        ``source`` and ``written_at`` given here win over what the record says.
        """
        fields = _record_fields(record)
        entry_id = fields.get("id")
        content = next(
            (fields[n] for n in ("content", "text", "page_content", "document") if n in fields), None
        )
        source = source if source is not None else fields.get("source")
        if written_at is None:
            written_at = fields.get("written_at", fields.get("created_at"))
            if isinstance(written_at, datetime):
                written_at = written_at.astimezone(UTC).isoformat().replace("+00:00", "Z")
        if entry_id is None or content is None or source is None:
            missing = [
                n for n, v in (("id", entry_id), ("content", content), ("source", source)) if v is None
            ]
            raise ValueError(f"the memory record has no {', '.join(missing)}")
        return self.sign(str(entry_id), content, source, written_at=written_at)

    def sign_records(self, records: Iterable[Any], *, source: str | None = None) -> list[dict[str, str]]:
        """:meth:`sign_record` for each record a memory store returned."""
        return [self.sign_record(record, source=source) for record in records]


def _record_fields(record: Any) -> dict[str, Any]:
    if isinstance(record, Mapping):
        top = dict(record)
    else:
        top = {
            name: getattr(record, name)
            for name in (
                "id",
                "content",
                "text",
                "page_content",
                "document",
                "source",
                "written_at",
                "created_at",
                "metadata",
            )
            if getattr(record, name, None) is not None
        }
    metadata = top.pop("metadata", None)
    fields = dict(metadata) if isinstance(metadata, Mapping) else {}
    fields.update({k: v for k, v in top.items() if v is not None})  # the record's own fields win
    return fields


__all__ = ["SIGNED_FIELDS", "MemoryWriter", "content_sha256", "signed_payload"]
