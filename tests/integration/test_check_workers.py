"""TESSERA_CHECK_WORKERS=2: two real check processes share one port (SO_REUSEPORT) and one store: one
SQLite file (one writer lock) or one PostgreSQL database (the chain-head row lock).

Both answer checks (each one's own /metrics counts decisions), the tenant's audit chain verifies across
their interleaved appends, and SIGKILL of one worker under load loses no decision a client was answered:
the supervisor restarts it and it serves again.
"""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import threading
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path

import grpc
import httpx
import pytest
from envoy.config.core.v3 import base_pb2
from envoy.service.auth.v3 import external_auth_pb2, external_auth_pb2_grpc

from authz.audit import verify_chain
from authz.local.stack import child_pids, free_port, free_port_run, spawn, stop_process, wait_http
from authz.secrets import Secret
from authz.storage import open_store
from authz.token import KeyRing, mint
from tests.pg import pg_fixtures

pg_cluster, pg_url = pg_fixtures()

ROOT = Path(__file__).resolve().parents[2]
MASTER = "workers-test-master-key-0123456789abcdef0123"
WORKERS = 2


def _request(token: str, n: int) -> external_auth_pb2.CheckRequest:
    request = external_auth_pb2.CheckRequest()
    attrs = request.attributes
    attrs.source.address.socket_address.address = "127.0.0.1"
    attrs.context_extensions["route"] = "mcp"
    http = attrs.request.http
    http.method, http.path, http.host, http.protocol = "POST", "/v1/mcp", "127.0.0.1:8080", "HTTP/1.1"
    for key, value in {
        "authorization": f"Bearer {token}",
        "content-type": "application/json",
    }.items():
        http.header_map.headers.append(base_pb2.HeaderValue(key=key, raw_value=value.encode()))
    body = {
        "jsonrpc": "2.0",
        "id": n,
        "method": "tools/call",
        "params": {"name": "read_invoice", "arguments": {"invoice_id": f"INV-{n}"}},
    }
    http.raw_body = json.dumps(body).encode()
    return request


def _decisions_counted(metrics_port: int) -> float:
    text = httpx.get(f"http://127.0.0.1:{metrics_port}/metrics", timeout=5).text
    return sum(
        float(line.rsplit(" ", 1)[1])
        for line in text.splitlines()
        if line.startswith("tessera_decisions_total{") and 'decision="allow"' in line
    )


class _Agents:
    """Threads calling Check over separate connections (one channel each, no shared subchannel), so the
    kernel spreads them over the workers; records the decision id of every allowed answer."""

    def __init__(self, port: int, token: str, count: int):
        self.answered: list[str] = []
        self.failures: list[str] = []
        self._stop = threading.Event()
        self._lock = threading.Lock()
        self._threads = [
            threading.Thread(target=self._run, args=(port, token, i), daemon=True) for i in range(count)
        ]

    def _run(self, port: int, token: str, index: int) -> None:
        n = index * 1_000_000
        while not self._stop.is_set():
            options = [("grpc.use_local_subchannel_pool", 1)]
            with grpc.insecure_channel(f"127.0.0.1:{port}", options=options) as channel:
                stub = external_auth_pb2_grpc.AuthorizationStub(channel)
                while not self._stop.is_set():
                    n += 1
                    try:
                        reply = stub.Check(_request(token, n), timeout=5)
                    except grpc.RpcError as exc:
                        with self._lock:
                            self.failures.append(str(exc.code()))
                        break  # a new connection (the worker holding this one may have been killed)
                    headers = {
                        h.header.key: h.header.value for h in reply.ok_response.response_headers_to_add
                    }
                    with self._lock:
                        if reply.status.code == 0 and "x-tessera-decision-id" in headers:
                            self.answered.append(headers["x-tessera-decision-id"])
                        else:
                            self.failures.append(f"denied: {reply.denied_response.body[:200]}")

    def start(self) -> None:
        for thread in self._threads:
            thread.start()

    def count(self) -> int:
        with self._lock:
            return len(self.answered)

    def stop(self) -> None:
        self._stop.set()
        for thread in self._threads:
            thread.join(30)


def _wait_answers(agents: _Agents, more_than: int, timeout: float = 60.0) -> None:
    started = time.monotonic()
    while agents.count() <= more_than and time.monotonic() - started < timeout:
        time.sleep(0.05)


