"""A real PostgreSQL outage on the check path: the cluster is stopped while checks arrive, every answer
is a -32018 deny counted as unaudited, and once the cluster is back those denials are written to the
chain (marked ``backfilled``) before newer events. Real servicer, ChainRecorder, PostgresStore and
cluster; the pipeline is test_check_service's ``ScriptedPipeline`` stand-in (it needs no store)."""

from __future__ import annotations

import asyncio
import json
import time

import pytest

from authz.audit import ChainRecorder, verify_chain
from authz.errors import StoreUnavailable
from authz.observability import CheckMetrics
from authz.server.check_service import AuthorizationService
from authz.storage.postgres import PostgresStore
from tests.pg import PostgresCluster, PostgresNotInstalled
from tests.unit.test_check_service import Context, ScriptedPipeline
from tests.unit.test_wire import request, rpc

GOOD = {"Authorization": "Bearer good"}


@pytest.fixture(scope="module")
def own_cluster():
    """A cluster of its own: the test stops it, which must not disturb the shared one."""
    try:
        cluster = PostgresCluster()
    except PostgresNotInstalled as exc:
        pytest.skip(str(exc))
    with cluster:
        yield cluster


async def test_denials_during_a_postgres_outage_are_written_when_it_is_back(own_cluster):
    store = PostgresStore(own_cluster.create_database(), timeout=0.5)
    recorder = ChainRecorder(store)
    metrics = CheckMetrics()
    service = AuthorizationService(ScriptedPipeline(), recorder, deadline_cap_s=2, metrics=metrics)
    try:
        reply = await service.Check(request(rpc("ping", id_=0), headers=GOOD), Context(2))
        assert reply.status.code == 0
        await asyncio.to_thread(own_cluster.stop)
        for i in range(1, 4):
            reply = await service.Check(request(rpc("ping", id_=i), headers=GOOD), Context(2))
            assert json.loads(reply.denied_response.body)["error"]["code"] == -32018
        assert metrics.unrecorded == 3 and recorder.backlog == 3
        await asyncio.to_thread(own_cluster.start)
        deadline = time.monotonic() + 15
        while True:
            try:
                await store.versions()
                break
            except StoreUnavailable:
                assert time.monotonic() < deadline, "the store did not come back"
                await asyncio.sleep(0.1)
        reply = await service.Check(request(rpc("ping", id_=9), headers=GOOD), Context(2))
        assert reply.status.code == 0
        written = [json.loads(r.event)["tessera"] async for r in store.iter_events("demo")]
        assert [(e["decision"], e.get("backfilled")) for e in written] == [
            ("allow", None),
            ("deny", True),
            ("deny", True),
            ("deny", True),
            ("allow", None),
        ]
        assert recorder.backlog == 0 and (await verify_chain(store, "demo")).ok
    finally:
        await recorder.aclose()
        await store.close()
