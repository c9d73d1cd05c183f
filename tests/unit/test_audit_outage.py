"""While the store refuses audit writes, denials answered without an event are counted, logged and kept;
once the store is back they are written (marked ``backfilled``) before newer events, and what did not fit
the bounded backlog is recorded as an ``audit.outage`` event. Real servicer, ChainRecorder and SQLite;
the outage is real too (a trigger makes the database refuse audit inserts); the pipeline is the
``ScriptedPipeline`` stand-in of test_check_service."""

from __future__ import annotations

import asyncio
import json
import logging

from authz.audit import ChainRecorder, verify_chain
from authz.observability import CheckMetrics
from authz.server.check_service import AuthorizationService
from authz.storage.sqlite import SQLiteStore
from tests.unit.test_check_service import Context, ScriptedPipeline
from tests.unit.test_wire import request, rpc

GOOD = {"Authorization": "Bearer good"}


def outage(store: SQLiteStore, down: bool) -> None:
    if down:
        store.db.conn.execute(
            "CREATE TRIGGER outage BEFORE INSERT ON audit_events BEGIN SELECT RAISE(ABORT, 'disk I/O'); END"
        )
    else:
        store.db.conn.execute("DROP TRIGGER outage")


async def events(store, tenant):
    return [json.loads(r.event)["tessera"] async for r in store.iter_events(tenant)]


async def test_denials_during_an_outage_are_counted_logged_and_written_later(tmp_path, caplog):
    store = SQLiteStore(tmp_path / "audit.db")
    recorder = ChainRecorder(store)
    metrics = CheckMetrics()
    service = AuthorizationService(ScriptedPipeline(), recorder, deadline_cap_s=5, metrics=metrics)
    outage(store, True)
    with caplog.at_level(logging.ERROR, logger="tessera.audit"):
        for i in range(3):
            reply = await service.Check(request(rpc("ping", id_=i), headers=GOOD), Context())
            assert json.loads(reply.denied_response.body)["error"]["code"] == -32018
    assert metrics.unrecorded == 3 and recorder.stats.unrecorded == 3 and recorder.backlog == 3
    assert "tessera_unaudited_decisions_total 3" in metrics.render()
    assert any("without an audit event" in r.getMessage() for r in caplog.records)
    assert await events(store, "demo") == []
    outage(store, False)
    reply = await service.Check(request(rpc("ping", id_=9), headers=GOOD), Context())
    assert reply.status.code == 0
    written = await events(store, "demo")
    assert [(e["decision"], e["check"], e.get("backfilled")) for e in written] == [
        ("deny", "unavailable", True),
        ("deny", "unavailable", True),
        ("deny", "unavailable", True),
        ("allow", None, None),
    ]
    assert recorder.backlog == 0 and recorder.stats.backfilled == 3
    assert (await verify_chain(store, "demo")).ok
    await store.close()


async def test_what_exceeds_the_backlog_is_recorded_as_an_outage_event(tmp_path):
    store = SQLiteStore(tmp_path / "audit.db")
    recorder = ChainRecorder(store, max_backlog=2)
    service = AuthorizationService(ScriptedPipeline(), recorder, deadline_cap_s=5)
    outage(store, True)
    for i in range(5):
        await service.Check(request(rpc("ping", id_=i), headers=GOOD), Context())
    outage(store, False)
    assert await recorder.flush_backlog()
    written = await events(store, "demo")
    assert [e["decision"] for e in written] == ["deny", "deny", "outage"]
    assert written[2]["data"]["count"] == 3 and recorder.stats.lost == 3
    assert (await verify_chain(store, "demo")).ok
    await store.close()


async def test_the_backlog_survives_a_second_failed_attempt(tmp_path):
    store = SQLiteStore(tmp_path / "audit.db")
    recorder = ChainRecorder(store)
    service = AuthorizationService(ScriptedPipeline(), recorder, deadline_cap_s=5)
    outage(store, True)
    await service.Check(request(rpc("ping", id_=1), headers=GOOD), Context())
    assert not await recorder.flush_backlog()
    await service.Check(request(rpc("ping", id_=2), headers=GOOD), Context())
    assert recorder.backlog == 2
    outage(store, False)
    await recorder.aclose()
    assert [e.get("backfilled") for e in await events(store, "demo")] == [True, True]
    await store.close()


async def test_aggregated_denials_counted_during_an_outage_are_written_later(tmp_path):
    store = SQLiteStore(tmp_path / "audit.db")
    recorder = ChainRecorder(store)
    service = AuthorizationService(
        ScriptedPipeline(), recorder, deadline_cap_s=5, unauthenticated_window_s=0.05
    )
    outage(store, True)
    for i in range(3):  # the first is recorded (and fails), the next two are counted into its window
        await service.Check(request(rpc("ping", id_=i)), Context())
    await asyncio.sleep(0.06)
    await service.Check(request(rpc("ping", id_=9)), Context())  # closes the window: its summary fails too
    outage(store, False)
    assert await recorder.flush_backlog()
    written = await events(store, "_gateway")
    assert all(e.get("backfilled") for e in written)
    assert any(e["data"].get("count") == 2 for e in written), written
    await store.close()
