"""The store conformance suite (ARCHITECTURE §10): every backend must pass every test here.

Each test runs once per backend (``backend`` fixture: SQLite on a temp file, PostgreSQL on a fresh
database). Concurrency tests spread their calls over two store objects on the same database, the way two
replicas (or two processes sharing a SQLite file) would.
"""

from __future__ import annotations

import asyncio
import hashlib
import itertools
import random
from typing import Any

import pytest

from authz.audit import GENESIS_HASH, admin_event, canonical_event, verify_chain
from authz.errors import AlreadyExists, FailedPrecondition, InvalidArgument, NotFound, StorageError
from authz.storage import (
    Approval,
    ApprovalClaim,
    PolicyVersion,
    Reservation,
    ReserveResult,
    Revocation,
    Store,
    StoreVersions,
    TenantSettings,
)
from authz.storage.protocols import AuditCheckpoint

from .conftest import Backend

NOW = 1_700_000_000.0


def approval(
    approval_id: str = "ap-1",
    *,
    tenant: str = "acme",
    quorum: int = 1,
    status: str = "pending",
    created_at: float = NOW,
    expires_at: float = NOW + 900,
) -> Approval:
    return Approval(
        approval_id=approval_id,
        tenant=tenant,
        agent="agent-1",
        tool="transfer_funds",
        arguments_sha256="ab" * 32,
        reason="over 1000",
        status=status,
        quorum=quorum,
        created_at=created_at,
        expires_at=expires_at,
        decision_id=f"dec-{approval_id}",
    )


def rev(
    value: str, *, tenant: str = "acme", kind: str = "jti", at: float = NOW, reason: str = "leak"
) -> Revocation:
    return Revocation(tenant=tenant, kind=kind, value=value, reason=reason, revoked_at=at, revoked_by="op-1")


async def spread(stores: list[Store], n: int, call):
    """Run ``call(store, i)`` n times at once, alternating between ``stores``; return the outcomes
    (results or exceptions), in order."""
    return await asyncio.gather(*(call(stores[i % len(stores)], i) for i in range(n)), return_exceptions=True)


# -- tenants -------------------------------------------------------------------------------------------
async def test_tenant_settings_round_trip_and_replace(store: Store):
    assert await store.get_tenant("acme") is None
    assert await store.list_tenants() == {}
    settings = TenantSettings(
        intent_mode="enforce",
        require_prompt=True,
        provenance_required_tools=("transfer_funds",),
        catalog={"search": {"description": "web search", "verbs": ["find"], "keywords": ["web", "look up"]}},
        tool_costs={"search": 0.5, "transfer_funds": 10.0},
        budget_rules=({"scope": "tenant", "window": "minute", "max_calls": 100},),
    )
    await store.put_tenant("acme", settings)
    await store.put_tenant("globex", TenantSettings())
    assert await store.get_tenant("acme") == settings
    assert await store.get_tenant("globex") == TenantSettings()

    # the intent settings the admin API manages round-trip too (stored in the settings document)
    intent = TenantSettings(
        intent_mode="enforce",
        intent_undetermined="policy",
        tools_url="https://tools.example.com/mcp",
        upstream_tools=({"name": "read_invoice", "description": "Read one invoice."},),
        intent_refresh_s=120.0,
    )
    await store.put_tenant("acme", intent)
    assert await store.get_tenant("acme") == intent

    # catalogs per MCP tool server (a server's catalog, tools URL and fetched list) round-trip too
    servers = TenantSettings(
        intent_mode="enforce",
        server_catalogs={
            "billing": {
                "catalog": {"tools": {"pay_bill": {"verbs": ["pay"], "keywords": ["bill"]}}},
                "tools_url": "https://billing.example.com/mcp",
                "upstream_tools": [{"name": "pay_bill", "description": "Pay a bill."}],
            },
            "hr": {"catalog": {}},
        },
    )
    await store.put_tenant("acme", servers)
    assert await store.get_tenant("acme") == servers
    assert (await store.list_tenants())["acme"] == servers

    replaced = TenantSettings(intent_mode="advisory")
    await store.put_tenant("acme", replaced)
    assert await store.get_tenant("acme") == replaced
    tenants = await store.list_tenants()
    assert list(tenants) == ["acme", "globex"]
    assert tenants["acme"] == replaced


