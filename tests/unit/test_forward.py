"""The shared forwarder driver (authz.forward) with the webhook and NDJSON file sinks, on a real SQLite
store and real HTTP receivers on 127.0.0.1.
HTTP goes through the outbound client (authz.outbound) with loopback allowlisted explicitly, as an
operator would with TESSERA_OUTBOUND_ALLOW."""

from __future__ import annotations

import asyncio
import hashlib
import hmac
import json
import random
import time
from collections.abc import AsyncIterator
from pathlib import Path

import httpx
import pytest

from authz.audit import admin_event
from authz.forward import (
    ChainGap,
    CursorBatcher,
    EventCache,
    Forwarder,
    ForwarderSettings,
    LeaseLost,
    NdjsonFileSink,
    Retry,
    WebhookSink,
    classify_http,
    parse_retry_after,
    verify_webhook,
)
from authz.outbound import OutboundClient, OutboundPolicy
from authz.secrets import Secret
from authz.storage.sqlite import SQLiteStore
from tests.forward_receivers import Answer, Received, Receiver
from tests.sqlite_raw import raw_sqlite

SECRET = b"webhook-secret-for-tests"
FAST = ForwarderSettings(
    batch_size=4, poll_interval_s=0.05, lease_ttl_s=5, backoff_base_s=0.01, backoff_cap_s=0.05
)


@pytest.fixture
async def store(tmp_path: Path) -> AsyncIterator[SQLiteStore]:
    s = SQLiteStore(tmp_path / "tessera.db")
    yield s
    await s.close()


@pytest.fixture
async def http() -> AsyncIterator[OutboundClient]:
    async with OutboundClient(
        OutboundPolicy.build(["127.0.0.1"]), timeout_s=2.0, purpose="audit forwarder"
    ) as client:
        yield client


async def append(store: SQLiteStore, tenant: str, count: int) -> None:
    await store.append_events(
        [
            (tenant, admin_event(tenant, "alice", "tenant.update", f"t:{i}", time_ms=1_700_000_000_000 + i))
            for i in range(count)
        ]
    )


def webhook_check(request: Received) -> Answer | None:
    """What the webhook contract promises: JSON body, fresh timestamp, v1 HMAC over "<ts>.<body>"."""
    ts = request.headers.get("x-tessera-timestamp", "")
    expected = "v1=" + hmac.new(SECRET, ts.encode() + b"." + request.body, hashlib.sha256).hexdigest()
    if request.headers.get("content-type") != "application/json" or not ts.isdigit():
        return (400, {}, b"bad request")
    if abs(time.time() - int(ts)) > 300 or not hmac.compare_digest(
        expected, request.headers.get("x-tessera-signature", "")
    ):
        return (401, {}, b"bad signature")
    events = request.json()["events"]
    if request.headers.get("idempotency-key") != events[-1]["tessera_chain"]["hash"]:
        return (400, {}, b"bad idempotency key")
    return None


def arrived(receiver: Receiver) -> dict[str, list[int]]:
    """Per tenant, the sorted distinct sequence numbers the receiver acknowledged."""
    seen: dict[str, set[int]] = {}
    for request in receiver.accepted:
        for event in request.json()["events"]:
            chain = event["tessera_chain"]
            seen.setdefault(chain["tenant"], set()).add(chain["seq"])
    return {tenant: sorted(seqs) for tenant, seqs in seen.items()}


async def assert_caught_up(store: SQLiteStore, sink: str, tenants: dict[str, int]) -> None:
    for tenant, count in tenants.items():
        head = await store.audit_head(tenant)
        assert head is not None and head[0] == count
        assert (await store.get_forwarder_cursor(tenant, sink)).seq == head[0]


async def test_webhook_receives_every_event_of_every_tenant_signed_and_the_cursor_reaches_the_head(
    store, http
):
    await append(store, "acme", 10)
    await append(store, "globex", 3)
    receiver = Receiver(webhook_check).start()
    try:
        forwarder = Forwarder(store, WebhookSink("hook", receiver.url + "/in", Secret(SECRET), http), FAST)
        assert await forwarder.pass_once()
    finally:
        receiver.stop()
    assert receiver.refused == []
    assert arrived(receiver) == {"acme": list(range(1, 11)), "globex": [1, 2, 3]}
    assert [len(r.json()["events"]) for r in receiver.accepted] == [4, 4, 2, 3]  # batches of one tenant
    first = receiver.accepted[0].json()["events"][0]
    assert first["class_uid"] == 6003 and first["tessera"]["decision"] == "admin"
    assert first["tessera_chain"]["prev_hash"] == "0" * 64
    await assert_caught_up(store, "hook", {"acme": 10, "globex": 3})
    assert await store.list_dead_letters() == []


