"""Bounded state: scheduled pruning of budget counters and approvals of expired windows, on both stores.

Pruning must return the tables to a bounded size however many distinct tokens were seen (1,000,000 rows
in the volume test, written in bulk the way reservations write them), and never delete a counter any
replica could still charge (a live window, a window inside the grace, a token counter without expiry).
"""

from __future__ import annotations

import asyncio
import time
from datetime import UTC, datetime, timedelta

import psycopg
import pytest

from authz.budget import parse_rules, rule_reservations, token_reservations
from authz.errors import StoreUnavailable
from authz.secrets import Secret
from authz.storage import Approval, Reservation, Store
from authz.storage.pruning import StatePruner
from authz.token import KeyRing, TokenAuthenticator, mint

from .conftest import Backend

NOW = 1_800_000_000.0
KEYRING = KeyRing(Secret("pruning-test-master-key-0123456789abcdef"))


@pytest.fixture
def maybe_pg_url(backend: Backend, request: pytest.FixtureRequest) -> str | None:
    return request.getfixturevalue("pg_url") if backend.name == "postgres" else None


async def rows(backend: Backend, store: Store, pg_url: str | None, table: str) -> int:
    if backend.name == "sqlite":
        return store.db.query(f"SELECT count(*) FROM {table}")[0][0]  # type: ignore[attr-defined]
    async with await psycopg.AsyncConnection.connect(pg_url, autocommit=True) as conn:
        cur = await conn.execute(f"SELECT count(*) FROM {table}")
        return (await cur.fetchone())[0]


def window(key: str, start: int, end: float | None) -> Reservation:
    return Reservation(key, start, 1.0, 10.0, "agent:hour:max_calls", resets_at=end, expires_at=end)


async def test_pruning_keeps_every_counter_that_can_still_be_charged(backend, store: Store, maybe_pg_url):
    live = window("live", 1, NOW + 10)  # the window is still open
    grace = window("grace", 2, NOW - 10)  # ended 10 s ago: a lagging replica may still charge it
    lifetime = window("lifetime", 0, None)  # a token counter without expiry
    ended = window("ended", 3, NOW - 3600)
    for r in (live, grace, lifetime, ended):
        assert (await store.reserve([r])).ok
    result = await store.prune_expired(NOW, grace_s=300)
    assert result.counters == 1
    assert await store.usage("ended", 3) == 0
    for r in (live, grace, lifetime):
        assert await store.usage(r.key, r.window_start) == 1.0
    # A live window keeps counting across a prune: its limit still holds.
    for _ in range(9):
        assert (await store.reserve([live])).ok
    assert not (await store.reserve([live])).ok
    assert await rows(backend, store, maybe_pg_url, "budget_counters") == 3


async def test_token_and_rule_counters_expire_with_their_token_and_window(store: Store):
    now = time.time()
    token = mint(
        KEYRING, tenant="demo", agent="a", expires=datetime.now(UTC) + timedelta(hours=1), max_calls=3
    )
    counters = TokenAuthenticator(KEYRING).authenticate(token).budget_counters
    rules = parse_rules([{"scope": "agent", "window": "minute", "max_calls": 5}])
    reservations = token_reservations("demo", counters, 1.0) + rule_reservations("demo", "a", rules, 1.0, now)
    assert (await store.reserve(reservations)).ok
    token_key, rule = reservations[0], reservations[1]
    assert token_key.expires_at == pytest.approx(now + 3600, abs=2)
    await store.prune_expired(now + 1800, grace_s=60)  # the minute window is over, the token is not
    assert await store.usage(rule.key, rule.window_start) == 0
    assert await store.usage(token_key.key, 0) == 1
    await store.prune_expired(now + 3600 + 61, grace_s=60)
    assert await store.usage(token_key.key, 0) == 0


async def test_approvals_are_pruned_after_their_retention(store: Store):
    def approval(approval_id: str, expires_at: float, status: str = "pending") -> Approval:
        return Approval(
            approval_id,
            "demo",
            "a",
            "transfer_funds",
            "ab" * 32,
            "r",
            status,
            1,
            expires_at - 900,
            expires_at,
            f"dec-{approval_id}",
        )

    await store.create_approval(approval("old", NOW - 90_000))
    await store.create_approval(approval("recent", NOW - 60))
    await store.create_approval(approval("open", NOW + 600))
    result = await store.prune_expired(NOW, approval_retention_s=86_400)
    assert result.approvals == 1
    assert await store.get_approval("demo", "old") is None
    assert await store.get_approval("demo", "recent") is not None
    assert await store.get_approval("demo", "open") is not None


async def test_a_million_distinct_tokens_return_to_a_bounded_table(backend, store: Store, maybe_pg_url):
    million = 1_000_000
    live = [window(f"demo/token/calls/live-{i}", 0, NOW + 3600) for i in range(100)]
    assert (await store.reserve(live)).ok
    # One lifetime counter per token, as token_reservations writes them, for tokens that have expired.
    if backend.name == "sqlite":
        with store.db.transaction() as conn:  # type: ignore[attr-defined]
            conn.execute(
                "WITH RECURSIVE n(i) AS (SELECT 0 UNION ALL SELECT i + 1 FROM n WHERE i < ? - 1) "
                "INSERT INTO budget_counters (counter_key, window_start, used, expires_at) "
                "SELECT printf('demo/token/calls/%064x', i), 0, 1, ? - 3600 - i % 7200 FROM n",
                (million, NOW),
            )
    else:
        async with await psycopg.AsyncConnection.connect(maybe_pg_url, autocommit=True) as conn:
            await conn.execute(
                "INSERT INTO budget_counters (counter_key, window_start, used, expires_at) "
                "SELECT 'demo/token/calls/' || lpad(to_hex(i), 64, '0'), 0, 1, %s - 3600 - i %% 7200 "
                "FROM generate_series(0, %s - 1) AS i",
                (NOW, million),
            )
    assert await rows(backend, store, maybe_pg_url, "budget_counters") == million + 100
    result = await store.prune_expired(NOW, grace_s=300, batch=50_000)
    assert result.counters == million
    assert await rows(backend, store, maybe_pg_url, "budget_counters") == 100
    assert all([await store.usage(r.key, 0) == 1.0 for r in live])


async def test_the_pruner_runs_on_its_schedule_and_survives_a_failed_pass(store: Store):
    assert (await store.reserve([window("ended", 3, NOW - 3600)])).ok
    calls = []
    real = store.prune_expired

    async def flaky(*args, **kwargs):
        calls.append(args)
        if len(calls) == 1:
            raise StoreUnavailable("database restarting")
        return await real(*args, **kwargs)

    store.prune_expired = flaky  # type: ignore[method-assign]
    pruner = StatePruner(store, interval_s=0.01, grace_s=300, clock=lambda: NOW)
    task = asyncio.create_task(pruner.run())
    try:
        for _ in range(500):
            if pruner.passes:
                break
            await asyncio.sleep(0.01)
    finally:
        task.cancel()
    assert pruner.failures >= 1 and pruner.passes >= 1 and pruner.total.counters == 1
    assert await store.usage("ended", 3) == 0
