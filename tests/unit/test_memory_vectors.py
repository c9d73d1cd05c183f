"""The shared memory-writer vectors (tests/data/memory_vectors.json): the Python SDK reproduces them byte
for byte, and Tessera's verifier (RFC 8785 through ``rfc8785``, Ed25519) accepts every one of them.
The TypeScript SDK's tests read the same file."""

from __future__ import annotations

import base64
import json
from pathlib import Path

import pytest

from authz.client import MemoryWriter
from authz.client._memory import signed_payload as sdk_payload
from authz.provenance import WriterKeys, signed_payload, verify_entries
from authz.storage import RegisteredWriter

VECTORS = json.loads((Path(__file__).parents[1] / "data" / "memory_vectors.json").read_text())
CASES = VECTORS["cases"]


def content_of(case: dict) -> str | bytes:
    return base64.b64decode(case["content_base64"]) if "content_base64" in case else case["content"]


@pytest.mark.parametrize("case", CASES, ids=[c["name"] for c in CASES])
def test_the_sdk_signs_each_vector_byte_for_byte(case):
    writer = MemoryWriter(bytes.fromhex(VECTORS["private_key_seed_hex"]), VECTORS["writer"])
    assert writer.public_key.hex() == VECTORS["public_key_hex"]
    entry = writer.sign(case["entry_id"], content_of(case), case["source"], written_at=case["written_at"])
    assert entry == case["expected"]
    assert sdk_payload(entry).decode() == case["payload"]


@pytest.mark.parametrize("case", CASES, ids=[c["name"] for c in CASES])
def test_tesseras_canonical_payload_and_verifier_agree(case):
    assert signed_payload(case["expected"]).decode() == case["payload"]  # rfc8785, not the SDK's shortcut
    writers = WriterKeys.build(
        [
            RegisteredWriter(
                "acme", VECTORS["writer"], bytes.fromhex(VECTORS["public_key_hex"]), ("*",), None, 0, "t", 0
            )
        ]
    )
    result = verify_entries(None, [case["expected"]], writers, now=1_800_000_000)
    assert result.error is None and result.verified, result.error
    assert result.writers == (VECTORS["writer"],)


def test_the_vectors_cover_escapes_unicode_and_bytes():
    names = {c["name"] for c in CASES}
    assert {"escapes", "unicode", "bytes content", "empty content"} <= names
    assert any("\\u0001" in c["payload"] for c in CASES)  # JCS lowercase \u00xx escapes are exercised