async def test_a_batch_answered_500_is_resent_until_acknowledged_nothing_skipped(store, http):
    await append(store, "acme", 9)
    receiver = Receiver(webhook_check, script=[(500, {}, b"oops"), (503, {"retry-after": "0"}, b"")]).start()
    try:
        forwarder = Forwarder(store, WebhookSink("hook", receiver.url, Secret(SECRET), http), FAST)
        await forwarder.pass_once()
    finally:
        receiver.stop()
    assert [status for _, status in receiver.refused] == [500, 503]
    # The refused batch was sent again, identical events: the first batch arrived (once acknowledged).
    assert receiver.refused[0][0].json()["events"] == receiver.accepted[0].json()["events"]
    assert arrived(receiver) == {"acme": list(range(1, 10))}
    await assert_caught_up(store, "hook", {"acme": 9})
    cursor = await store.get_forwarder_cursor("acme", "hook")
    assert cursor.last_error is None and cursor.last_error_at is not None  # the error was seen, then cleared
    assert await store.list_dead_letters() == []


async def test_a_receiver_down_then_back_gets_everything_from_the_cursor(store, http):
    await append(store, "acme", 6)
    receiver = Receiver(webhook_check).start()
    port = receiver.port
    receiver.stop()  # nothing listens: connection refused
    settings = ForwarderSettings(
        batch_size=4,
        poll_interval_s=0.05,
        lease_ttl_s=5,
        backoff_base_s=0.02,
        backoff_cap_s=0.1,
        max_attempts=10_000,
    )
    forwarder = Forwarder(
        store, WebhookSink("hook", f"http://127.0.0.1:{port}", Secret(SECRET), http), settings
    )
    stop = asyncio.Event()
    task = asyncio.create_task(forwarder.run(stop))
    try:
        for _ in range(100):
            await asyncio.sleep(0.02)
            if (await store.get_forwarder_cursor("acme", "hook")).last_error:
                break
        assert "connection attempts failed" in (
            (await store.get_forwarder_cursor("acme", "hook")).last_error or ""
        )
        assert (await store.get_forwarder_cursor("acme", "hook")).seq == 0
        receiver = Receiver(webhook_check, port=port).start()
        await append(store, "acme", 2)  # committed while the receiver was down / coming back
        for _ in range(200):
            await asyncio.sleep(0.02)
            if (await store.get_forwarder_cursor("acme", "hook")).seq == 8:
                break
    finally:
        stop.set()
        await task
        receiver.stop()
    assert arrived(receiver) == {"acme": list(range(1, 9))}
    await assert_caught_up(store, "hook", {"acme": 8})
    assert await store.list_dead_letters() == []
    # run() released the lease on the way out: a successor need not wait for it to expire.
    assert await store.acquire_forwarder_lease("hook", "successor", time.time(), 5)


async def test_a_rejected_batch_becomes_a_dead_letter_that_a_replay_delivers(store, http):
    await append(store, "acme", 6)
    receiver = Receiver(webhook_check, script=[(400, {}, b"schema error")]).start()
    try:
        forwarder = Forwarder(store, WebhookSink("hook", receiver.url, Secret(SECRET), http), FAST)
        await forwarder.pass_once()
        (dead,) = await store.list_dead_letters()
        assert (dead.tenant, dead.sink, dead.from_seq, dead.to_seq, dead.attempts) == (
            "acme",
            "hook",
            1,
            4,
            1,
        )
        assert "HTTP 400: schema error" in dead.reason
        # The cursor passed the dead letter, visibly: the chain says so in a 7th event, forwarded too.
        assert arrived(receiver) == {"acme": [5, 6, 7]}
        await assert_caught_up(store, "hook", {"acme": 7})
        announced = receiver.accepted[-1].json()["events"][-1]["tessera"]
        assert (announced["action"], announced["actor"]) == ("forwarder.dead_letter", "tessera")
        assert announced["details"] == {
            "sink": "hook",
            "dead_letter_id": dead.id,
            "from_seq": 1,
            "to_seq": 4,
            "attempts": 1,
            "reason": dead.reason,
        }
        assert await forwarder.replay(dead)
    finally:
        receiver.stop()
    assert arrived(receiver) == {"acme": list(range(1, 8))}
    assert await store.list_dead_letters() == []
    assert (await store.list_dead_letters(include_replayed=True))[0].replayed_at is not None