# -- policies ------------------------------------------------------------------------------------------
async def test_promote_makes_consecutive_active_versions(store: Store):
    v1 = await store.promote_policy("acme", "package tessera\n", "h1", "alice")
    assert (v1.tenant, v1.version, v1.source, v1.content_hash, v1.created_by, v1.active) == (
        "acme", 1, "package tessera\n", "h1", "alice", True,
    )  # fmt: skip
    v2 = await store.promote_policy("acme", "package tessera # 2\n", "h2", "bob")
    assert v2.version == 2 and v2.active
    other = await store.promote_policy("globex", "package tessera\n", "g1", "carol")
    assert other.version == 1  # versions count per tenant

    active = await store.active_policies()
    assert active == {"acme": v2, "globex": other}
    history = await store.policy_history("acme")
    assert [(p.version, p.active) for p in history] == [(2, True), (1, False)]
    assert history[1] == PolicyVersion("acme", 1, v1.source, "h1", v1.created_at, "alice", False)
    assert await store.policy_history("nobody") == []


async def test_activate_rolls_back_and_promote_continues_numbering(store: Store):
    v1 = await store.promote_policy("acme", "one", "h1", "alice")
    await store.promote_policy("acme", "two", "h2", "alice")
    rolled = await store.activate_policy("acme", 1, "bob")
    assert rolled == PolicyVersion("acme", 1, "one", "h1", v1.created_at, "alice", True)
    assert (await store.active_policies())["acme"].version == 1
    assert [(p.version, p.active) for p in await store.policy_history("acme")] == [(2, False), (1, True)]

    again = await store.activate_policy("acme", 1, "bob")  # re-activating the live version is harmless
    assert again.version == 1
    v3 = await store.promote_policy("acme", "three", "h3", "alice")
    assert v3.version == 3
    assert [(p.version, p.active) for p in await store.policy_history("acme")] == [
        (3, True), (2, False), (1, False),
    ]  # fmt: skip


async def test_activate_unknown_version_is_not_found(store: Store):
    await store.promote_policy("acme", "one", "h1", "alice")
    with pytest.raises(NotFound):
        await store.activate_policy("acme", 7, "bob")
    with pytest.raises(NotFound):
        await store.activate_policy("globex", 1, "bob")
    assert (await store.active_policies())["acme"].version == 1  # nothing changed


async def test_concurrent_promotes_get_distinct_versions(backend: Backend):
    stores = [await backend.open(), await backend.open()]
    n = 20
    results = await spread(stores, n, lambda s, i: s.promote_policy("acme", f"src {i}", f"h{i}", f"op{i}"))
    assert not [r for r in results if isinstance(r, BaseException)], results
    assert sorted(r.version for r in results) == list(range(1, n + 1))
    history = await stores[0].policy_history("acme")
    assert [p.version for p in history] == list(range(n, 0, -1))
    assert [p.version for p in history if p.active] == [n]  # exactly one live version: the last promoted
    by_version = {r.version: r.content_hash for r in results}
    assert {p.version: p.content_hash for p in history} == by_version


# -- revocations ---------------------------------------------------------------------------------------
async def test_revocation_lookups(store: Store):
    await store.revoke(rev("jti-1"))
    await store.revoke(rev("tok-9", kind="token_id", at=NOW + 1))
    assert await store.is_revoked("acme", "jti-1", [])
    assert await store.is_revoked("acme", "jti-2", ["tok-1", "tok-9"])  # an ancestor token id
    assert not await store.is_revoked("acme", "jti-2", ["tok-1", "tok-2"])
    assert not await store.is_revoked("acme", "jti-2", [])
    assert not await store.is_revoked("acme", "tok-9", [])  # a token id is not a jti
    assert not await store.is_revoked("acme", "jti-2", ["jti-1"])  # nor the other way round
    assert not await store.is_revoked("globex", "jti-1", ["tok-9"])  # tenants are isolated


