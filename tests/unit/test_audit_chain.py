"""The audit hash chain on a real SQLite file: events, verification, tampering, checkpoints."""

from __future__ import annotations

import hashlib
import itertools
import json
from pathlib import Path

import pytest
import rfc8785

from authz.audit import (
    GATEWAY_TENANT,
    GENESIS_HASH,
    ChainRecorder,
    Checkpoint,
    admin_event,
    append_admin_event,
    checkpoint_public_key,
    create_checkpoint,
    event_from_decision,
    export_events,
    sign_checkpoint,
    verify_chain,
)
from authz.check.models import Check, Decision, Outcome, new_decision_id
from authz.errors import FailedPrecondition, InvalidArgument
from authz.storage.sqlite import SQLiteStore
from tests.sqlite_raw import raw_sqlite

SEED = bytes(range(32))
OTHER_SEED = bytes(range(1, 33))


def decision(
    outcome: Outcome = Outcome.ALLOW, tenant: str | None = "acme", agent: str | None = "bot", **kw
) -> Decision:
    check = kw.pop("check", None)
    if check is None and outcome is Outcome.DENY:
        check = Check.POLICY
    if check is None and outcome is Outcome.ESCALATE:
        check = Check.APPROVAL
    return Decision(
        decision_id=new_decision_id(),
        outcome=outcome,
        check=check,
        reason=kw.pop("reason", "" if outcome is Outcome.ALLOW else "not today"),
        tenant=tenant,
        agent=agent,
        tool=kw.pop("tool", "send_email"),
        argument_keys=kw.pop("argument_keys", ("body", "to")),
        arguments_sha256=kw.pop("arguments_sha256", "ab" * 32),
        **kw,
    )


def mixed_run() -> list[Decision]:
    """Allow, deny and escalate across two tenants, plus tenant-less (gateway) denials."""
    out: list[Decision] = []
    for i in range(30):
        tenant = ("acme", "globex")[i % 2]
        outcome = (Outcome.ALLOW, Outcome.DENY, Outcome.ESCALATE)[i % 3]
        out.append(
            decision(outcome, tenant, agent=f"agent-{i % 4}", tool=("send_email", "read_invoice")[i % 2])
        )
    out.append(decision(Outcome.DENY, None, None, check=Check.CAPABILITY, reason="malformed token"))
    out.append(
        Decision(
            decision_id=new_decision_id(),
            outcome=Outcome.DENY,
            check=Check.PROTOCOL,
            reason="parse error",
            data={"code": -32700},
        )
    )
    return out


@pytest.fixture
async def store(tmp_path: Path):
    s = SQLiteStore(tmp_path / "audit.db")
    yield s
    await s.close()


async def record_all(store: SQLiteStore, decisions: list[Decision]) -> ChainRecorder:
    recorder = ChainRecorder(store, clock_ms=itertools.count(1_700_000_000_000, 1000).__next__)
    for d in decisions:
        await recorder.record([d])
    return recorder


def raw(store: SQLiteStore):
    """A second connection, as an attacker with database access would use (closed after the block)."""
    return raw_sqlite(store.db.path)


async def verify_all(store: SQLiteStore):
    return {t: await verify_chain(store, t) for t in await store.audit_tenants()}


# -- events ------------------------------------------------------------------------------------------------


def test_event_is_ocsf_api_activity_with_tessera_fields():
    d = decision(
        Outcome.DENY,
        token_id="tid",
        jti="j1",
        prompt_sha256="cd" * 32,
        policy_version=3,
        policy_hash="sha256:ff",
        latency_us=412,
        data={"scope": "agent", "limit": 5, "nested": {"dropped": True}},
    )
    event = event_from_decision(d, time_ms=1_700_000_000_123)
    assert (event["class_uid"], event["category_uid"], event["activity_id"]) == (6003, 6, 99)
    assert event["type_uid"] == 600399
    assert event["time"] == 1_700_000_000_123
    assert (event["status"], event["status_id"]) == ("Failure", 2)
    assert event["api"]["operation"] == "send_email"
    assert event["actor"]["user"] == {"name": "bot", "uid": "bot", "type": "Agent"}
    assert event["metadata"]["product"]["name"] == "Tessera"
    assert event["metadata"]["uid"] == d.decision_id
    assert event["metadata"]["tenant_uid"] == "acme"
    t = event["tessera"]
    assert t["decision"] == "deny" and t["check"] == "policy" and t["code"] == -32012
    assert t["argument_keys"] == ["body", "to"] and t["arguments_sha256"] == "ab" * 32
    assert (t["token_id"], t["jti"], t["policy_version"], t["latency_us"]) == ("tid", "j1", 3, 412)
    assert t["data"] == {"scope": "agent", "limit": 5}
    allow = event_from_decision(decision(Outcome.ALLOW), time_ms=1)
    assert (allow["status"], allow["status_id"], allow["tessera"]["code"]) == ("Success", 1, None)
    escalate = event_from_decision(decision(Outcome.ESCALATE, approval_id="ap-1"), time_ms=1)
    assert escalate["tessera"]["code"] == -32019 and escalate["tessera"]["approval_id"] == "ap-1"
    rpc = event_from_decision(decision(tool=None, rpc_method="tools/list"), time_ms=1)
    assert rpc["api"]["operation"] == "tools/list"


