"""Fault tests of the audit fan-out with the real ``tessera forward`` process: kill -9 mid-stream, a
restart that takes the lease over and resumes from the cursor. Afterwards every committed event has
arrived at least once, the cursor equals the chain head and there is no dead letter (nothing skipped)."""

from __future__ import annotations

import asyncio
import json
import os
import signal
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pytest

from authz.audit import admin_event
from authz.storage import open_store
from authz.storage.sqlite import SQLiteStore
from tests.pg import free_port, pg_fixtures

pg_cluster, pg_url = pg_fixtures()

TENANTS = ("acme", "globex")


def start_forwarder(
    tmp_path: Path, config: Path, database_url: str | None = None, *extra: str
) -> subprocess.Popen:
    db = tmp_path / "tessera.db"
    return subprocess.Popen(
        [
            sys.executable,
            "-m",
            "authz.cli",
            "forward",
            "run",
            "--config",
            str(config),
            "--database-url",
            database_url or f"sqlite:///{db}",
            "--var-dir",
            str(tmp_path / "var"),
            *extra,
        ],
        stdout=subprocess.DEVNULL,
        stderr=open(tmp_path / "forward.log", "ab"),
        env={**os.environ, "TESSERA_MASTER_KEY": "00" * 32},
    )


async def append(store, tenant: str, count: int, start: int) -> None:
    await store.append_events(
        [
            (
                tenant,
                admin_event(
                    tenant, "alice", "tenant.update", f"t:{start + i}", time_ms=1_700_000_000_000 + i
                ),
            )
            for i in range(count)
        ]
    )


def arrived(folder: Path) -> dict[str, set[int]]:
    seen: dict[str, set[int]] = {t: set() for t in TENANTS}
    for path in folder.iterdir():
        for line in path.read_bytes().splitlines():
            chain = json.loads(line)["tessera_chain"]
            seen[chain["tenant"]].add(chain["seq"])
    return seen


async def wait_for(predicate, timeout_s: float) -> None:
    deadline = time.monotonic() + timeout_s
    while not await predicate():
        assert time.monotonic() < deadline, "timed out"
        await asyncio.sleep(0.05)


async def test_kill_9_mid_stream_then_a_restart_resumes_from_the_cursor_nothing_skipped(tmp_path: Path):
    out = tmp_path / "out"
    config = tmp_path / "forward.yaml"
    config.write_text(
        json.dumps(
            {
                "sinks": [
                    {
                        "name": "file",
                        "type": "file",
                        "path": str(out / "events.ndjson"),
                        "max_bytes": 200_000,
                        "keep": 1000,
                        "batch_size": 5,
                        "lease_ttl_s": 1.0,
                        "poll_interval_s": 0.05,
                    }
                ]
            }
        )
    )
    store = SQLiteStore(tmp_path / "tessera.db")
    counts = dict.fromkeys(TENANTS, 0)
    try:
        for tenant in TENANTS:
            await append(store, tenant, 600, 0)
            counts[tenant] = 600
        proc = start_forwarder(tmp_path, config)
        try:

            async def mid_stream() -> bool:
                assert proc.poll() is None, (tmp_path / "forward.log").read_text()
                return (await store.get_forwarder_cursor("acme", "file")).seq >= 50

            await wait_for(mid_stream, 30)
            # Decisions keep committing while the forwarder runs.
            for tenant in TENANTS:
                await append(store, tenant, 100, counts[tenant])
                counts[tenant] += 100
            os.kill(proc.pid, signal.SIGKILL)
            proc.wait(10)
        finally:
            if proc.poll() is None:
                proc.kill()
                proc.wait(10)
        killed_at = {t: (await store.get_forwarder_cursor(t, "file")).seq for t in TENANTS}
        assert killed_at["acme"] < counts["acme"], "the kill must land mid-stream"

        for tenant in TENANTS:  # committed while no forwarder ran
            await append(store, tenant, 50, counts[tenant])
            counts[tenant] += 50
        metrics_port = free_port()
        # A new holder: waits for the dead one's lease to expire.
        proc = start_forwarder(tmp_path, config, None, "--metrics-port", str(metrics_port))
        try:

            async def caught_up() -> bool:
                assert proc.poll() is None, (tmp_path / "forward.log").read_text()
                cursors = [(await store.get_forwarder_cursor(t, "file")).seq for t in TENANTS]
                return cursors == [counts[t] for t in TENANTS]

            await wait_for(caught_up, 60)
            metrics = ""

            async def scraped() -> bool:
                nonlocal metrics
                try:
                    with urllib.request.urlopen(f"http://127.0.0.1:{metrics_port}/metrics", timeout=5) as r:
                        metrics = r.read().decode()
                except OSError:
                    return False  # the endpoint starts beside the forwarders
                return 'tessera_forwarder_lease_held{sink="file"} 1' in metrics

            await wait_for(scraped, 30)
            assert 'tessera_forwarder_lease_held{sink="file"} 1' in metrics
            assert 'tessera_forwarder_lag_events{sink="file",tenant="acme"}' in metrics
            proc.send_signal(signal.SIGTERM)
            assert proc.wait(10) == 0
        finally:
            if proc.poll() is None:
                proc.kill()
                proc.wait(10)

        seen = arrived(out)
        for tenant in TENANTS:
            head = await store.audit_head(tenant)
            assert head is not None and head[0] == counts[tenant]
            assert (await store.get_forwarder_cursor(tenant, "file")).seq == head[0]
            assert seen[tenant] == set(range(1, counts[tenant] + 1))
        assert await store.list_dead_letters(include_replayed=True) == []
        # SIGTERM released the lease: the next instance starts at once.
        assert await store.acquire_forwarder_lease("file", "next", time.time(), 5)
    finally:
        await store.close()


