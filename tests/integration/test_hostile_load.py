"""Bounded always-run version of ``make bench``'s hostile-load row (issue 13 §2): tokenless clients send
~800 KB, 80,000-key objects and 5,000-level nesting through the real Envoy while agents make ordinary
calls; the agents' calls keep succeeding and the check process's memory, measured after ordinary calls
have warmed it, does not climb and stay up.
(Before the fix: half of the legitimate calls failed and the process grew from 85 to 487 MB.)"""

from __future__ import annotations

from pathlib import Path

from bench.hostile import run_hostile_load
from tests.integration.conftest import start_gateway

READ_CALL = {
    "jsonrpc": "2.0",
    "id": 1,
    "method": "tools/call",
    "params": {"name": "read_invoice", "arguments": {"invoice_id": "INV-1001"}},
}


def test_legitimate_calls_succeed_beside_hostile_tokenless_bodies(tmp_path: Path):
    # The shipped deadlines (Envoy's ext_authz timeout 500 ms, the check's 450 ms), not the test suite's
    # generous ones: the point is that hostile bodies cannot push legitimate checks past them.
    stack, gateway = start_gateway(tmp_path, check_timeout_ms=500, env={"TESSERA_DEADLINE_MS": "450"})
    try:
        _measure(gateway)
    finally:
        stack.stop()


def _measure(gateway) -> None:
    pid = gateway.stack.checks[0].proc.pid
    result = run_hostile_load(
        f"{gateway.url}/v1/mcp", gateway.token(), READ_CALL, pid, seconds=4, hostile=4, legit=2
    )
    print(result.summary())
    assert result.hostile_sent >= 20 and result.legit_sent >= 20
    assert result.success_rate >= 0.99, result.summary()
    assert result.rss_after_mb - result.rss_before_mb < 25, result.summary()
