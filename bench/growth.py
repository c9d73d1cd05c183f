"""Cost growth rows for ``make bench``: what one check's parts cost as a deployment grows, each case
a ratio to its smallest one (in process, on this machine, µs per operation).

- policy size: one evaluation (memo off, the engine's own cost) of a policy with 10 vs 1,000 rules;
- policy engine: the same evaluation (demo policy, and 1,000 rules) under regorus vs regopy;
- tenants: the committed audit append of one decision when 1 vs 1,000 tenants have chains;
- attenuation depth: verifying (uncached) a token attenuated 1 vs 10 times;
- audit chain length: ``verify_chain`` time per event over 10k vs 100k events (1M with ``--long``);
- budget counters: one ``reserve`` when 1k vs 100k live counters exist (1M with ``--long``);
- revocations: one check's revocation lookup when its tenant has revoked 10 vs 10,000 tokens.

The long cases take minutes (1M events hashed and inserted), so ``make bench`` runs the bounded ones
and ``python -m bench --long`` the full ones.
"""

from __future__ import annotations

import tempfile
import time
from collections.abc import Callable
from dataclasses import replace
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from authz.audit import verify_chain
from authz.audit._events import chain_tenant, event_from_decision
from authz.policy import compile_policy, default_policy_source
from authz.secrets import Secret
from authz.storage.models import Reservation
from authz.storage.sqlite import SQLiteStore
from authz.token import KeyRing, TokenAuthenticator, attenuate, mint

MASTER = "bench-growth-key-0123456789abcdef0123456789"


#: Each case is timed in this many alternating rounds and the fastest round is kept: the machine is
#: shared with the load generators and other work, and a ratio of two cases timed at different moments
#: would otherwise measure the load as much as the code.
ROUNDS = 5


def _per_call(fn: Callable[[], Any], n: int) -> float:
    started = time.perf_counter()
    for _ in range(n):
        fn()
    return (time.perf_counter() - started) / n * 1e6


async def _per_call_async(fn: Callable[[], Any], n: int) -> float:
    started = time.perf_counter()
    for _ in range(n):
        await fn()
    return (time.perf_counter() - started) / n * 1e6


async def _fastest(cases: dict[str, Callable[[], Any]]) -> dict[str, float]:
    """µs per call of each case: rounds alternate between the cases, the fastest round counts."""
    best = dict.fromkeys(cases, float("inf"))
    for _ in range(ROUNDS):
        for name, measure in cases.items():
            micros = measure()
            if hasattr(micros, "__await__"):
                micros = await micros
            best[name] = min(best[name], micros)
    return best


def policy_source(rules: int) -> str:
    """A policy of ``rules`` tool rules (one per tool name), as a large real policy grows."""
    lines = ["package tessera", "", "import rego.v1", "", 'default decision := {"allow": false}', ""]
    for i in range(rules):
        lines.append(
            f'decision := {{"allow": input.arguments.amount <= {i * 10}, "reason": "rule {i}"}} '
            f'if input.tool == "tool_{i}"'
        )
    return "\n".join(lines) + "\n"


async def policy_rows() -> dict[str, float]:
    cases = {}
    for rules in (10, 1000):
        policy = compile_policy(policy_source(rules))
        policy._memo = None  # the engine's cost, as for a call never seen before
        inp = {"tool": f"tool_{rules - 1}", "arguments": {"amount": 5}}
        assert policy.evaluate(inp).outcome in ("allow", "deny")
        cases[f"policy evaluation, {rules} rules"] = lambda p=policy, i=inp: _per_call(
            lambda: p.evaluate(i), 100
        )
    return await _fastest(cases)


def _demo_input(amount: int) -> dict[str, Any]:
    return {
        "phase": "call",
        "tool": "transfer_funds",
        "arguments": {"amount": amount, "iban": "DE00"},
        "approval": None,
        "provenance": {"presented": False, "verified": False, "entries": []},
    }


async def engine_rows() -> list[dict[str, float]]:
    """One evaluation (memo off) under each in-process engine: the demo policy, then 1,000 rules."""
    groups = []
    for label, source, inp in (
        ("demo policy", default_policy_source(), _demo_input(20000)),
        ("1,000 rules", policy_source(1000), {"tool": "tool_999", "arguments": {"amount": 5}}),
    ):
        cases = {}
        for engine in ("regopy", "regorus"):
            policy = compile_policy(source, engine=engine)
            policy._memo = None  # the engine's own cost
            assert policy.evaluate(inp).outcome in ("allow", "deny", "escalate")
            cases[f"policy evaluation, {label}, {engine}"] = lambda p=policy, i=inp: _per_call(
                lambda: p.evaluate(i), 100
            )
        groups.append(await _fastest(cases))
    return groups


async def token_rows() -> dict[str, float]:
    keyring = KeyRing(Secret(MASTER))
    base = mint(
        keyring,
        tenant="bench",
        agent="bench-agent",
        tools=["read_invoice"],
        expires=datetime.now(UTC) + timedelta(hours=2),
    )
    cases = {}
    for depth in (1, 10):
        token = base
        for i in range(depth):
            token = attenuate(token, [f"tools = read_invoice,tool_{i}"])
        authenticator = TokenAuthenticator(keyring, cache_size=0, caveat_cache_size=0)
        assert not hasattr(authenticator.authenticate(token), "reason")
        cases[f"token verify (uncached), attenuated {depth}x"] = lambda a=authenticator, t=token: _per_call(
            lambda: a.authenticate(t), 200
        )
    return await _fastest(cases)