async def test_a_batch_that_keeps_failing_goes_to_a_dead_letter_after_max_attempts(store, http):
    await append(store, "acme", 2)
    receiver = Receiver(lambda r: (502, {}, b"bad gateway")).start()
    try:
        settings = ForwarderSettings(batch_size=10, backoff_base_s=0.0, max_attempts=3)
        await Forwarder(store, WebhookSink("hook", receiver.url, Secret(SECRET), http), settings).pass_once()
    finally:
        receiver.stop()
    # The batch, then the dead letter's own event (seq 3), each sent 3 times. The second dead letter
    # holds only this sink's own dead-letter event: it is not announced again (no endless chain).
    assert len(receiver.refused) == 6
    dead, again = await store.list_dead_letters()
    assert (dead.from_seq, dead.to_seq, dead.attempts) == (1, 2, 3)
    assert dead.reason.startswith("gave up after 3 attempts: webhook hook answered HTTP 502")
    assert (again.from_seq, again.to_seq) == (3, 3)
    assert (await store.audit_head("acme"))[0] == 3
    assert (await store.get_forwarder_cursor("acme", "hook")).seq == 3


async def test_only_the_lease_holder_sends_and_a_successor_resumes_from_the_cursor(store, http):
    await append(store, "acme", 8)
    receiver = Receiver(webhook_check).start()
    clock = [1_000.0]
    try:
        settings = ForwarderSettings(batch_size=4, lease_ttl_s=10)
        sink = WebhookSink("hook", receiver.url, Secret(SECRET), http)
        first = Forwarder(store, sink, settings, holder="a", clock=lambda: clock[0])
        second = Forwarder(store, sink, settings, holder="b", clock=lambda: clock[0])
        assert await first.pass_once()
        await append(store, "acme", 4)
        asked = []
        acquire = store.acquire_forwarder_lease

        async def counting(*args):
            asked.append(args)
            return await acquire(*args)

        store.acquire_forwarder_lease = counting  # type: ignore[method-assign]
        assert not await second.pass_once()  # a holds the lease (it "crashed" without releasing it)
        assert not await second.pass_once()
        assert asked == []  # the standby read the lease: no write transaction while it is held
        assert arrived(receiver) == {"acme": list(range(1, 9))}
        clock[0] += 11  # a's lease expired
        assert await second.pass_once()
        # a wakes up: its cursor write is refused, the lease stays with b.
        assert not await first.pass_once()
    finally:
        receiver.stop()
    assert arrived(receiver) == {"acme": list(range(1, 13))}
    assert sum(len(r.json()["events"]) for r in receiver.accepted) == 12  # resumed from the cursor: no resend


async def test_a_sink_that_raises_is_retried_never_skipped(store):
    await append(store, "acme", 3)

    class Flaky:
        name = "flaky"

        def __init__(self) -> None:
            self.calls = 0
            self.got: list[int] = []

        async def send(self, batch):
            self.calls += 1
            if self.calls == 1:
                raise OSError("disk full")
            self.got += [e.seq for e in batch]
            return classify_http(httpx.Response(204), "flaky")

        async def aclose(self) -> None: ...

    sink = Flaky()
    await Forwarder(store, sink, FAST).pass_once()
    assert sink.got == [1, 2, 3] and sink.calls == 2