async def test_revoke_is_idempotent_and_keeps_the_first_record(store: Store):
    before = await store.versions()
    first = rev("jti-1", reason="first")
    await store.revoke(first)
    await store.revoke(rev("jti-1", reason="second", at=NOW + 5))
    assert await store.list_revocations() == [first]
    after = await store.versions()
    assert after.revocations == before.revocations + 1  # only a real change moves the counter


async def test_revoke_rejects_unknown_kind(store: Store):
    with pytest.raises(FailedPrecondition):
        await store.revoke(rev("x", kind="agent"))
    assert await store.list_revocations() == []


async def test_list_revocations_filters_and_orders(store: Store):
    a2 = rev("j2", at=NOW + 2)
    b1 = rev("j1", tenant="globex", at=NOW + 1)
    a3 = rev("t3", kind="token_id", at=NOW + 3)
    for r in (a3, b1, a2):
        await store.revoke(r)
    assert await store.list_revocations() == [b1, a2, a3]
    assert await store.list_revocations("acme") == [a2, a3]
    assert await store.list_revocations("nobody") == []


# -- budgets -------------------------------------------------------------------------------------------
async def test_reserve_charges_until_the_limit(store: Store):
    r = Reservation("token:abc:max_calls", 0, 1, 3, "token:max_calls")
    assert await store.usage(r.key, 0) == 0.0
    for _ in range(3):
        assert (await store.reserve([r])).ok
    result = await store.reserve([r])
    assert result == ReserveResult(ok=False, exhausted=r, used=3.0)
    assert await store.usage(r.key, 0) == 3.0
    # Another window of the same key is another counter.
    assert (await store.reserve([Reservation(r.key, 60, 1, 3, "tenant:minute")])).ok
    assert await store.usage(r.key, 60) == 1.0
    assert await store.usage(r.key, 0) == 3.0


async def test_reserve_fractional_amounts_and_edges(store: Store):
    cost = Reservation("token:abc:max_cost", 0, 2.5, 5.0, "token:max_cost")
    assert (await store.reserve([cost])).ok
    assert (await store.reserve([cost])).ok  # exactly reaching the limit is allowed
    assert not (await store.reserve([Reservation(cost.key, 0, 0.5, 5.0, cost.scope)])).ok
    assert await store.usage(cost.key, 0) == 5.0

    too_big = Reservation("fresh", 0, 11, 10, "s")  # more than the limit on a counter never charged
    assert await store.reserve([too_big]) == ReserveResult(ok=False, exhausted=too_big, used=0.0)
    assert await store.usage("fresh", 0) == 0.0
    assert await store.reserve([]) == ReserveResult(ok=True)


async def test_multi_counter_reservation_rolls_back_entirely(store: Store):
    token = Reservation("token:t1", 0, 1, 10, "token:max_calls")
    tenant = Reservation("tenant:acme:minute", 60, 1, 2, "tenant:minute")
    agent = Reservation("agent:acme:a1:day", 86400, 4, 100, "agent:day")
    for _ in range(2):
        assert (await store.reserve([token, tenant, agent])).ok
    result = await store.reserve([token, tenant, agent])
    assert result == ReserveResult(ok=False, exhausted=tenant, used=2.0)
    # The call was refused as a whole: the counters charged before and after the full one are untouched.
    assert await store.usage(token.key, 0) == 2.0
    assert await store.usage(tenant.key, 60) == 2.0
    assert await store.usage(agent.key, 86400) == 8.0


async def test_reserve_reports_the_first_exhausted_counter_in_call_order(store: Store):
    full_a = Reservation("zz-a", 0, 1, 1, "a")
    full_b = Reservation("aa-b", 0, 1, 1, "b")
    assert (await store.reserve([full_a])).ok
    assert (await store.reserve([full_b])).ok
    fine = Reservation("mm-c", 0, 1, 5, "c")
    assert await store.reserve([fine, full_a, full_b]) == ReserveResult(ok=False, exhausted=full_a, used=1.0)
    assert await store.reserve([full_b, fine, full_a]) == ReserveResult(ok=False, exhausted=full_b, used=1.0)
    assert await store.usage("mm-c", 0) == 0.0