def _events(decision: Any, count: int, tenant: str | None = None) -> list[tuple[str, dict[str, Any]]]:
    if tenant is not None:
        decision = replace(decision, tenant=tenant)
    event = event_from_decision(decision, time_ms=int(time.time() * 1000))
    return [(chain_tenant(decision), event)] * count


async def tenant_rows(decision: Any, workdir: Path) -> dict[str, float]:
    stores, cases = [], {}
    try:
        for tenants in (1, 1000):
            store = SQLiteStore(workdir / f"growth-tenants-{tenants}.db")
            stores.append(store)
            await store.append_events(
                [
                    (f"other-{i}", event)
                    for i in range(1, tenants)
                    for _, event in _events(decision, 1, f"other-{i}")
                ]
            )  # every other tenant has a chain head too
            events = _events(decision, 1)
            cases[f"audit append, {tenants} tenant chains"] = lambda s=store, e=events: _per_call_async(
                lambda: s.append_events(e), 200
            )
        return await _fastest(cases)
    finally:
        for store in stores:
            await store.close()


async def chain_rows(decision: Any, workdir: Path, *, long: bool) -> dict[str, float]:
    """µs per event verified (``verify_chain`` re-reads and re-hashes every event); two alternating
    rounds, the faster counts."""
    stores, best = {}, {}
    try:
        for size in (10_000, 1_000_000) if long else (10_000, 100_000):
            store = stores[size] = SQLiteStore(workdir / f"growth-chain-{size}.db")
            batch = _events(decision, 1000)
            for _ in range(size // 1000):
                await store.append_events(batch)
        for _ in range(2):
            for size, store in stores.items():
                started = time.perf_counter()
                result = await verify_chain(store, chain_tenant(decision))
                elapsed = time.perf_counter() - started
                assert result.ok and result.events_checked == size, result
                name = f"chain verify, {size:,} events (µs/event)"
                best[name] = min(best.get(name, float("inf")), elapsed / size * 1e6)
        return best
    finally:
        for store in stores.values():
            await store.close()


async def budget_rows(workdir: Path, *, long: bool) -> dict[str, float]:
    stores, cases = [], {}
    try:
        for size in (1_000, 1_000_000) if long else (1_000, 100_000):
            store = SQLiteStore(workdir / f"growth-budget-{size}.db")
            stores.append(store)
            with store.db.transaction() as conn:  # live counters of other tokens, written in bulk
                conn.executemany(
                    "INSERT INTO budget_counters (counter_key, window_start, used, expires_at) "
                    "VALUES (?, 0, 1, NULL)",
                    ((f"token:{i:08d}:max_calls",) for i in range(size)),
                )
            reservation = [Reservation(f"token:{size // 2:08d}:max_calls", 0, 1, 1e12, "token:max_calls")]
            cases[f"budget reserve, {size:,} live counters"] = lambda s=store, r=reservation: _per_call_async(
                lambda: s.reserve(r), 200
            )
        return await _fastest(cases)
    finally:
        for store in stores:
            await store.close()


async def revocation_rows(workdir: Path) -> dict[str, float]:
    stores, cases = [], {}
    try:
        for size in (10, 10_000):
            store = SQLiteStore(workdir / f"growth-revocations-{size}.db")
            stores.append(store)
            with store.db.transaction() as conn:
                conn.executemany(
                    "INSERT INTO revocations (tenant, kind, value, reason, revoked_at, revoked_by) "
                    "VALUES ('bench', ?, ?, 'rotated', 0, 'bench')",
                    ((kind, f"{kind}-{i}") for i in range(size // 2) for kind in ("jti", "token_id")),
                )
            ids = ["token_id-unrevoked-1", "token_id-unrevoked-2"]  # a live token: both seeks miss
            cases[f"revocation lookup, {size:,} revocations"] = lambda s=store, i=ids: _per_call_async(
                lambda: s.is_revoked("bench", "jti-unrevoked", i), 500
            )
        return await _fastest(cases)
    finally:
        for store in stores:
            await store.close()


async def growth_rows(decision: Any, *, long: bool = False) -> list[tuple[str, float, float]]:
    """``(name, µs, ratio to the smallest case of its kind)`` for every cost-growth row."""
    with tempfile.TemporaryDirectory(prefix="tessera-growth-") as tmp:
        workdir = Path(tmp)
        groups = [
            await policy_rows(),
            *await engine_rows(),
            await tenant_rows(decision, workdir),
            await token_rows(),
            await chain_rows(decision, workdir, long=long),
            await budget_rows(workdir, long=long),
            await revocation_rows(workdir),
        ]
    rows = []
    for group in groups:
        smallest = next(iter(group.values()))
        rows += [(name, micros, micros / smallest) for name, micros in group.items()]
    return rows