async def test_ndjson_file_sink_rotates_by_size_and_keeps_every_event(store, tmp_path: Path):
    await append(store, "acme", 30)
    path = tmp_path / "audit" / "events.ndjson"
    sink = NdjsonFileSink("file", path, max_bytes=9000, keep=20)
    await Forwarder(store, sink, FAST).pass_once()
    files = sorted(path.parent.iterdir())
    assert len(files) > 2 and all(f.stat().st_size <= 9000 for f in files)
    lines = [json.loads(line) for f in files for line in f.read_bytes().splitlines()]
    assert sorted(d["tessera_chain"]["seq"] for d in lines) == list(range(1, 31))
    newest_first = [path] + [path.with_name(f"events.ndjson.{i}") for i in range(1, len(files))]
    ordered = [
        json.loads(line)["tessera_chain"]["seq"]
        for f in reversed(newest_first)
        for line in f.read_bytes().splitlines()
    ]
    assert ordered == list(range(1, 31))  # rotation keeps order: .N oldest … the live file newest
    await assert_caught_up(store, "file", {"acme": 30})


@pytest.mark.parametrize("torn_bytes", [1, 700, 70_000, 200_000])
async def test_a_line_torn_by_a_killed_writer_is_cut_off_before_the_next_batch(
    store, tmp_path: Path, torn_bytes
):
    # A forwarder killed mid-write leaves part of a line (the test writes what it would have left);
    # every line the next batch adds must parse, and every event must still arrive whole.
    await append(store, "acme", 12)
    path = tmp_path / "events.ndjson"
    forwarder = Forwarder(store, NdjsonFileSink("file", path), FAST)
    await forwarder.pass_once()
    complete = path.read_bytes()
    torn = (b'{"activity_id":3,"message":"' + b"x" * torn_bytes)[:torn_bytes]
    with path.open("ab") as file:
        file.write(torn)
    await append(store, "acme", 3)
    await forwarder.pass_once()
    data = path.read_bytes()
    assert data.startswith(complete) and data.endswith(b"\n")
    seqs = [json.loads(line)["tessera_chain"]["seq"] for line in data.splitlines()]
    assert seqs == list(range(1, 16))


async def test_a_file_holding_only_a_torn_line_starts_over(tmp_path: Path):
    path = tmp_path / "events.ndjson"
    path.write_bytes(b'{"activity_id":3,"mess')
    sink = NdjsonFileSink("file", path)
    sink._write(b'{"a":1}\n')
    assert path.read_bytes() == b'{"a":1}\n'


async def test_a_gap_in_the_chain_is_a_loud_error_and_the_cursor_does_not_pass_it(store, tmp_path: Path):
    await append(store, "acme", 10)
    # Damage the chain behind the store's back: seq 6 disappears.
    with raw_sqlite(tmp_path / "tessera.db") as conn:
        conn.execute("DELETE FROM audit_events WHERE tenant = 'acme' AND seq = 6")
    path = tmp_path / "events.ndjson"
    forwarder = Forwarder(store, NdjsonFileSink("file", path), FAST)
    with pytest.raises(ChainGap, match="expected seq 6, read 7"):
        await forwarder.pass_once()
    seqs = [json.loads(line)["tessera_chain"]["seq"] for line in path.read_bytes().splitlines()]
    assert seqs == [1, 2, 3, 4]  # the batch with the gap was not sent at all
    cursor = await store.get_forwarder_cursor("acme", "file")
    assert cursor.seq == 4 and "chain gap in acme" in (cursor.last_error or "")
    # The loop keeps reporting it and never moves past it.
    stop = asyncio.Event()
    task = asyncio.create_task(forwarder.run(stop))
    await asyncio.sleep(0.3)
    stop.set()
    await task
    assert (await store.get_forwarder_cursor("acme", "file")).seq == 4
    assert len(path.read_bytes().splitlines()) == 4


async def test_forwarders_sharing_a_cache_read_and_decode_each_event_once(store, tmp_path: Path):
    await append(store, "acme", 10)
    reads: list[int] = []
    iter_events = store.iter_events

    def counting(tenant, **kw):
        reads.append(kw["after_seq"])
        return iter_events(tenant, **kw)

    store.iter_events = counting  # type: ignore[method-assign]
    cache = EventCache(max_events=8)
    sinks = [NdjsonFileSink(f"file-{i}", tmp_path / f"out-{i}.ndjson") for i in range(3)]
    for sink in sinks:
        await Forwarder(store, sink, FAST, cache=cache).pass_once()
    for i in range(3):
        lines = (tmp_path / f"out-{i}.ndjson").read_bytes().splitlines()
        assert [json.loads(line)["tessera_chain"]["seq"] for line in lines] == list(range(1, 11))
    # The first sink read the chain in batches of 4 (the short last one reached the head: no further
    # read); the others were served from the cache except what it had evicted (it holds 8) and the
    # reads at the head.
    assert reads[:3] == [0, 4, 8]
    assert len(reads) < 3 * 3 and cache.hits > 0


