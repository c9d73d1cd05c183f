"""Two check replicas behind one real Envoy, sharing one real PostgreSQL (ARCHITECTURE §10)."""

from __future__ import annotations

import subprocess
import sys
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor

import httpx
import pytest

from authz.audit import verify_chain
from authz.policy import policy_hash
from authz.storage import open_store
from tests.integration.conftest import Gateway, rpc_error, start_gateway
from tests.pg import pg_fixtures

pg_cluster, pg_url = pg_fixtures()

READ = ("read_invoice", {"invoice_id": "INV-1001"})
DENY_READS = 'package tessera\nimport rego.v1\ndecision := {"allow": false, "reason": "reads paused"}\n'


@pytest.fixture
def replicas(tmp_path, pg_url: str) -> Iterator[Gateway]:
    stack, gw = start_gateway(
        tmp_path,
        replicas=2,
        env={"TESSERA_DATABASE_URL": pg_url, "TESSERA_POLL_INTERVAL_S": "0.5"},
    )
    gw.database_url = pg_url  # type: ignore[attr-defined]
    try:
        yield gw
    finally:
        stack.stop()


def _decisions_per_replica(gw: Gateway) -> list[int]:
    counts = []
    for replica in gw.stack.checks:
        text = httpx.get(f"http://127.0.0.1:{replica.metrics_port}/metrics", timeout=5).text
        counts.append(
            sum(
                int(float(line.rsplit(" ", 1)[1]))
                for line in text.splitlines()
                if line.startswith("tessera_decisions_total{")
            )
        )
    return counts


def _burst(gw: Gateway, n: int, token: str) -> list[dict]:
    with ThreadPoolExecutor(max_workers=16) as pool:
        return [r.json() for r in pool.map(lambda i: gw.call(*READ, token=token, request_id=i), range(n))]


def _until(predicate, timeout: float = 1.0) -> float:
    started = time.monotonic()
    while not predicate():
        assert time.monotonic() - started < timeout, "did not happen in time"
        time.sleep(0.05)
    return time.monotonic() - started


async def test_budget_is_exact_across_replicas_and_the_chain_verifies(replicas: Gateway):
    gw = replicas
    bodies = _burst(gw, 60, gw.token(max_calls=13))
    assert sum("result" in b for b in bodies) == 13
    assert {b["error"]["code"] for b in bodies if "error" in b} == {-32013}
    assert all(count > 0 for count in _decisions_per_replica(gw)), "Envoy did not use both replicas"
    store = open_store(gw.database_url)
    try:
        result = await verify_chain(store, "demo")
        assert result.ok and result.events_checked >= 60, result.summary()
    finally:
        await store.close()


def test_a_revocation_is_enforced_by_every_replica_within_a_second(replicas: Gateway):
    gw = replicas
    token = gw.token()
    assert all("result" in b for b in _burst(gw, 8, token))
    subprocess.run(
        [sys.executable, "-m", "authz.cli", "token", "revoke", "--token", token],
        env=gw.stack.checks[1].env,
        check=True,
        capture_output=True,
    )

    def all_denied() -> bool:
        return all(b.get("error", {}).get("code") == -32010 for b in _burst(gw, 8, token))

    _until(all_denied, timeout=1.0)


async def test_a_promotion_and_a_rollback_reach_both_replicas(replicas: Gateway):
    gw = replicas
    token = gw.token()
    store = open_store(gw.database_url)
    try:
        before = (await store.active_policies())["demo"]
        await store.promote_policy("demo", DENY_READS, policy_hash(DENY_READS), "test")
        _until(lambda: all(b.get("error", {}).get("code") == -32012 for b in _burst(gw, 8, token)), 1.5)
        await store.activate_policy("demo", before.version, "test")
        _until(lambda: all("result" in b for b in _burst(gw, 8, token)), 1.5)
    finally:
        await store.close()


def test_a_database_outage_denies_every_call_and_recovers_without_restart(replicas: Gateway, pg_cluster):
    gw = replicas
    token = gw.token()
    assert all("result" in b for b in _burst(gw, 8, token))
    gw.clear_upstream()
    pg_cluster.stop()
    try:
        during = _burst(gw, 24, token)
        assert all("error" in b for b in during), "a call was allowed while the database was down"
        assert {b["error"]["code"] for b in during} == {-32018}
        assert all(b["error"]["data"]["retry_after_ms"] > 0 for b in during)
        assert gw.upstream_requests("/mcp") == []
    finally:
        pg_cluster.start()
    _until(lambda: all("result" in b for b in _burst(gw, 8, token)), timeout=10)
    assert [p.proc.poll() for p in gw.stack.checks] == [None, None]  # nobody restarted
    assert rpc_error(gw.call("delete_invoice", {"invoice_id": "INV-1001"}, token))["code"] == -32012