async def test_reserve_counts_a_repeated_counter_cumulatively(store: Store):
    twice = Reservation("k", 0, 2, 3, "s")
    result = await store.reserve([twice, twice])
    assert result == ReserveResult(ok=False, exhausted=twice, used=2.0)  # the second charge saw the first
    assert await store.usage("k", 0) == 0.0
    assert (await store.reserve([Reservation("k", 0, 1, 3, "s"), twice])).ok
    assert await store.usage("k", 0) == 3.0


async def test_concurrent_reservations_allow_exactly_the_limit(backend: Backend):
    stores = [await backend.open(), await backend.open()]
    limit = 17
    r = Reservation("token:hot:max_calls", 0, 1, limit, "token:max_calls")
    results = await spread(stores, 50, lambda s, i: s.reserve([r]))
    assert not [x for x in results if isinstance(x, BaseException)], results
    assert sum(1 for x in results if x.ok) == limit
    assert all(x.exhausted == r and x.used == limit for x in results if not x.ok)
    assert await stores[0].usage(r.key, 0) == limit
    assert await stores[1].usage(r.key, 0) == limit


async def test_concurrent_multi_counter_reservations_stay_exact(backend: Backend):
    """Calls charging shared counters in different orders neither deadlock nor over-spend."""
    stores = [await backend.open(), await backend.open()]
    a = Reservation("counter-a", 0, 1, 10, "a")
    b = Reservation("counter-b", 0, 1, 1000, "b")
    rng = random.Random(7)
    orders = [[a, b] if rng.random() < 0.5 else [b, a] for _ in range(40)]
    results = await spread(stores, 40, lambda s, i: s.reserve(orders[i]))
    assert not [x for x in results if isinstance(x, BaseException)], results
    assert sum(1 for x in results if x.ok) == 10
    assert all(x.exhausted == a for x in results if not x.ok)
    assert await stores[0].usage("counter-a", 0) == 10
    assert await stores[0].usage("counter-b", 0) == 10  # refused calls charged b nothing


# -- approvals -----------------------------------------------------------------------------------------
async def test_create_get_and_list_approvals(store: Store):
    first = approval("ap-1", created_at=NOW)
    second = approval("ap-2", created_at=NOW + 1, quorum=2)
    other = approval("ap-3", tenant="globex", created_at=NOW + 2)
    for a in (first, second, other):
        await store.create_approval(a)
    assert await store.get_approval("acme", "ap-1") == first
    assert await store.get_approval("globex", "ap-1") is None  # tenant-scoped
    assert await store.get_approval("acme", "missing") is None
    assert await store.list_approvals() == [other, second, first]  # newest first
    assert await store.list_approvals("acme") == [second, first]
    assert await store.list_approvals(status="pending") == [other, second, first]
    assert await store.list_approvals("acme", "approved") == []

    await store.record_approval_decision("acme", "ap-1", "op-1", "approve", "ok", NOW + 10)
    assert [a.approval_id for a in await store.list_approvals("acme", "approved")] == ["ap-1"]
    assert [a.approval_id for a in await store.list_approvals(status="pending")] == ["ap-3", "ap-2"]


async def test_create_approval_twice_already_exists(store: Store):
    await store.create_approval(approval("ap-1"))
    with pytest.raises(AlreadyExists):
        await store.create_approval(approval("ap-1", quorum=3))
    assert (await store.get_approval("acme", "ap-1")).quorum == 1


async def test_quorum_needs_distinct_operators(store: Store):
    await store.create_approval(approval("ap-1", quorum=2))
    after_one = await store.record_approval_decision("acme", "ap-1", "alice", "approve", "fine", NOW + 1)
    assert after_one.status == "pending"
    assert after_one.decisions == (
        {"operator": "alice", "verdict": "approve", "note": "fine", "at": NOW + 1},
    )
    with pytest.raises(FailedPrecondition):
        await store.record_approval_decision("acme", "ap-1", "alice", "approve", "again", NOW + 2)
    assert (await store.get_approval("acme", "ap-1")) == after_one

    approved = await store.record_approval_decision("acme", "ap-1", "bob", "approve", "", NOW + 3)
    assert approved.status == "approved"
    assert [d["operator"] for d in approved.decisions] == ["alice", "bob"]
    assert await store.get_approval("acme", "ap-1") == approved
    with pytest.raises(FailedPrecondition):  # decided: no more verdicts
        await store.record_approval_decision("acme", "ap-1", "carol", "reject", "", NOW + 4)


