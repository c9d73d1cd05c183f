"""``authz.client.MemoryWriter``: key forms, entries signed from what memory stores return."""

from __future__ import annotations

from dataclasses import dataclass, field

import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from authz.client import MemoryWriter
from authz.provenance import WriterKeys, verify_entries
from authz.storage import RegisteredWriter

SEED = bytes(range(32))


def verifies(writer: MemoryWriter, entry: dict, sources=("*",)) -> str | None:
    keys = WriterKeys.build(
        [RegisteredWriter("t", writer.writer_id, writer.public_key, sources, None, 0, "x", 0)]
    )
    return verify_entries(None, [entry], keys, now=1.0).error


def test_the_private_key_may_be_an_object_a_raw_seed_or_a_pem():
    key = Ed25519PrivateKey.from_private_bytes(SEED)
    pem = key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    )
    entries = [
        MemoryWriter(k, "w").sign("e1", "text", "erp", written_at="2026-01-01T00:00:00Z")
        for k in (key, SEED, pem, pem.decode())
    ]
    assert all(e == entries[0] for e in entries)
    with pytest.raises(TypeError):
        MemoryWriter(b"short", "w")
    with pytest.raises(ValueError):
        MemoryWriter(SEED, " ")


def test_sign_defaults_written_at_to_now_and_may_carry_the_content():
    writer = MemoryWriter(SEED, "rag")
    entry = writer.sign("doc-1", "Pay ACME", "erp", include_content=True)
    assert entry["written_at"].endswith("Z") and entry["content"] == "Pay ACME"
    assert verifies(writer, entry) is None
    tampered = dict(entry, content="Pay MALLORY")
    assert "does not match its hash" in verifies(writer, tampered)


@dataclass
class Document:  # the shape of a LangChain Document
    page_content: str
    metadata: dict = field(default_factory=dict)
    id: str | None = None


def test_records_as_memory_stores_return_them():
    writer = MemoryWriter(SEED, "rag")
    rows = [
        {"id": "r1", "text": "alpha", "metadata": {"source": "wiki", "created_at": "2026-01-01T00:00:00Z"}},
        {"id": "r2", "content": "beta", "source": "erp", "written_at": "2026-01-02T00:00:00Z"},
        Document("gamma", {"source": "s3://docs/a.pdf", "id": "r3"}),
        Document("delta", {"source": "s3://docs/b.pdf"}, id="r4"),
    ]
    entries = writer.sign_records(rows)
    assert [e["id"] for e in entries] == ["r1", "r2", "r3", "r4"]
    assert [e["source"] for e in entries] == ["wiki", "erp", "s3://docs/a.pdf", "s3://docs/b.pdf"]
    assert entries[0]["written_at"] == "2026-01-01T00:00:00Z"
    assert entries[1] == writer.sign("r2", "beta", "erp", written_at="2026-01-02T00:00:00Z")
    assert all(verifies(writer, e) is None for e in entries)
    forced = writer.sign_record(rows[0], source="mailbox")
    assert forced["source"] == "mailbox"
    with pytest.raises(ValueError, match="no source"):
        writer.sign_record({"id": "x", "text": "no source"})
    with pytest.raises(ValueError, match="no id"):
        writer.sign_record(Document("no id", {"source": "wiki"}))