def test_gateway_decisions_go_to_the_reserved_chain():
    event = event_from_decision(decision(Outcome.DENY, None, None), time_ms=1)
    assert event["metadata"]["tenant_uid"] == GATEWAY_TENANT
    assert event["tessera"]["tenant"] is None


def test_hostile_strings_never_break_canonicalization():
    d = decision(
        Outcome.DENY,
        tool="x\ud800y",  # a lone surrogate, as json.loads produces from "\ud800"
        reason="r" * 100_000,
        argument_keys=tuple(f"k{i}" for i in range(1000)),
        policy_version=2**60,
    )
    event = event_from_decision(d, time_ms=1)
    rfc8785.dumps(event)
    assert event["tessera"]["tool"] == "x\ufffdy"
    assert len(event["tessera"]["reason"]) <= 2048
    assert len(event["tessera"]["argument_keys"]) == 256 and event["tessera"]["argument_keys_truncated"]
    assert event["tessera"]["policy_version"] == str(2**60)


# -- chain -------------------------------------------------------------------------------------------------


async def test_mixed_run_verifies_with_per_tenant_sequences(store):
    decisions = mixed_run()
    await record_all(store, decisions)
    assert await store.audit_tenants() == [GATEWAY_TENANT, "acme", "globex"]
    results = await verify_all(store)
    assert all(r.ok for r in results.values()), results
    assert {t: r.events_checked for t, r in results.items()} == {GATEWAY_TENANT: 2, "acme": 15, "globex": 15}
    assert await store.audit_head("acme") == (15, results["acme"].chain_hash)

    # hash = SHA-256(prev_hash || JCS(event)), genesis prev_hash is 32 zero bytes.
    records = [r async for r in store.iter_events("globex")]
    assert [r.seq for r in records] == list(range(1, 16))
    assert records[0].prev_hash == GENESIS_HASH
    first = json.loads(records[0].event)
    assert records[0].event.encode() == rfc8785.dumps(first)
    assert records[0].hash == hashlib.sha256(bytes(32) + rfc8785.dumps(first)).hexdigest()
    assert all(b.prev_hash == a.hash for a, b in itertools.pairwise(records))
    assert {json.loads(r.event)["tessera"]["decision"] for r in records} == {"allow", "deny", "escalate"}


async def test_one_append_spanning_tenants_is_one_linear_chain_each(store):
    events = [(t, event_from_decision(decision(tenant=t), time_ms=5)) for t in ["a", "b", "a", "a", "b"]]
    written = await store.append_events(events)
    assert [(t, s) for t, s, _ in written] == [("a", 1), ("b", 1), ("a", 2), ("a", 3), ("b", 2)]
    assert (await store.audit_head("a"))[0] == 3
    assert all(r.ok for r in (await verify_all(store)).values())


async def test_two_processes_sharing_the_file_extend_one_chain(store, tmp_path):
    other = SQLiteStore(store.db.path)
    try:
        a, b = ChainRecorder(store), ChainRecorder(other)
        for i in range(20):
            await (a if i % 3 else b).record([decision(tenant="acme")])
        result = await verify_chain(store, "acme")
        assert result.ok and result.events_checked == 20
    finally:
        await other.close()


async def test_admin_events_share_the_tenant_chain(store):
    await record_all(store, [decision(tenant="acme")])
    tenant, seq, _ = await append_admin_event(
        store, "acme", "alice@ops", "policy.promote", "policy v2", {"version": 2}, time_ms=42
    )
    assert (tenant, seq) == ("acme", 2)
    (record,) = [r async for r in store.iter_events("acme", after_seq=1)]
    event = json.loads(record.event)
    assert event["tessera"]["decision"] == "admin" and event["tessera"]["actor"] == "alice@ops"
    assert event["actor"]["user"]["type"] == "Admin"
    assert admin_event("acme", "bob", "token.revoke", "jti:1", time_ms=1)["activity_name"] == "Other"
    assert admin_event("acme", "bob", "tenant.create", "acme", time_ms=1)["activity_id"] == 1
    assert (await verify_chain(store, "acme")).ok