async def test_a_reject_decides(store: Store):
    await store.create_approval(approval("ap-1", quorum=3))
    await store.record_approval_decision("acme", "ap-1", "alice", "approve", "", NOW + 1)
    rejected = await store.record_approval_decision("acme", "ap-1", "bob", "reject", "no", NOW + 2)
    assert rejected.status == "rejected"
    assert await store.get_approval("acme", "ap-1") == rejected
    assert not await store.consume_approval("acme", "ap-1", NOW + 3)


async def test_decision_errors(store: Store):
    await store.create_approval(approval("ap-1", expires_at=NOW + 60))
    with pytest.raises(NotFound):
        await store.record_approval_decision("acme", "missing", "alice", "approve", "", NOW)
    with pytest.raises(NotFound):
        await store.record_approval_decision("globex", "ap-1", "alice", "approve", "", NOW)
    with pytest.raises(FailedPrecondition):
        await store.record_approval_decision("acme", "ap-1", "alice", "maybe", "", NOW)
    with pytest.raises(FailedPrecondition):  # expired
        await store.record_approval_decision("acme", "ap-1", "alice", "approve", "", NOW + 60)
    assert (await store.get_approval("acme", "ap-1")).decisions == ()


async def test_consume_approval(store: Store):
    await store.create_approval(approval("ap-1", expires_at=NOW + 60))
    assert not await store.consume_approval("acme", "ap-1", NOW + 1)  # still pending
    await store.record_approval_decision("acme", "ap-1", "alice", "approve", "", NOW + 1)
    assert not await store.consume_approval("globex", "ap-1", NOW + 2)  # another tenant's id
    assert await store.consume_approval("acme", "ap-1", NOW + 2)
    assert not await store.consume_approval("acme", "ap-1", NOW + 3)  # exactly once
    assert (await store.get_approval("acme", "ap-1")).status == "consumed"
    assert not await store.consume_approval("acme", "missing", NOW)


async def test_expired_approval_is_not_consumable(store: Store):
    await store.create_approval(approval("ap-1", expires_at=NOW + 60))
    await store.record_approval_decision("acme", "ap-1", "alice", "approve", "", NOW + 1)
    assert not await store.consume_approval("acme", "ap-1", NOW + 60)
    assert not await store.consume_approval("acme", "ap-1", NOW + 3600)
    got = await store.get_approval("acme", "ap-1")
    assert got.status == "approved" and got.effective_status(NOW + 60) == "expired"


async def test_concurrent_consume_succeeds_exactly_once(backend: Backend):
    stores = [await backend.open(), await backend.open()]
    await stores[0].create_approval(approval("ap-1"))
    await stores[1].record_approval_decision("acme", "ap-1", "alice", "approve", "", NOW + 1)
    results = await spread(stores, 20, lambda s, i: s.consume_approval("acme", "ap-1", NOW + 2))
    assert results.count(True) == 1 and results.count(False) == 19, results


async def test_reserve_consumes_an_approval_in_the_same_transaction(store: Store):
    await store.create_approval(approval("ap-1"))
    await store.record_approval_decision("acme", "ap-1", "alice", "approve", "", NOW + 1)
    counter = Reservation("token:ap:max_calls", 0, 1, 1, "token:max_calls")
    claim = ApprovalClaim("acme", "ap-1", NOW + 2)
    assert (await store.reserve([counter], consume=claim)).ok
    assert (await store.get_approval("acme", "ap-1")).status == "consumed"
    again = await store.reserve([Reservation("token:other", 0, 1, 5, "token:max_calls")], consume=claim)
    assert not again.ok and again.approval_unavailable
    assert await store.usage("token:other", 0) == 0  # nothing charged without the approval
    assert (await store.reserve([], consume=ApprovalClaim("acme", "missing", NOW))).approval_unavailable


