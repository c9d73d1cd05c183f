"""kill -9 of the check service under load: every decision an agent received is in the audit chain."""

from __future__ import annotations

import json
import subprocess
import sys
import threading
import time

import httpx

from authz.audit import verify_chain
from authz.storage import open_store
from tests.integration.conftest import start_gateway

READ = {
    "jsonrpc": "2.0",
    "id": 1,
    "method": "tools/call",
    "params": {"name": "read_invoice", "arguments": {"invoice_id": "INV-1001"}},
}
DELETE = {
    "jsonrpc": "2.0",
    "id": 2,
    "method": "tools/call",
    "params": {"name": "delete_invoice", "arguments": {"invoice_id": "INV-1001"}},
}


async def test_kill_9_under_load_loses_no_answered_decision(tmp_path):
    stack, gw = start_gateway(tmp_path)
    try:
        token = gw.token()
        answered: list[str] = []
        failures: list[int] = []
        stop = threading.Event()
        lock = threading.Lock()

        def agent(worker: int) -> None:
            with httpx.Client(timeout=5) as client:
                n = 0
                while not stop.is_set():
                    body = READ if (n + worker) % 3 else DELETE
                    n += 1
                    try:
                        response = client.post(
                            f"{gw.url}/v1/mcp",
                            content=json.dumps(body),
                            headers={"authorization": f"Bearer {token}", "content-type": "application/json"},
                        )
                    except httpx.HTTPError:
                        continue
                    decision_id = response.headers.get("x-tessera-decision-id")
                    with lock:
                        if decision_id:
                            answered.append(decision_id)
                        else:
                            failures.append(response.status_code)

        workers = [threading.Thread(target=agent, args=(i,)) for i in range(8)]
        for thread in workers:
            thread.start()
        # Kill once the load is going, however busy the machine is (bounded: the assertion below says
        # when it never got going).
        started = time.monotonic()
        while time.monotonic() - started < 30:
            with lock:
                if len(answered) > 100:
                    break
            time.sleep(0.05)
        stack.checks[0].kill()  # SIGKILL: no flush, no shutdown hooks
        time.sleep(0.3)
        stop.set()
        for thread in workers:
            thread.join()
        assert len(answered) > 50, "the load did not get going"
        assert all(status == 503 for status in failures)

        stack.checks[0].start()  # restart on the same database
        store = open_store(f"sqlite:///{tmp_path / 'tessera.db'}")
        try:
            result = await verify_chain(store, "demo")
            assert result.ok, result.summary()
            recorded = set()
            async for record in store.iter_events("demo"):
                recorded.add(json.loads(record.event)["tessera"]["decision_id"])
            missing = [d for d in answered if d not in recorded]
            assert not missing, f"{len(missing)} answered decisions are not in the audit chain"
        finally:
            await store.close()
        cli = subprocess.run(
            [sys.executable, "-m", "authz.cli", "audit", "verify", "--tenant", "demo"],
            env={**stack.checks[0].env},
            capture_output=True,
            text=True,
        )
        assert cli.returncode == 0, cli.stdout + cli.stderr
    finally:
        stack.stop()
