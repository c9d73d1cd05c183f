"""The admin half of the store (``AdminStore``): admin keys, policy drafts, the approval-webhook outbox
and the admin read models. Every test runs on SQLite and PostgreSQL (``backend`` fixture)."""

from __future__ import annotations

import asyncio

import pytest

from authz.audit import admin_event
from authz.errors import AlreadyExists, FailedPrecondition, NotFound
from authz.storage import AdminKey, Approval, PolicyDraft, Reservation, Store

from .conftest import Backend

NOW = 1_700_000_000.0


def key(key_id: str, *, role: str = "admin", tenant: str | None = None, at: float = NOW) -> AdminKey:
    return AdminKey(key_id, f"name-{key_id}", role, tenant, "ab" * 32, at, "test")


def pending(
    approval_id: str, *, tenant: str = "acme", created_at: float = NOW, expires_at: float = NOW + 900
):
    return Approval(
        approval_id=approval_id,
        tenant=tenant,
        agent="agent-1",
        tool="transfer_funds",
        arguments_sha256="cd" * 32,
        reason="needs approval",
        status="pending",
        quorum=1,
        created_at=created_at,
        expires_at=expires_at,
        decision_id=f"dec-{approval_id}",
    )


# -- admin keys ----------------------------------------------------------------------------------------
async def test_admin_keys_round_trip_list_and_filter(store: Store):
    assert await store.list_admin_keys() == []
    assert await store.get_admin_key("k1") is None
    first, second = key("k1"), key("k2", role="viewer", tenant="acme", at=NOW + 1)
    await store.create_admin_key(first)
    await store.create_admin_key(second)
    assert await store.get_admin_key("k1") == first
    assert await store.list_admin_keys() == [first, second]
    assert await store.list_admin_keys("acme") == [second]
    assert await store.list_admin_keys("globex") == []
    with pytest.raises(AlreadyExists):
        await store.create_admin_key(key("k1", role="viewer"))


async def test_revoking_an_admin_key_is_idempotent_and_hides_it(store: Store):
    await store.create_admin_key(key("k1"))
    await store.create_admin_key(key("k2", role="operator", tenant="acme"))
    revoked = await store.revoke_admin_key("k2", "alice", NOW + 5)
    assert (revoked.revoked_at, revoked.revoked_by, revoked.active) == (NOW + 5, "alice", False)
    again = await store.revoke_admin_key("k2", "bob", NOW + 9)
    assert (again.revoked_at, again.revoked_by) == (NOW + 5, "alice")  # the first revocation stays
    assert [k.key_id for k in await store.list_admin_keys()] == ["k1"]
    assert [k.key_id for k in await store.list_admin_keys(include_revoked=True)] == ["k1", "k2"]
    assert (await store.get_admin_key("k2")) == revoked
    with pytest.raises(NotFound):
        await store.revoke_admin_key("nope", "alice", NOW)


async def test_the_last_all_tenants_admin_key_cannot_be_revoked(store: Store):
    await store.create_admin_key(key("root"))
    await store.create_admin_key(key("scoped", tenant="acme"))  # an admin, but of one tenant only
    with pytest.raises(FailedPrecondition):
        await store.revoke_admin_key("root", "root", NOW)
    await store.create_admin_key(key("root2"))
    await store.revoke_admin_key("root", "root2", NOW)
    with pytest.raises(FailedPrecondition):
        await store.revoke_admin_key("root2", "root2", NOW)


async def test_concurrent_revocations_never_remove_every_all_tenants_admin(backend: Backend):
    stores = [await backend.open(), await backend.open()]
    await stores[0].create_admin_key(key("a"))
    await stores[0].create_admin_key(key("b"))
    outcomes = await asyncio.gather(
        stores[0].revoke_admin_key("a", "x", NOW),
        stores[1].revoke_admin_key("b", "y", NOW),
        return_exceptions=True,
    )
    assert sum(isinstance(o, FailedPrecondition) for o in outcomes) == 1
    assert len(await stores[0].list_admin_keys()) == 1


async def test_bootstrap_creates_exactly_one_first_key(backend: Backend):
    stores = [await backend.open(), await backend.open()]
    results = await asyncio.gather(
        *(s.bootstrap_admin_key(key(f"boot{i}")) for i, s in enumerate(stores * 3))
    )
    assert sorted(results) == [False] * 5 + [True]
    assert len(await stores[0].list_admin_keys(include_revoked=True)) == 1
    assert await stores[1].bootstrap_admin_key(key("later")) is False


# -- policy drafts -------------------------------------------------------------------------------------
async def test_drafts_create_get_list_update_delete(store: Store):
    draft = PolicyDraft("acme", "tighten", "package tessera\n", "sha256:1", NOW, NOW, "alice")
    await store.create_draft(draft)
    await store.create_draft(PolicyDraft("acme", "alpha", "x", "sha256:2", NOW, NOW, "alice"))
    await store.create_draft(PolicyDraft("globex", "tighten", "y", "sha256:3", NOW, NOW, "bob"))
    assert await store.get_draft("acme", "tighten") == draft
    assert [d.name for d in await store.list_drafts("acme")] == ["alpha", "tighten"]
    with pytest.raises(AlreadyExists):
        await store.create_draft(draft)

    updated = await store.update_draft(
        "acme", "tighten", "package tessera # 2\n", "sha256:9", "carol", NOW + 7
    )
    assert updated == PolicyDraft(
        "acme", "tighten", "package tessera # 2\n", "sha256:9", NOW, NOW + 7, "carol"
    )
    assert await store.get_draft("acme", "tighten") == updated
    with pytest.raises(FailedPrecondition):  # compare-and-set on the content hash
        await store.update_draft(
            "acme", "tighten", "z", "sha256:z", "dave", NOW + 8, expected_hash="sha256:1"
        )
    ok = await store.update_draft(
        "acme", "tighten", "z", "sha256:z", "dave", NOW + 8, expected_hash="sha256:9"
    )
    assert ok.content_hash == "sha256:z"
    with pytest.raises(NotFound):
        await store.update_draft("acme", "nope", "z", "sha256:z", "dave", NOW)

    assert await store.delete_draft("acme", "tighten") is True
    assert await store.delete_draft("acme", "tighten") is False
    assert await store.get_draft("acme", "tighten") is None
    assert await store.get_draft("globex", "tighten") is not None