async def test_an_exhausted_budget_leaves_the_approval_approved(store: Store):
    await store.create_approval(approval("ap-1"))
    await store.record_approval_decision("acme", "ap-1", "alice", "approve", "", NOW + 1)
    full = Reservation("token:full", 0, 1, 0, "token:max_calls")
    result = await store.reserve([full], consume=ApprovalClaim("acme", "ap-1", NOW + 2))
    assert not result.ok and result.exhausted == full and not result.approval_unavailable
    assert (await store.get_approval("acme", "ap-1")).status == "approved"


async def test_concurrent_resumes_consume_once_and_charge_once(backend: Backend):
    stores = [await backend.open(), await backend.open()]
    await stores[0].create_approval(approval("ap-1"))
    await stores[1].record_approval_decision("acme", "ap-1", "alice", "approve", "", NOW + 1)
    counter = Reservation("token:resume", 0, 1, 100, "token:max_calls")
    results = await spread(
        stores, 12, lambda s, i: s.reserve([counter], consume=ApprovalClaim("acme", "ap-1", NOW + 2))
    )
    assert sum(r.ok for r in results) == 1
    assert await stores[0].usage("token:resume", 0) == 1


async def test_concurrent_decisions_respect_the_quorum(backend: Backend):
    stores = [await backend.open(), await backend.open()]
    await stores[0].create_approval(approval("ap-1", quorum=3))
    operators = [f"op-{i}" for i in range(6)]
    results = await spread(
        stores,
        6,
        lambda s, i: s.record_approval_decision("acme", "ap-1", operators[i], "approve", "", NOW + 1),
    )
    accepted = [r for r in results if isinstance(r, Approval)]
    refused = [r for r in results if isinstance(r, FailedPrecondition)]
    assert len(accepted) == 3 and len(refused) == 3, results
    final = await stores[0].get_approval("acme", "ap-1")
    assert final.status == "approved"
    assert len(final.decisions) == 3
    assert len({d["operator"] for d in final.decisions}) == 3


async def test_concurrent_decisions_by_one_operator_count_once(backend: Backend):
    stores = [await backend.open(), await backend.open()]
    await stores[0].create_approval(approval("ap-1", quorum=2))
    results = await spread(
        stores,
        10,
        lambda s, i: s.record_approval_decision("acme", "ap-1", "alice", "approve", str(i), NOW + 1),
    )
    assert sum(isinstance(r, Approval) for r in results) == 1, results
    assert sum(isinstance(r, FailedPrecondition) for r in results) == 9, results
    final = await stores[1].get_approval("acme", "ap-1")
    assert final.status == "pending" and len(final.decisions) == 1


# -- change counters -----------------------------------------------------------------------------------
async def test_versions_move_with_each_kind_of_change(backend: Backend):
    store, replica = await backend.open(), await backend.open()
    assert await store.versions() == StoreVersions(0, 0, 0)
    await store.put_tenant("acme", TenantSettings())
    assert await replica.versions() == StoreVersions(0, 0, 1)
    await store.promote_policy("acme", "one", "h1", "alice")
    await store.activate_policy("acme", 1, "alice")
    assert await replica.versions() == StoreVersions(2, 0, 1)
    await store.revoke(rev("jti-1"))
    assert await replica.versions() == StoreVersions(2, 1, 1)
    # Budgets and approvals are not cached by replicas: they do not move the counters.
    await store.reserve([Reservation("k", 0, 1, 5, "s")])
    await store.create_approval(approval("ap-1"))
    await store.record_approval_decision("acme", "ap-1", "alice", "approve", "", NOW)
    await store.consume_approval("acme", "ap-1", NOW)
    # Failed changes do not either.
    with pytest.raises(NotFound):
        await store.activate_policy("acme", 9, "alice")
    assert await replica.versions() == StoreVersions(2, 1, 1)