async def test_sinks_acknowledging_in_the_same_cycle_share_one_cursor_transaction(store, tmp_path: Path):
    await append(store, "acme", 10)
    single = store.advance_forwarder_cursor

    async def one_by_one(*args, **kw):
        raise AssertionError("a cursor written in a transaction of its own")

    store.advance_forwarder_cursor = one_by_one  # type: ignore[method-assign]
    batched = store.advance_forwarder_cursors
    transactions: list[list[tuple]] = []

    async def counting(advances, now):
        transactions.append(list(advances))
        return await batched(advances, now)

    store.advance_forwarder_cursors = counting  # type: ignore[method-assign]
    cache = EventCache()
    cursors = CursorBatcher(store, linger_s=3600, expected=lambda: 3)
    forwarders = [
        Forwarder(
            store,
            NdjsonFileSink(f"file-{i}", tmp_path / f"out-{i}.ndjson"),
            FAST,
            cache=cache,
            cursors=cursors,
        )
        for i in range(3)
    ]
    # (the bound only turns a wait for the hour-long linger into a failure instead of a hang)
    await asyncio.wait_for(asyncio.gather(*(f.pass_once() for f in forwarders)), 60)
    # Batches 1-4, 5-8, 9-10: each one transaction holding the three sinks' cursors, written as soon as
    # the third sink acknowledged, without waiting out the linger.
    assert [sorted(t) for t in transactions] == [
        [("acme", f"file-{i}", f.holder, seq, FAST.lease_ttl_s) for i, f in enumerate(forwarders)]
        for seq in (4, 8, 10)
    ]
    assert (cursors.transactions, cursors.advances) == (3, 9)
    # each advance renewed its sink's lease in the same transaction (no lease transaction of its own)
    for f in forwarders:
        holder, expires_at = await store.forwarder_lease(f.sink.name)
        assert holder == f.holder and expires_at >= f._renewed_at + FAST.lease_ttl_s
    for i in range(3):
        assert (await store.get_forwarder_cursor("acme", f"file-{i}")).seq == 10
        lines = (tmp_path / f"out-{i}.ndjson").read_bytes().splitlines()
        assert [json.loads(line)["tessera_chain"]["seq"] for line in lines] == list(range(1, 11))
    store.advance_forwarder_cursor = single  # type: ignore[method-assign]


async def test_a_batched_cursor_write_without_the_lease_stops_that_sink_only(store, tmp_path: Path):
    await append(store, "acme", 3)
    cursors = CursorBatcher(store, linger_s=0.05, expected=lambda: 2)
    keep = Forwarder(store, NdjsonFileSink("keep", tmp_path / "keep.ndjson"), FAST, cursors=cursors)
    lose = Forwarder(store, NdjsonFileSink("lose", tmp_path / "lose.ndjson"), FAST, cursors=cursors)
    assert await lose.pass_once() is True  # takes the lease, forwards 1..3
    await append(store, "acme", 2)
    # Another instance took the lease over (say ours stalled past its TTL): our next cursor write fails.
    await store.release_forwarder_lease("lose", lose.holder)
    assert await store.acquire_forwarder_lease("lose", "successor", time.time(), 60)
    lose.lease_held, lose._renewed_at = True, time.time()  # it still believes it holds it
    results = await asyncio.gather(keep.pass_once(), lose.pass_once(), return_exceptions=True)
    assert results[0] is True and isinstance(results[1], LeaseLost)
    assert (await store.get_forwarder_cursor("acme", "keep")).seq == 5
    assert (await store.get_forwarder_cursor("acme", "lose")).seq == 3  # left to the successor


def test_backoff_is_full_jitter_capped_and_honours_retry_after():
    forwarder = Forwarder(
        None,  # type: ignore[arg-type]  # backoff needs no store
        NdjsonFileSink("x", "/nonexistent"),
        ForwarderSettings(backoff_base_s=1.0, backoff_cap_s=8.0, max_retry_after_s=20.0),
        rng=random.Random(7),
    )
    delays = [forwarder.backoff(attempt) for attempt in range(1, 9) for _ in range(50)]
    assert all(0 <= d <= 8.0 for d in delays) and max(delays) > 4.0 and len(set(delays)) > 100
    assert all(0 <= forwarder.backoff(1) <= 1.0 for _ in range(50))
    assert all(forwarder.backoff(1, retry_after_s=5) >= 5 for _ in range(20))
    assert forwarder.backoff(1, retry_after_s=3600) <= 20.0