@pytest.mark.parametrize("backend", ["sqlite", "postgres"])
async def test_two_workers_share_the_port_chain_verifies_and_a_killed_worker_loses_nothing(
    tmp_path, request, backend
):
    database_url = (
        f"sqlite:///{tmp_path / 'tessera.db'}" if backend == "sqlite" else request.getfixturevalue("pg_url")
    )
    tenants = tmp_path / "tenants.yaml"
    tenants.write_text(
        'tenants:\n  acme:\n    intent: {mode: "off"}\n'
        f"    policy: {ROOT / 'authz/policy/examples/demo.rego'}\n"
    )
    check_port, metrics = free_port(), free_port_run(WORKERS)
    env = {
        "TESSERA_MASTER_KEY": MASTER,
        "TESSERA_VAR_DIR": str(tmp_path),
        "TESSERA_TENANTS_FILE": str(tenants),
        "TESSERA_CHECK_PORT": str(check_port),
        "TESSERA_METRICS_PORT": str(metrics),
        "TESSERA_CHECK_WORKERS": str(WORKERS),
        "TESSERA_DATABASE_URL": database_url,
    }
    supervisor = spawn([sys.executable, "-m", "authz.cli", "serve"], env=env, log=tmp_path / "serve.log")
    agents = None
    last_pids: list[int] = []
    try:
        for index in range(WORKERS):
            wait_http(f"http://127.0.0.1:{metrics + index}/readyz", 60, supervisor, f"worker {index}")
        assert len(child_pids(supervisor.pid)) == WORKERS
        token = mint(
            KeyRing(Secret(MASTER)),
            tenant="acme",
            agent="agent-1",
            tools=["read_invoice"],
            expires=datetime.now(UTC) + timedelta(hours=1),
        )
        agents = _Agents(check_port, token, count=12)
        agents.start()
        _wait_answers(agents, 200)
        assert agents.count() > 200, f"the load did not get going: {agents.failures[:5]}"
        # Both workers answered: 12 connections all hashed onto one worker would be a 1-in-2048 event.
        counted = [_decisions_counted(metrics + index) for index in range(WORKERS)]
        assert all(c > 0 for c in counted), counted

        victim = child_pids(supervisor.pid)[0]
        os.kill(victim, signal.SIGKILL)  # no flush, no shutdown hooks
        before = agents.count()
        _wait_answers(agents, before + 200)  # the surviving worker (and then the restarted one) answer
        assert agents.count() > before, "no answers after the kill"
        # The supervisor replaces the dead worker: a new pid, both metrics ports ready again.
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            pids = child_pids(supervisor.pid)
            if len(pids) == WORKERS and victim not in pids:
                break
            time.sleep(0.1)
        assert victim not in child_pids(supervisor.pid)
        assert len(child_pids(supervisor.pid)) == WORKERS
        for index in range(WORKERS):
            wait_http(f"http://127.0.0.1:{metrics + index}/readyz", 60, supervisor, f"worker {index}")
        last_pids = child_pids(supervisor.pid)
        agents.stop()
        assert not [f for f in agents.failures if f.startswith("denied")], agents.failures[:5]
        # Only connections to the killed worker may have failed, and only as unavailable/cancelled.
        assert set(agents.failures) <= {"StatusCode.UNAVAILABLE", "StatusCode.CANCELLED"}, agents.failures
    finally:
        if agents is not None:
            agents.stop()
        stop_process(supervisor, timeout=20)
    assert supervisor.returncode == 0
    for pid in last_pids:  # the workers went with the supervisor
        assert not Path(f"/proc/{pid}").exists()
    for index in range(WORKERS):  # and nothing listens on their ports (TIME_WAIT aside)
        with socket.socket() as probe:
            probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            probe.bind(("127.0.0.1", metrics + index))

    store = open_store(database_url)
    try:
        result = await verify_chain(store, "acme")
        assert result.ok, result.summary()
        recorded = set()
        async for record in store.iter_events("acme"):
            recorded.add(json.loads(record.event)["tessera"]["decision_id"])
    finally:
        await store.close()
    missing = [d for d in agents.answered if d not in recorded]
    assert not missing, f"{len(missing)} of {len(agents.answered)} answered decisions are not in the chain"
    cli = subprocess.run(
        [sys.executable, "-m", "authz.cli", "audit", "verify", "--tenant", "acme"],
        env={**os.environ, **env},
        capture_output=True,
        text=True,
    )
    assert cli.returncode == 0, cli.stdout + cli.stderr
