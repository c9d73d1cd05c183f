"""``tessera forward replay``: it records the replay request through the same store method as
``ReplayDeadLetter`` (audited as the CLI user) and resends at once through the sinks file's sink; with
``--request-only`` it leaves the resend to the forwarder holding the sink's lease. Real SQLite store,
real CLI entry point, NDJSON file sink."""

from __future__ import annotations

import asyncio
import json
from pathlib import Path

import pytest

from authz.audit import admin_event
from authz.cli import main
from authz.forward import Forwarder, NdjsonFileSink
from authz.storage.sqlite import SQLiteStore
from tests.forward_receivers import Receiver


async def _setup(db: Path) -> list[int]:
    store = SQLiteStore(db)
    try:
        await store.append_events(
            [
                ("acme", admin_event("acme", "alice", "tenant.update", f"t:{i}", time_ms=1_000))
                for i in range(4)
            ]
        )
        assert await store.acquire_forwarder_lease("file", "old-host:1:x", 1.0, 10)
        first = await store.dead_letter_batch("acme", "file", "old-host:1:x", 1, 2, "disk full", 3, 2.0)
        second = await store.dead_letter_batch("acme", "file", "old-host:1:x", 3, 4, "disk full", 3, 3.0)
        await store.release_forwarder_lease("file", "old-host:1:x")
        return [first.id, second.id]
    finally:
        await store.close()


def seqs(path: Path) -> list[int]:
    return [json.loads(line)["tessera_chain"]["seq"] for line in path.read_bytes().splitlines()]