@pytest.mark.parametrize("backend", ["sqlite", "postgres"])
async def test_two_replicas_one_active_kill_9_of_it_and_the_standby_takes_over(
    backend: str, tmp_path: Path, request: pytest.FixtureRequest
):
    url = f"sqlite:///{tmp_path / 'tessera.db'}" if backend == "sqlite" else request.getfixturevalue("pg_url")
    out = tmp_path / "out"
    config = tmp_path / "forward.json"
    sink = {"name": "file", "type": "file", "path": str(out / "events.ndjson"), "max_bytes": 10**8}
    sink |= {"batch_size": 5, "lease_ttl_s": 1.0, "poll_interval_s": 0.05}
    config.write_text(json.dumps({"sinks": [sink]}))
    store = open_store(url)
    counts = dict.fromkeys(TENANTS, 0)
    procs: list[subprocess.Popen] = []
    try:
        for tenant in TENANTS:
            await append(store, tenant, 400, 0)
            counts[tenant] = 400
        procs = [start_forwarder(tmp_path, config, url) for _ in range(2)]

        async def active() -> bool:
            assert all(p.poll() is None for p in procs), (tmp_path / "forward.log").read_text()
            return (await store.get_forwarder_cursor("acme", "file")).seq >= 25

        await wait_for(active, 30)
        lease = await store.forwarder_lease("file")
        assert lease is not None
        holder_pid = int(lease[0].split(":")[1])  # default_holder(): host:pid:random
        (victim,) = [p for p in procs if p.pid == holder_pid]
        (standby,) = [p for p in procs if p.pid != holder_pid]
        os.kill(victim.pid, signal.SIGKILL)
        victim.wait(10)
        for tenant in TENANTS:
            await append(store, tenant, 50, counts[tenant])
            counts[tenant] += 50

        async def caught_up() -> bool:
            assert standby.poll() is None, (tmp_path / "forward.log").read_text()
            cursors = [(await store.get_forwarder_cursor(t, "file")).seq for t in TENANTS]
            return cursors == [counts[t] for t in TENANTS]

        await wait_for(caught_up, 60)
        lease = await store.forwarder_lease("file")
        assert lease is not None and lease[0].split(":")[1] == str(standby.pid)
        seen = arrived(out)
        for tenant in TENANTS:
            head = await store.audit_head(tenant)
            assert head is not None and head[0] == counts[tenant]
            assert seen[tenant] == set(range(1, counts[tenant] + 1))
        assert await store.list_dead_letters(include_replayed=True) == []
    finally:
        for proc in procs:
            if proc.poll() is None:
                proc.send_signal(signal.SIGTERM)
                try:
                    proc.wait(10)
                except subprocess.TimeoutExpired:
                    proc.kill()
                    proc.wait(10)
        await store.close()
