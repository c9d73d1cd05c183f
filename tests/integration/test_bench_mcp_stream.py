"""Bounded always-run version of ``make bench``'s MCP GET stream row (bench/mcp_stream.py): a stream of
log notifications through the real Envoy's processed stream route arrives whole, through Tessera's real
list processor (one processor stream per GET), beside the unprocessed passthrough route."""

from __future__ import annotations

from pathlib import Path

from bench import mcp_stream
from tests.integration.conftest import start_gateway


def test_the_stream_row_measures_a_processed_and_a_passthrough_stream(tmp_path: Path):
    stack, gateway = start_gateway(tmp_path)  # its check service answers the bench's own Envoy
    try:
        summary = mcp_stream.stream_rows(tmp_path, stack.ports.check, gateway.token(), seconds=1.0)
    finally:
        stack.stop()
    print(mcp_stream.report(summary)[0])
    processed, plain = summary["processed"], summary["passthrough"]
    assert processed["streams"] >= 1 and plain["streams"] >= 1
    assert mcp_stream.ok(summary), summary  # every stream delivered every event
    # every processed GET (and the warm-up) passed the list processor; the passthrough none
    assert summary["processor_streams"] == processed["streams"] + 1
    assert processed["events_per_s"] > 0 and summary["ratio"] > 0
