"""`tessera run` (what `make run` starts): on PostgreSQL with two replicas, then stopped by SIGTERM."""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
import time

import httpx

from authz.local.stack import free_port
from tests.pg import pg_fixtures

pg_cluster, pg_url = pg_fixtures()


def test_tessera_run_on_postgres_with_two_replicas(tmp_path, pg_url: str):
    listen = free_port()
    env = {
        **os.environ,
        "TESSERA_CHECK_PORT": str(free_port()),
        "TESSERA_ADMIN_PORT": str(free_port()),
        "TESSERA_METRICS_PORT": str(free_port()),
        "TESSERA_ADMIN_METRICS_PORT": str(free_port()),
        "TESSERA_DEMO_PORT": str(free_port()),
        "TESSERA_ENVOY_ADMIN_PORT": str(free_port()),
    }
    env.pop("TESSERA_MASTER_KEY", None)
    run = subprocess.Popen(
        [sys.executable, "-m", "authz.cli", "run", "--var-dir", str(tmp_path), "--port", str(listen),
         "--database-url", pg_url, "--replicas", "2"],
        env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
    )  # fmt: skip
    output = ""
    try:
        deadline = time.monotonic() + 90
        while "Ctrl-C stops everything" not in output:
            assert time.monotonic() < deadline and run.poll() is None, output
            output += run.stdout.readline()
        assert "PostgreSQL" in output
        token = re.search(r"export TOKEN=(\S+)", output).group(1)
        check_ports = re.search(r"check service\s+(\S+), (\S+) \(gRPC", output)
        assert check_ports, output  # two replicas listed
        for _ in range(6):
            reply = httpx.post(
                f"http://127.0.0.1:{listen}/v1/tool-call",
                json={"tool": "read_invoice", "arguments": {"invoice_id": "INV-1001"}},
                headers={"authorization": f"Bearer {token}"},
                timeout=10,
            )
            assert reply.status_code == 200 and "INV-1001" in reply.text, reply.text
        children = subprocess.run(
            ["pgrep", "-P", str(run.pid)], capture_output=True, text=True
        ).stdout.split()
        assert len(children) == 5, children  # demo upstream, 2 check replicas, admin service, Envoy
    finally:
        run.send_signal(signal.SIGTERM)
        run.wait(30)
    time.sleep(0.5)
    alive = [pid for pid in children if os.path.exists(f"/proc/{pid}") and _not_zombie(pid)]
    assert alive == [], "tessera run left processes behind"


def _not_zombie(pid: str) -> bool:
    try:
        with open(f"/proc/{pid}/stat") as stat:
            return stat.read().split(")")[-1].split()[0] != "Z"
    except OSError:
        return False