# -- tampering ---------------------------------------------------------------------------------------------


async def test_a_modified_event_is_detected_at_its_seq(store):
    await record_all(store, mixed_run())
    with raw(store) as conn:
        (text,) = conn.execute("SELECT event FROM audit_events WHERE tenant = 'acme' AND seq = 6").fetchone()
        forged = text.replace("not today", "all fine")
        assert forged != text
        conn.execute("UPDATE audit_events SET event = ? WHERE tenant = 'acme' AND seq = 6", (forged,))
    result = await verify_chain(store, "acme")
    assert not result.ok
    assert result.first_bad_seq == 6
    assert result.problem == "hash mismatch at seq 6 (event modified)"
    assert result.events_checked == 5
    assert (await verify_chain(store, "globex")).ok  # other chains are unaffected


async def test_a_modified_event_with_a_recomputed_hash_breaks_the_next_link(store):
    await record_all(store, mixed_run())
    with raw(store) as conn:
        text, prev = conn.execute(
            "SELECT event, prev_hash FROM audit_events WHERE tenant = 'acme' AND seq = 3"
        ).fetchone()
        forged = text.replace("not today", "all good")
        assert forged != text
        digest = hashlib.sha256(bytes.fromhex(prev) + forged.encode()).hexdigest()
        conn.execute(
            "UPDATE audit_events SET event = ?, hash = ? WHERE tenant = 'acme' AND seq = 3", (forged, digest)
        )
    result = await verify_chain(store, "acme")
    assert not result.ok and result.first_bad_seq == 4
    assert "seq 4 does not link to seq 3" in result.problem


async def test_a_deleted_event_is_detected_and_located(store):
    await record_all(store, mixed_run())
    with raw(store) as conn:
        conn.execute("DELETE FROM audit_events WHERE tenant = 'globex' AND seq = 9")
    result = await verify_chain(store, "globex")
    assert not result.ok and result.first_bad_seq == 9
    assert result.problem == "sequence gap after 8: seq 9 missing (event deleted)"


async def test_swapped_events_are_detected_as_reordered(store):
    await record_all(store, mixed_run())
    with raw(store) as conn:
        conn.execute("UPDATE audit_events SET seq = -1 WHERE tenant = 'acme' AND seq = 5")
        conn.execute("UPDATE audit_events SET seq = 5 WHERE tenant = 'acme' AND seq = 6")
        conn.execute("UPDATE audit_events SET seq = 6 WHERE tenant = 'acme' AND seq = -1")
    result = await verify_chain(store, "acme")
    assert not result.ok and result.first_bad_seq == 5
    assert result.problem == "seq 5 does not follow seq 4; the event that does is at seq 6 (reordered)"


async def test_an_event_moved_to_another_tenant_is_detected(store):
    await record_all(store, mixed_run())
    with raw(store) as conn:  # copy globex's first event over acme's first, hash and all
        row = conn.execute(
            "SELECT event, prev_hash, hash FROM audit_events WHERE tenant = 'globex' AND seq = 1"
        ).fetchone()
        conn.execute(
            "UPDATE audit_events SET event = ?, prev_hash = ?, hash = ? WHERE tenant = 'acme' AND seq = 1",
            row,
        )
    result = await verify_chain(store, "acme")
    assert not result.ok and result.first_bad_seq == 1 and "moved between chains" in result.problem


async def test_an_edited_index_column_is_detected(store):
    await record_all(store, mixed_run())
    with raw(store) as conn:  # hide a denial from filtered exports
        conn.execute("UPDATE audit_events SET decision = 'allow' WHERE tenant = 'acme' AND seq = 2")
    result = await verify_chain(store, "acme")
    assert not result.ok and result.first_bad_seq == 2 and "index columns" in result.problem


async def test_truncation_is_detected_by_the_head(store):
    await record_all(store, mixed_run())
    with raw(store) as conn:
        conn.execute("DELETE FROM audit_events WHERE tenant = 'acme' AND seq > 12")
    result = await verify_chain(store, "acme")
    assert not result.ok and result.first_bad_seq == 13
    assert result.problem.startswith("head says seq 15/hash ")
    assert result.problem.endswith("but chain ends at 12 (truncated)")


async def test_a_deleted_head_row_is_detected(store):
    await record_all(store, mixed_run())
    with raw(store) as conn:
        conn.execute("DELETE FROM audit_heads WHERE tenant = 'acme'")
    result = await verify_chain(store, "acme")
    assert not result.ok and "head deleted" in result.problem