# -- lifecycle -----------------------------------------------------------------------------------------
async def test_calls_after_close_raise_storage_error(backend: Backend):
    store = await backend.open()
    await store.put_tenant("acme", TenantSettings())
    await store.close()
    with pytest.raises(StorageError):
        await store.get_tenant("acme")
    with pytest.raises(StorageError):
        await store.put_tenant("acme", TenantSettings())
    await store.close()  # idempotent


async def test_store_satisfies_the_protocol(store: Store):
    assert isinstance(store, Store)


# -- audit chains --------------------------------------------------------------------------------------
def audit_event(
    tenant: str, n: int, *, time_ms: int | None = None, agent: str | None = None, decision: str = "admin"
) -> dict[str, Any]:
    event = admin_event(
        tenant, "alice", "policy.promote", f"v{n}", {"n": n, "cost": n / 4}, time_ms=time_ms or n
    )
    event["tessera"]["decision"] = decision  # index columns come from here (authz.audit.event_index)
    event["tessera"]["agent"] = agent
    return event


async def test_audit_append_links_each_tenant_chain(store: Store):
    assert await store.append_events([]) == []
    assert await store.audit_head("acme") is None
    events = [("acme", audit_event("acme", 1)), ("globex", audit_event("globex", 1, agent="ü-agent"))]
    events += [("acme", audit_event("acme", n)) for n in (2, 3)]
    written = await store.append_events(events)
    assert [(t, seq) for t, seq, _ in written] == [("acme", 1), ("globex", 1), ("acme", 2), ("acme", 3)]
    more = await store.append_events([("acme", audit_event("acme", 4))])
    assert [(t, seq) for t, seq, _ in more] == [("acme", 4)]

    assert await store.audit_tenants() == ["acme", "globex"]
    assert await store.audit_head("acme") == (4, more[0][2])
    records = [r async for r in store.iter_events("acme")]
    assert [r.seq for r in records] == [1, 2, 3, 4]
    assert records[0].prev_hash == GENESIS_HASH
    assert all(b.prev_hash == a.hash for a, b in itertools.pairwise(records))
    for record, (_, event) in zip(records, [events[0], events[2], events[3], ("acme", None)], strict=True):
        if event is not None:
            assert record.event == canonical_event(event).decode()  # the exact text that was hashed
        assert (
            record.hash == hashlib.sha256(bytes.fromhex(record.prev_hash) + record.event.encode()).hexdigest()
        )
    assert [r.hash for r in records[:3]] == [w[2] for w in written if w[0] == "acme"]
    (globex,) = [r async for r in store.iter_events("globex")]
    assert (globex.tenant, globex.seq, globex.agent, globex.decision, globex.time_ms) == (
        "globex", 1, "ü-agent", "admin", 1,
    )  # fmt: skip
    for tenant in ("acme", "globex"):
        result = await verify_chain(store, tenant)
        assert result.ok, result.summary()


async def test_audit_rejects_a_malformed_batch_entirely(store: Store):
    await store.append_events([("acme", audit_event("acme", 1))])
    with pytest.raises(InvalidArgument):
        await store.append_events([("acme", audit_event("acme", 2)), ("acme", {"no": "time"})])
    assert (await store.audit_head("acme"))[0] == 1
    assert [r.seq async for r in store.iter_events("acme")] == [1]


async def test_audit_iter_events_filters_and_pages(store: Store):
    events = [
        (
            "acme",
            audit_event(
                "acme", n, time_ms=100 * n, agent=f"agent-{n % 2}", decision=("allow", "deny")[n % 2]
            ),
        )
        for n in range(1, 11)
    ]
    await store.append_events(events)
    await store.append_events([("globex", audit_event("globex", 1, time_ms=500))])

    async def seqs(**kw: Any) -> list[int]:
        return [r.seq async for r in store.iter_events("acme", **kw)]

    assert await seqs(batch=3) == list(range(1, 11))
    assert await seqs(batch=1, after_seq=7) == [8, 9, 10]
    assert await seqs(batch=5) == list(range(1, 11))  # a last page exactly full
    assert await seqs(since_ms=300, until_ms=700, batch=2) == [3, 4, 5, 6]
    assert await seqs(since_ms=300, after_seq=5) == [6, 7, 8, 9, 10]
    assert await seqs(until_ms=101) == [1]
    assert await seqs(since_ms=5000) == []
    assert await seqs(until_ms=100) == []
    assert await seqs(agent="agent-1", batch=2) == [1, 3, 5, 7, 9]
    assert await seqs(decision="allow") == [2, 4, 6, 8, 10]
    assert await seqs(decision="allow", agent="agent-1") == []
    assert await seqs(decision="deny", since_ms=400, until_ms=900, batch=1) == [5, 7]
    assert [r.seq async for r in store.iter_events("nobody")] == []
    with pytest.raises(ValueError):
        [r async for r in store.iter_events("acme", batch=0)]