# -- approval webhook outbox ---------------------------------------------------------------------------
async def test_outbox_claims_due_pending_approvals_with_a_lease(store: Store):
    await store.create_approval(pending("a1", created_at=NOW))
    await store.create_approval(pending("a2", created_at=NOW + 1))
    await store.create_approval(pending("old", created_at=NOW - 1000, expires_at=NOW - 1))  # expired
    await store.create_approval(pending("other", tenant="globex"))
    await store.create_approval(pending("decided", created_at=NOW + 2))
    await store.record_approval_decision("acme", "decided", "op", "reject", "", NOW)

    claimed = await store.claim_approval_notifications(["acme"], NOW + 10, retry_s=5)
    assert [a.approval_id for a in claimed] == ["a1", "a2"]
    assert await store.claim_approval_notifications(["acme"], NOW + 12, retry_s=5) == []  # leased
    await store.mark_approval_notified("acme", "a1", NOW + 12)
    # after the lease (5 s), the undelivered one comes back; the delivered one never does
    again = await store.claim_approval_notifications(["acme"], NOW + 15, retry_s=5)
    assert [a.approval_id for a in again] == ["a2"]
    assert await store.claim_approval_notifications(["acme"], NOW + 24, retry_s=5) == []  # backoff: 10 s
    assert [
        a.approval_id for a in await store.claim_approval_notifications(["acme"], NOW + 26, retry_s=5)
    ] == ["a2"]
    assert [a.approval_id for a in await store.claim_approval_notifications(["globex"], NOW, retry_s=5)] == [
        "other"
    ]
    assert await store.claim_approval_notifications([], NOW, retry_s=5) == []


async def test_outbox_claims_from_two_replicas_are_disjoint(backend: Backend):
    stores = [await backend.open(), await backend.open()]
    for i in range(20):
        await stores[0].create_approval(pending(f"p{i:02d}", created_at=NOW + i))
    results = await asyncio.gather(
        *(s.claim_approval_notifications(["acme"], NOW + 100, retry_s=60, limit=7) for s in stores * 2)
    )
    ids = [a.approval_id for batch in results for a in batch]
    assert len(ids) == len(set(ids)) == 20


# -- read models ---------------------------------------------------------------------------------------
def decision_event(decision: str, time_ms: int, agent: str = "agent-1") -> dict:
    event = admin_event("acme", "x", "test.event", "t", {}, time_ms=time_ms)
    event["tessera"]["decision"] = decision
    event["tessera"]["agent"] = agent
    return event


async def test_decision_counts_and_latest_events(store: Store):
    base = 1_700_000_000_000
    events = [
        ("acme", decision_event(d, base + i * 1000))
        for i, d in enumerate(["allow", "deny", "allow", "escalate"])
    ]
    events.append(("acme", admin_event("acme", "alice", "policy.promote", "p", {}, time_ms=base + 5000)))
    events.append(("globex", decision_event("deny", base + 1000)))
    await store.append_events(events)

    counts = await store.decision_counts(["acme", "globex", "empty"], base + 1000)
    assert counts == {
        "acme": {"deny": 1, "allow": 1, "escalate": 1, "admin": 1},
        "globex": {"deny": 1},
        "empty": {},
    }

    latest = await store.latest_events("acme", 2, ("allow", "deny", "escalate"))
    assert [(r.seq, r.decision) for r in latest] == [(4, "escalate"), (3, "allow")]
    older = await store.latest_events("acme", 10, ("allow", "deny"), before_seq=3)
    assert [(r.seq, r.decision) for r in older] == [(2, "deny"), (1, "allow")]
    assert await store.latest_events("acme", 0, ("allow",)) == []


async def test_usage_counters_by_prefix(store: Store):
    for key_name, amount in (("acme/rule/agent/a1/hour/calls", 3), ("acme/rule/agent/a2/hour/calls", 1)):
        await store.reserve([Reservation(key_name, 3600, amount, 100, "agent:hour:max_calls")])
    await store.reserve([Reservation("acme/rule/agent/a1/hour/calls", 7200, 9, 100, "x")])  # another window
    await store.reserve([Reservation("acmex/rule/agent/a1/hour/calls", 3600, 1, 100, "x")])  # another tenant
    assert await store.usage_counters("acme/rule/agent/", 3600) == {
        "acme/rule/agent/a1/hour/calls": 3.0,
        "acme/rule/agent/a2/hour/calls": 1.0,
    }
    assert await store.usage_counters("acme/rule/tenant/", 3600) == {}


async def test_admin_keys_keep_their_principal(store: Store):
    owned = AdminKey(
        "k1", "alice-laptop", "operator", "acme", "ab" * 32, NOW, "root", principal="alice@example.com"
    )
    await store.create_admin_key(owned)
    assert (await store.get_admin_key("k1")).principal == "alice@example.com"
    assert [k.principal for k in await store.list_admin_keys("acme")] == ["alice@example.com"]
    await store.create_admin_key(key("k0"))  # an all-tenants admin, so k1 may be revoked
    revoked = await store.revoke_admin_key("k1", "root", NOW + 1)
    assert revoked.principal == "alice@example.com" and not revoked.active