# -- checkpoints -------------------------------------------------------------------------------------------


async def test_truncation_after_a_checkpoint_needs_the_exported_checkpoint(store):
    decisions = mixed_run()
    await record_all(store, decisions[:20])
    checkpoint = await create_checkpoint(store, "acme", SEED)
    exported = checkpoint.export()
    assert checkpoint.seq == 10
    await record_all(store, [decision(tenant="acme") for _ in range(5)])
    pub = checkpoint_public_key(SEED)
    assert (await verify_chain(store, "acme", checkpoint=exported, public_key=pub)).ok

    # Someone with database access deletes everything from seq 9 on, rewrites the head to match and
    # removes the stored checkpoints.
    with raw(store) as conn:
        conn.execute("DELETE FROM audit_events WHERE tenant = 'acme' AND seq >= 9")
        (h,) = conn.execute("SELECT hash FROM audit_events WHERE tenant = 'acme' AND seq = 8").fetchone()
        conn.execute("UPDATE audit_heads SET seq = 8, hash = ? WHERE tenant = 'acme'", (h,))
        conn.execute("DELETE FROM audit_checkpoints")
    assert (await verify_chain(store, "acme")).ok  # internally consistent now...
    result = await verify_chain(store, "acme", checkpoint=exported, public_key=pub)
    assert not result.ok  # ...but not against the checkpoint held elsewhere
    assert result.first_bad_seq == 9
    assert result.problem == "checkpoint seq 10 not found: chain ends at 8 (events deleted, head rewritten)"


async def test_stored_checkpoints_catch_a_careless_truncation(store):
    await record_all(store, mixed_run())
    await create_checkpoint(store, "globex", SEED)
    with raw(store) as conn:
        conn.execute("DELETE FROM audit_events WHERE tenant = 'globex' AND seq >= 14")
        (h,) = conn.execute("SELECT hash FROM audit_events WHERE tenant = 'globex' AND seq = 13").fetchone()
        conn.execute("UPDATE audit_heads SET seq = 13, hash = ? WHERE tenant = 'globex'", (h,))
    result = await verify_chain(store, "globex")
    assert not result.ok and "checkpoint seq 15 not found" in result.problem


async def test_a_rewritten_chain_does_not_match_the_checkpoint(store):
    await record_all(store, mixed_run())
    exported = (await create_checkpoint(store, "acme", SEED)).export()
    # Rewrite the whole chain consistently (new content, recomputed hashes and head).
    with raw(store) as conn:
        rows = conn.execute(
            "SELECT seq, event FROM audit_events WHERE tenant = 'acme' ORDER BY seq"
        ).fetchall()
        prev = GENESIS_HASH
        for seq, text in rows:
            text = text.replace("not today", "approved")
            digest = hashlib.sha256(bytes.fromhex(prev) + text.encode()).hexdigest()
            conn.execute(
                "UPDATE audit_events SET event = ?, prev_hash = ?, hash = ? "
                "WHERE tenant = 'acme' AND seq = ?",
                (text, prev, digest, seq),
            )
            prev = digest
        conn.execute("UPDATE audit_heads SET hash = ? WHERE tenant = 'acme'", (prev,))
        conn.execute("DELETE FROM audit_checkpoints")
    assert (await verify_chain(store, "acme")).ok
    result = await verify_chain(store, "acme", checkpoint=exported)
    assert not result.ok and result.first_bad_seq == 15 and "hash differs" in result.problem


async def test_a_forged_checkpoint_is_rejected(store):
    await record_all(store, mixed_run())
    good = await create_checkpoint(store, "acme", SEED)
    doc = json.loads(good.export())
    doc["seq"] = 3
    result = await verify_chain(store, "acme", checkpoint=doc, stored_checkpoints=False)
    assert not result.ok and "signature invalid" in result.problem
    # Signed with someone else's key: only caught when the expected key is pinned.
    other = sign_checkpoint("acme", good.seq, good.hash, OTHER_SEED)
    assert (await verify_chain(store, "acme", checkpoint=other.export(), stored_checkpoints=False)).ok
    pinned = await verify_chain(
        store,
        "acme",
        checkpoint=other.export(),
        public_key=checkpoint_public_key(SEED),
        stored_checkpoints=False,
    )
    assert not pinned.ok and "wrong key" in pinned.problem


