"""The ext_authz servicer's audit duties (issue 13 §3): every answer audited, no allow recorded past the
deadline, repeated unauthenticated denials aggregated per source and window in ``_gateway``.

The servicer runs against a real ChainRecorder over a real SQLite store. The pipeline is a stand-in
(``ScriptedPipeline``) so a test can make a stage slow or the servicer itself fail; the gRPC context is a
stand-in too (``Context``: only ``time_remaining`` is read).
"""

from __future__ import annotations

import asyncio
import json
import time
from pathlib import Path

import pytest
from envoy.service.auth.v3 import external_auth_pb2

from authz.audit import ChainRecorder, UnauthenticatedDenials, verify_chain
from authz.check.models import Check, Decision, Outcome, new_decision_id
from authz.server.check_service import AuthorizationService
from authz.storage.sqlite import SQLiteStore
from tests.unit.test_wire import request, rpc


class Context:
    """Stand-in for grpc.aio.ServicerContext: Envoy's remaining time."""

    def __init__(self, remaining: float = 0.45):
        self.remaining = remaining

    def time_remaining(self) -> float:
        return self.remaining


class ScriptedPipeline:
    """Stand-in for authz.check.Pipeline: allows every call after ``delay`` seconds, or denies a
    call without a token the way the capability stage does."""

    def __init__(self, delay: float = 0.0):
        self.delay = delay
        self.calls = 0

    def authenticates(self, token):
        return token == "good"

    async def check(self, inp):
        self.calls += 1
        if inp.token != "good":
            return Decision(
                new_decision_id(),
                Outcome.DENY,
                Check.CAPABILITY,
                "capability token missing",
                rpc_method=inp.rpc_method,
            )
        await asyncio.sleep(self.delay)
        return Decision(new_decision_id(), Outcome.ALLOW, tenant="demo", agent="a", rpc_method=inp.rpc_method)

    async def check_batch(self, inputs):
        # Like authz.check.Pipeline.check_batch: in order, until a denial or the deadline.
        decisions = []
        for inp in inputs:
            if decisions and inp.deadline is not None and time.monotonic() > inp.deadline:
                break
            decisions.append(await self.check(inp))
            if not decisions[-1].allowed:
                break
        return decisions


@pytest.fixture
async def store(tmp_path: Path):
    s = SQLiteStore(tmp_path / "audit.db")
    yield s
    await s.close()


async def events(store, tenant):
    return [json.loads(r.event)["tessera"] async for r in store.iter_events(tenant)]


def source_request(body: bytes, source: str, **kw) -> external_auth_pb2.CheckRequest:
    req = request(body, **kw)
    req.attributes.source.address.socket_address.address = source
    return req


async def test_an_internal_error_is_answered_minus_32018_and_audited(store):
    service = AuthorizationService(ScriptedPipeline(), ChainRecorder(store), deadline_cap_s=0.45)

    class Broken:
        def time_remaining(self):
            raise RuntimeError("boom")

    reply = await service.Check(request(rpc("ping"), headers={"Authorization": "Bearer good"}), Broken())
    body = json.loads(reply.denied_response.body)
    assert body["error"]["code"] == -32018
    (event,) = await events(store, "_gateway")
    assert event["decision_id"] == body["error"]["data"]["decision_id"]
    assert event["decision"] == "deny" and event["check"] == "unavailable"
    assert "internal error: RuntimeError" in event["reason"]


async def test_no_allow_is_recorded_after_the_deadline(store):
    pipeline = ScriptedPipeline(delay=0.02)
    service = AuthorizationService(pipeline, ChainRecorder(store), deadline_cap_s=10)
    batch = b"[" + b",".join(rpc("ping", id_=i) for i in range(20)) + b"]"
    # Envoy gives 0.1 s (less a 20 ms reply margin): 20 pings of 20 ms each cannot all pass in time.
    reply = await service.Check(
        request(batch, headers={"Authorization": "Bearer good"}), Context(remaining=0.1)
    )
    assert reply.status.code != 0
    recorded = await events(store, "demo")
    assert recorded and all(e["decision"] == "deny" for e in recorded)
    assert all("deadline exceeded" in e["reason"] for e in recorded)
    assert pipeline.calls < 20


async def test_repeated_unauthenticated_denials_become_one_event_per_source_and_window(store):
    clock = [1000.0]
    service = AuthorizationService(ScriptedPipeline(), ChainRecorder(store), deadline_cap_s=0.45)
    service._audit = UnauthenticatedDenials(service._recorder, window_s=60, clock=lambda: clock[0])
    for _ in range(500):
        reply = await service.Check(source_request(rpc("ping"), "203.0.113.7"), Context())
        assert json.loads(reply.denied_response.body)["error"]["code"] == -32010
    for _ in range(3):
        await service.Check(source_request(b"{bad json", "203.0.113.7"), Context())
    await service.Check(source_request(rpc("ping"), "198.51.100.1"), Context())
    # The first denial of each (source, check) is its own event; the rest are counted, not yet written.
    first = await events(store, "_gateway")
    assert [(e["check"], e["rpc_method"]) for e in first] == [
        ("capability", "ping"),
        ("protocol", None),
        ("capability", "ping"),
    ]
    clock[0] += 61  # the windows close; the next decision through the servicer writes their counts
    await service.Check(source_request(rpc("ping"), "198.51.100.1"), Context())
    gateway = await events(store, "_gateway")
    aggregates = {(e["data"]["source_ip"], e["check"]): e for e in gateway if e["rpc_method"] == "aggregate"}
    assert aggregates[("203.0.113.7", "capability")]["data"]["count"] == 499
    assert aggregates[("203.0.113.7", "protocol")]["data"]["count"] == 2
    assert aggregates[("203.0.113.7", "protocol")]["code"] == -32700
    assert ("198.51.100.1", "capability") not in aggregates  # one denial: nothing to aggregate
    assert aggregates[("203.0.113.7", "capability")]["data"]["first_decision_id"] == first[0]["decision_id"]
    assert len(gateway) == 3 + 2 + 1  # 505 denials, six events
    # Closing the service writes what is still counted.
    await service.Check(source_request(rpc("ping"), "198.51.100.1"), Context())
    await service.aclose()
    last = (await events(store, "_gateway"))[-1]
    assert last["rpc_method"] == "aggregate" and last["data"]["count"] == 1
    assert (await verify_chain(store, "_gateway")).ok