async def test_audit_checkpoints(store: Store):
    def checkpoint(tenant: str, seq: int, signature: str = "sig") -> AuditCheckpoint:
        return AuditCheckpoint(tenant, seq, f"{seq:064x}", "2026-01-01T00:00:00Z", "pk", signature)

    assert await store.list_checkpoints("acme") == []
    await store.put_checkpoint(checkpoint("acme", 20))
    await store.put_checkpoint(checkpoint("acme", 10))
    await store.put_checkpoint(checkpoint("globex", 10))
    await store.put_checkpoint(checkpoint("acme", 10, signature="other"))  # same seq: ignored
    assert await store.list_checkpoints("acme") == [checkpoint("acme", 10), checkpoint("acme", 20)]
    assert await store.list_checkpoints("globex") == [checkpoint("globex", 10)]


async def test_audit_concurrent_writers_keep_one_linear_chain(backend: Backend):
    stores = [await backend.open(), await backend.open()]
    rng = random.Random(11)
    batches = [
        [
            (t, audit_event(t, i * 10 + j))
            for j, t in enumerate(rng.choices(["acme", "globex", "initech"], k=3))
        ]
        for i in range(30)
    ]
    results = await spread(stores, len(batches), lambda s, i: s.append_events(batches[i]))
    assert not [r for r in results if isinstance(r, BaseException)], results
    for written in results:
        # One call's events are consecutive in each of its tenants' chains: no other writer in between.
        for _, group in itertools.groupby(sorted(written), key=lambda w: w[0]):
            seqs = [seq for _, seq, _ in group]
            assert seqs == list(range(seqs[0], seqs[0] + len(seqs)))
    per_tenant: dict[str, int] = {}
    for batch in batches:
        for tenant, _ in batch:
            per_tenant[tenant] = per_tenant.get(tenant, 0) + 1
    for tenant, count in per_tenant.items():
        written_seqs = sorted(seq for r in results for t, seq, _ in r if t == tenant)
        assert written_seqs == list(range(1, count + 1))
        result = await verify_chain(stores[1], tenant)
        assert result.ok and result.events_checked == count, result.summary()


async def test_quorum_counts_distinct_principals_not_keys(store: Store):
    """Two keys of one person are one approver (issue 13 §4): the second verdict of a principal is
    refused whichever key gives it, and only distinct principals reach the quorum."""
    await store.create_approval(approval("ap-1", quorum=2))
    first = await store.record_approval_decision(
        "acme", "ap-1", "ops-1 (key a1)", "approve", "", NOW + 1, principal="mallory@example.com"
    )
    assert first.status == "pending" and first.decisions[0]["principal"] == "mallory@example.com"
    with pytest.raises(FailedPrecondition, match=r"principal 'mallory@example\.com' has already decided"):
        await store.record_approval_decision(
            "acme", "ap-1", "ops-2 (key a2)", "approve", "", NOW + 2, principal="mallory@example.com"
        )
    assert await store.get_approval("acme", "ap-1") == first
    approved = await store.record_approval_decision(
        "acme", "ap-1", "bob (key b1)", "approve", "", NOW + 3, principal="bob@example.com"
    )
    assert approved.status == "approved"
    assert [d["principal"] for d in approved.decisions] == ["mallory@example.com", "bob@example.com"]
    assert await store.get_approval("acme", "ap-1") == approved