async def test_checkpoint_export_roundtrip_and_determinism(store):
    await record_all(store, mixed_run())
    cp = await create_checkpoint(store, "acme", SEED)
    again = Checkpoint.from_export(cp.export())
    assert again == cp and again.signature_valid(checkpoint_public_key(SEED))
    doc = json.loads(cp.export())
    assert set(doc) == {"type", "v", "tenant", "seq", "hash", "created_at", "alg", "public_key", "signature"}
    assert doc["alg"] == "Ed25519" and "=" not in doc["public_key"]
    assert [c.seq for c in await store.list_checkpoints("acme")] == [15]
    with pytest.raises(InvalidArgument):
        Checkpoint.from_export('{"type": "something else"}')
    with pytest.raises(InvalidArgument):
        await verify_chain(store, "globex", checkpoint=cp)


async def test_no_checkpoint_over_a_broken_or_empty_chain(store):
    with pytest.raises(FailedPrecondition):
        await create_checkpoint(store, "nobody", SEED)
    await record_all(store, mixed_run())
    with raw(store) as conn:
        conn.execute("DELETE FROM audit_events WHERE tenant = 'acme' AND seq = 3")
    with pytest.raises(FailedPrecondition, match="sequence gap"):
        await create_checkpoint(store, "acme", SEED)
    with pytest.raises(InvalidArgument):
        await create_checkpoint(store, "globex", b"short")


# -- argument values never stored --------------------------------------------------------------------------


async def test_argument_values_never_reach_the_database(store, tmp_path):
    secret = "IBAN-DE44-5001-0517-5407-3249-31-sup3r-s3cret"
    arguments = {"iban": secret, "amount": 5000, "memo": {"note": secret}}
    # What the pipeline derives from the arguments: sorted keys and the SHA-256 of their JCS form.
    d = decision(
        Outcome.DENY,
        tool="transfer_funds",
        argument_keys=tuple(sorted(arguments)),
        arguments_sha256=hashlib.sha256(rfc8785.dumps(arguments)).hexdigest(),
        reason="argument amount = 5000 outside caveat amount <= 1000",
    )
    await record_all(store, [d, decision(tenant="acme", argument_keys=tuple(arguments))])
    await create_checkpoint(store, "acme", SEED)
    with open(tmp_path / "export.ndjson", "w") as out:
        await export_events(store, out)
    await store.close()
    needle = secret.encode()
    files = [p for p in tmp_path.iterdir() if p.is_file()]
    assert any(p.name.startswith("audit.db") for p in files)
    for path in files:
        data = path.read_bytes()
        assert needle not in data and needle[:12] not in data, path
    reopened = SQLiteStore(tmp_path / "audit.db")
    try:
        (record,) = [r async for r in reopened.iter_events("acme", after_seq=0, batch=1)][:1]
        tessera = json.loads(record.event)["tessera"]
        assert tessera["argument_keys"] == ["amount", "iban", "memo"]
        assert tessera["arguments_sha256"] == d.arguments_sha256
    finally:
        await reopened.close()


def test_fast_canonical_json_equals_rfc8785():
    import random

    from authz.audit import canonical_event

    rng = random.Random(8785)

    def text() -> str:
        chars = []
        for _ in range(rng.randint(0, 10)):
            pick = rng.random()
            code = (
                rng.randint(0, 0x7F)
                if pick < 0.4
                else rng.randint(0x80, 0xFFFF)
                if pick < 0.7
                else rng.randint(0x10000, 0x10FFFF)
            )
            chars.append(chr(0x41 if 0xD800 <= code <= 0xDFFF else code))
        return "".join(chars)

    specials = [
        "\u2028",
        "\x7f",
        "\x00",
        "\x1f",
        '"',
        "\\",
        "/",
        "\ufeff",
        "\ue000",
        "\U0001f600",
        "\b\f\n\r\t",
    ]
    for _ in range(3000):
        obj = {"".join(rng.choice("abcXYZ_09") for _ in range(rng.randint(0, 4))): text() for _ in range(4)}
        obj["s"] = rng.choice(specials) + text()
        obj["n"] = rng.randint(-(2**53) + 1, 2**53 - 1)
        obj["l"] = [text(), True, None, False, {"z": text(), "a": [text(), -1]}]
        assert canonical_event(obj) == rfc8785.dumps(obj), obj
    # Outside the fast path the rfc8785 encoder decides.
    for odd in ({"f": 1.5e21}, {"é": 1, "e": 2}, {"\U0001f600": 1, "\ue000": 2}, {"t": (1, 2)}):
        assert canonical_event(odd) == rfc8785.dumps(odd)
    real = event_from_decision(decision(Outcome.DENY, reason="ünïcode \u2028 \x01"), time_ms=1)
    assert canonical_event(real) == rfc8785.dumps(real)