def test_http_answers_are_classified_and_retry_after_parsed():
    assert parse_retry_after("7") == 7.0
    assert parse_retry_after("Wed, 21 Oct 2015 07:28:00 GMT", now=1445412470.0) == 10.0
    assert parse_retry_after("soon") is None and parse_retry_after(None) is None
    assert type(classify_http(httpx.Response(202), "x")).__name__ == "Ack"
    retry = classify_http(httpx.Response(429, headers={"retry-after": "3"}), "x")
    assert isinstance(retry, Retry) and retry.after_s == 3.0
    assert type(classify_http(httpx.Response(503), "x")).__name__ == "Retry"
    assert type(classify_http(httpx.Response(408), "x")).__name__ == "Retry"
    assert type(classify_http(httpx.Response(403, content=b"forbidden"), "x")).__name__ == "Reject"


def test_verify_webhook_refuses_stale_or_forged_requests():
    body = b'{"events":[]}'
    sig = "v1=" + hmac.new(SECRET, b"1000." + body, hashlib.sha256).hexdigest()
    headers = {"x-tessera-timestamp": "1000", "x-tessera-signature": sig}
    assert verify_webhook(SECRET, body, headers, now=1100)
    assert not verify_webhook(SECRET, body, headers, now=1000 + 301)  # replayed too late
    assert not verify_webhook(SECRET, body + b" ", headers, now=1100)
    assert not verify_webhook(b"other", body, headers, now=1100)


async def test_a_loopback_sink_without_the_operator_allowlist_is_refused_and_nothing_is_sent(store):
    await append(store, "acme", 2)
    receiver = Receiver(webhook_check).start()
    try:
        async with OutboundClient(
            OutboundPolicy.build([]), timeout_s=2.0, purpose="audit forwarder"
        ) as client:
            sink = WebhookSink("hook", receiver.url, Secret(SECRET), client)
            settings = ForwarderSettings(batch_size=10, backoff_base_s=0.0, max_attempts=2)
            await Forwarder(store, sink, settings).pass_once()
    finally:
        receiver.stop()
    assert receiver.accepted == [] and receiver.refused == []
    # kept, visible and replayable once the operator allows it; its announcement (seq 3) as well
    dead, announced = await store.list_dead_letters()
    assert "loopback address" in dead.reason and (dead.from_seq, dead.to_seq) == (1, 2)
    assert (announced.from_seq, announced.to_seq) == (3, 3)


async def test_metrics_report_lag_dead_letters_and_this_process_s_counters(store, http):
    from prometheus_client import CollectorRegistry, generate_latest

    from authz.forward._metrics import ForwarderMetrics

    await append(store, "acme", 6)
    receiver = Receiver(webhook_check, script=[(400, {}, b"bad")]).start()
    try:
        forwarder = Forwarder(store, WebhookSink("hook", receiver.url, Secret(SECRET), http), FAST)
        await forwarder.pass_once()
    finally:
        receiver.stop()
    await append(store, "acme", 2)  # committed after the pass: lag
    metrics = ForwarderMetrics([forwarder])
    await metrics.refresh(store)
    registry = CollectorRegistry()
    registry.register(metrics)
    text = generate_latest(registry).decode()
    assert 'tessera_forwarder_lag_events{sink="hook",tenant="acme"} 2' in text
    assert 'tessera_forwarder_dead_letters{sink="hook",tenant="acme"} 1' in text
    assert 'tessera_forwarder_events_delivered_total{sink="hook"} 3' in text  # 5, 6, the dead letter's
    assert 'tessera_forwarder_events_dead_lettered_total{sink="hook"} 4' in text
    assert 'tessera_forwarder_lease_held{sink="hook"} 1' in text
    lag = next(line for line in text.splitlines() if line.startswith("tessera_forwarder_lag_seconds{"))
    assert float(lag.rsplit(" ", 1)[1]) > 0
