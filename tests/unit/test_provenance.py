"""Memory provenance verification (``authz.provenance``): every refusal of a writer-signed entry, key
rotation grace, the deprecated HMAC tags, and what the policy and the audit event get."""

from __future__ import annotations

import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from authz.audit._events import event_from_decision
from authz.check.models import Decision, Outcome
from authz.client import MemoryWriter
from authz.policy import compile_policy, default_policy_source
from authz.provenance import HMAC_WRITER, NO_WRITERS, WriterKeys, sign_entry, verify_entries
from authz.storage import RegisteredWriter

NOW = 1_800_000_000.0
KEY = Ed25519PrivateKey.from_private_bytes(bytes(range(32)))
WRITER = MemoryWriter(KEY, "erp-loader")


def registered(**kw) -> RegisteredWriter:
    fields = dict(
        tenant="demo",
        writer_id="erp-loader",
        public_key=WRITER.public_key,
        sources=("erp", "s3://inv/*"),
        expires_at=NOW + 60,
        created_at=NOW - 60,
        created_by="admin:k",
        updated_at=NOW - 60,
    )
    fields.update(kw)
    return RegisteredWriter(**fields)


def check(entries, writers: WriterKeys | None = None, memory_key: bytes | None = None, now: float = NOW):
    writers = writers if writers is not None else WriterKeys.build([registered()])
    return verify_entries(memory_key, entries, writers, now)


def test_a_signed_entry_verifies_and_the_policy_sees_its_content():
    entry = WRITER.sign("inv-1", "pay DE89", "s3://inv/2026/1.pdf", include_content=True)
    result = check([entry])
    assert result.error is None and result.verified and result.writers == ("erp-loader",)
    (seen,) = result.to_policy_input()["entries"]
    assert seen["writer"] == "erp-loader" and seen["scheme"] == "ed25519" and seen["content"] == "pay DE89"
    assert "signature" not in seen
    without = check([WRITER.sign("inv-1", "pay DE89", "erp")]).entries[0]
    assert "content" not in without


@pytest.mark.parametrize(
    ("writers", "entry", "now", "reason"),
    [
        (WriterKeys.build([]), WRITER.sign("e", "c", "erp"), NOW, "unknown memory writer 'erp-loader'"),
        (WriterKeys.build([registered(disabled_at=NOW - 1)]), WRITER.sign("e", "c", "erp"), NOW, "disabled"),
        (None, WRITER.sign("e", "c", "erp"), NOW + 60, "expired memory writer"),
        (None, WRITER.sign("e", "c", "mailbox"), NOW, "may not write source 'mailbox'"),
        (None, MemoryWriter(Ed25519PrivateKey.generate(), "erp-loader").sign("e", "c", "erp"), NOW, "wrong"),
        (None, WRITER.sign("e", "c", "erp") | {"source": "s3://inv/x"}, NOW, "wrong signature"),
        (None, WRITER.sign("e", "c", "erp") | {"signature": "AAAA"}, NOW, "malformed signature"),
        (None, {k: v for k, v in WRITER.sign("e", "c", "erp").items() if k != "signature"}, NOW, "unsigned"),
        (None, WRITER.sign("e", "c", "erp", include_content=True) | {"content": "d"}, NOW, "does not match"),
        (None, WRITER.sign("e", "c", "erp") | {"id": "\ud800"}, NOW, "cannot be canonicalized"),
    ],
)
def test_each_refused_entry_denies_with_its_reason(writers, entry, now, reason):
    result = check([entry], writers, now=now)
    assert not result.verified and result.error is not None and reason in result.error, result.error


def test_one_bad_entry_fails_the_presentation_and_names_every_writer_seen():
    good = WRITER.sign("a", "x", "erp")
    other = MemoryWriter(Ed25519PrivateKey.generate(), "mail").sign("b", "y", "mailbox")
    result = check([good, other])
    assert "unknown memory writer 'mail'" in result.error
    assert result.writers == ("erp-loader", "mail")


def test_the_previous_key_verifies_only_during_its_grace_period():
    new = MemoryWriter(Ed25519PrivateKey.generate(), "erp-loader")
    rotated = registered(
        public_key=new.public_key, previous_public_key=WRITER.public_key, previous_until=NOW + 5
    )
    writers = WriterKeys.build([rotated])
    old_entry, new_entry = WRITER.sign("a", "x", "erp"), new.sign("b", "y", "erp")
    assert check([old_entry, new_entry], writers, now=NOW).verified
    assert "wrong signature" in check([old_entry], writers, now=NOW + 5).error
    assert check([new_entry], writers, now=NOW + 5).verified


def test_rebuilding_reuses_the_loaded_keys_of_unchanged_writers():
    first = WriterKeys.build([registered(), registered(writer_id="wiki")])
    second = WriterKeys.build([registered(), registered(writer_id="wiki", sources=("wiki",))], first)
    assert second.get("erp-loader") is first.get("erp-loader")
    assert second.get("wiki") is not first.get("wiki") and second.get("wiki").record.sources == ("wiki",)
    assert len(second) == 2 and NO_WRITERS.get("erp-loader") is None


def test_hmac_tags_still_verify_during_the_deprecation_window_and_are_marked():
    key = b"k" * 32
    entry = sign_entry(key, entry_id="m1", content="c", source="crm", written_at="2026-01-01T00:00:00Z")
    result = check([entry], memory_key=key)
    assert result.verified and result.writers == (HMAC_WRITER,)
    assert result.entries[0]["scheme"] == "hmac" and result.entries[0]["writer"] is None
    assert "wrong tag" in check([entry | {"tag": "00" * 32}], memory_key=key).error
    assert "retired HMAC" in check([entry], memory_key=None).error


def test_the_audit_event_names_the_writers():
    decision = Decision("d", Outcome.ALLOW, tool="transfer_funds", memory_writers=("erp-loader", HMAC_WRITER))
    assert event_from_decision(decision, time_ms=1)["tessera"]["memory_writers"] == ["erp-loader", "(hmac)"]
    assert "memory_writers" not in event_from_decision(Decision("e", Outcome.ALLOW), time_ms=1)["tessera"]


def test_the_demo_policy_takes_a_transfers_iban_only_from_verified_memory():
    policy = compile_policy(default_policy_source())

    def decide(provenance):
        return policy.evaluate(
            {
                "phase": "call",
                "tool": "transfer_funds",
                "arguments": {"amount": 500, "iban": "DE89"},
                "approval": None,
                "provenance": provenance,
            }
        )

    absent = {"presented": False, "verified": False, "entries": []}
    assert decide(absent).outcome == "allow"  # tenants that do not use provenance are unaffected
    carrying = {
        "presented": True,
        "verified": True,
        "entries": [{"verified": True, "content": "pay to DE89"}],
    }
    assert decide(carrying).outcome == "allow"
    other = {"presented": True, "verified": True, "entries": [{"verified": True, "content": "pay to GB33"}]}
    assert decide(other).outcome == "deny" and "verified memory" in decide(other).reason
    hashed_only = {"presented": True, "verified": True, "entries": [{"verified": True}]}
    assert decide(hashed_only).outcome == "deny"