def test_replay_from_the_cli_is_audited_and_request_only_leaves_it_to_the_forwarder(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("TESSERA_MASTER_KEY", "00" * 32)
    db, out = tmp_path / "tessera.db", tmp_path / "out.ndjson"
    config = tmp_path / "sinks.json"
    config.write_text(json.dumps({"sinks": [{"name": "file", "type": "file", "path": str(out)}]}))
    first, second = asyncio.run(_setup(db))
    common = ["--config", str(config), "--database-url", f"sqlite:///{db}"]

    assert main(["forward", "replay", str(first), *common]) == 0
    assert seqs(out) == [1, 2]
    assert main(["forward", "replay", str(second), "--request-only", *common]) == 0
    assert seqs(out) == [1, 2]  # only requested

    async def check() -> None:
        store = SQLiteStore(db)
        try:
            dead = {d.id: d for d in await store.list_dead_letters(include_replayed=True)}
            assert dead[first].replayed_at is not None and dead[first].replay_requested_at is not None
            assert dead[second].replayed_at is None and dead[second].replay_requested_at is not None
            events = [json.loads(r.event)["tessera"] async for r in store.iter_events("acme")]
            replays = [e for e in events if e.get("action") == "dead_letter.replay"]
            assert [e["target"] for e in replays] == [f"dead_letter:{first}", f"dead_letter:{second}"]
            assert all(e["actor"].startswith("cli:") for e in replays)
            # The forwarder holding the lease resends the requested one on its next pass.
            forwarder = Forwarder(store, NdjsonFileSink("file", out))
            await forwarder.pass_once()
            assert (await store.list_dead_letters()) == []
        finally:
            await store.close()

    asyncio.run(check())
    lines = seqs(out)
    assert lines[:2] == [1, 2] and sorted(set(lines)) == list(range(1, 7))  # 3, 4 replayed; 5, 6 new
    assert lines.count(3) == 1 and lines.count(4) == 1


def test_replaying_an_unknown_or_replayed_dead_letter_is_refused(tmp_path: Path, monkeypatch) -> None:
    monkeypatch.setenv("TESSERA_MASTER_KEY", "00" * 32)
    db = tmp_path / "tessera.db"
    first, _ = asyncio.run(_setup(db))
    common = ["--database-url", f"sqlite:///{db}"]
    assert main(["forward", "replay", "999", "--request-only", *common]) != 0
    assert main(["forward", "replay", str(first), "--request-only", *common]) == 0
    assert (
        main(["forward", "replay", str(first), "--request-only", *common]) == 0
    )  # asked twice: same request

    async def replayed() -> None:
        store = SQLiteStore(db)
        try:
            await store.mark_dead_letter_replayed(first, 10.0)
        finally:
            await store.close()

    asyncio.run(replayed())
    assert main(["forward", "replay", str(first), "--request-only", *common]) != 0  # replayed already


def test_run_once_sends_each_batch_once_and_releases_the_leases(tmp_path: Path, monkeypatch) -> None:
    """``forward run --once`` drives one pass per sink itself: no forwarder loop runs beside it sending the
    same batches again (the receiver gets each event exactly once), and the leases are free afterwards."""
    monkeypatch.setenv("TESSERA_MASTER_KEY", "00" * 32)
    monkeypatch.setenv("TESSERA_OUTBOUND_ALLOW", "127.0.0.1")
    monkeypatch.setenv("FWD_TEST_SECRET", "k")
    db = tmp_path / "tessera.db"

    async def setup() -> None:
        store = SQLiteStore(db)
        try:
            await store.append_events(
                [
                    ("acme", admin_event("acme", "alice", "tenant.update", f"t:{i}", time_ms=1_000))
                    for i in range(30)
                ]
            )
        finally:
            await store.close()

    asyncio.run(setup())
    receiver = Receiver(lambda request: None).start()
    try:
        hook = {"name": "hook", "type": "webhook", "url": receiver.url, "secret_env": "FWD_TEST_SECRET"}
        config = tmp_path / "sinks.json"
        config.write_text(json.dumps({"sinks": [hook | {"batch_size": 4}]}))
        assert main(["forward", "run", "--once", "--nice", "0", "--config", str(config), "--database-url",
                     f"sqlite:///{db}"]) == 0  # fmt: skip
    finally:
        receiver.stop()
    sent = [e["tessera_chain"]["seq"] for r in receiver.accepted for e in r.json()["events"]]
    assert sent == list(range(1, 31)) and len(receiver.accepted) == 8

    async def lease() -> object:
        store = SQLiteStore(db)
        try:
            return await store.forwarder_lease("hook")
        finally:
            await store.close()

    assert asyncio.run(lease()) is None


def test_forward_run_can_take_only_idle_cpu(tmp_path: Path) -> None:
    """TESSERA_FORWARD_SCHED=idle puts the running forwarder (every thread) under SCHED_IDLE; a bad value
    stops it with a clear error before any work."""
    import os
    import subprocess
    import sys
    import time

    env = os.environ | {"TESSERA_MASTER_KEY": "00" * 32, "TESSERA_FORWARD_SCHED": "idle"}
    args = [
        sys.executable,
        "-m",
        "authz.cli",
        "forward",
        "run",
        "--database-url",
        f"sqlite:///{tmp_path / 't.db'}",
    ]
    proc = subprocess.Popen(args, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    try:
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline and proc.poll() is None:
            if os.sched_getscheduler(proc.pid) == os.SCHED_IDLE:  # set once the CLI reached the command
                break
            time.sleep(0.05)
        time.sleep(0.5)  # the loop's threads start right after
        threads = os.listdir(f"/proc/{proc.pid}/task")
        assert proc.poll() is None, proc.stderr.read().decode() if proc.stderr else ""
        assert threads and all(os.sched_getscheduler(int(t)) == os.SCHED_IDLE for t in threads), threads
    finally:
        proc.terminate()
        proc.wait(timeout=30)
    bad = subprocess.run(
        args, env=env | {"TESSERA_FORWARD_SCHED": "lowest"}, capture_output=True, text=True, timeout=60
    )
    assert bad.returncode == 2 and "TESSERA_FORWARD_SCHED must be normal or idle" in bad.stderr
