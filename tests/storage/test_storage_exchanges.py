"""Conformance: the count of token exchanges per OAuth subject token (ExchangeStore.count_exchange),
on every backend (``backend`` fixture: SQLite and PostgreSQL)."""

from __future__ import annotations

import asyncio

from authz.storage import Store

from .conftest import Backend

NOW = 1_700_000_000.0


async def test_exchanges_are_counted_up_to_the_limit_per_tenant_and_jti(store: Store):
    counts = [
        await store.count_exchange("acme", "j-1", limit=3, expires_at=NOW + 60, now=NOW) for _ in range(5)
    ]
    assert counts == [1, 2, 3, None, None]
    # Another jti, another tenant: counted apart.
    assert await store.count_exchange("acme", "j-2", limit=3, expires_at=NOW + 60, now=NOW) == 1
    assert await store.count_exchange("globex", "j-1", limit=3, expires_at=NOW + 60, now=NOW) == 1
    # A higher limit (the operator raised it) counts on from where the token is.
    assert await store.count_exchange("acme", "j-1", limit=4, expires_at=NOW + 60, now=NOW) == 4


async def test_counts_are_forgotten_once_the_subject_token_expired(store: Store):
    assert await store.count_exchange("acme", "j-1", limit=1, expires_at=NOW + 60, now=NOW) == 1
    assert await store.count_exchange("acme", "j-1", limit=1, expires_at=NOW + 60, now=NOW + 30) is None
    # The latest expiry of a counted exchange is kept: a longer one keeps the count alive past the first.
    assert await store.count_exchange("acme", "j-1", limit=2, expires_at=NOW + 120, now=NOW + 30) == 2
    assert await store.count_exchange("acme", "j-1", limit=2, expires_at=NOW + 120, now=NOW + 90) is None
    assert await store.count_exchange("acme", "j-1", limit=2, expires_at=NOW + 300, now=NOW + 121) == 1


async def test_concurrent_exchanges_never_pass_the_limit(backend: Backend):
    stores = [await backend.open(), await backend.open()]  # two replicas on one database
    try:
        results = await asyncio.gather(
            *(
                stores[i % 2].count_exchange("acme", "j-1", limit=5, expires_at=NOW + 60, now=NOW)
                for i in range(20)
            )
        )
    finally:
        await stores[1].close()
    assert sorted(r for r in results if r is not None) == [1, 2, 3, 4, 5]
    assert results.count(None) == 15
