"""Metrics and the plain-HTTP health endpoints (/healthz, /readyz, /metrics) on the metrics port."""

from __future__ import annotations

import asyncio
import logging
from collections import Counter
from collections.abc import Callable

from authz.check import Decision

log = logging.getLogger("tessera.http")


class Metrics:
    """Decision counters by outcome and check, and a latency sum, in Prometheus text format."""

    def __init__(self) -> None:
        self.decisions: Counter[tuple[str, str]] = Counter()
        self.latency_us_sum = 0
        self.latency_count = 0
        #: Decisions answered (denied) without their audit event: the store was down.
        self.unrecorded = 0

    def observe(self, decision: Decision) -> None:
        self.decisions[(str(decision.outcome), str(decision.check or "none"))] += 1
        self.latency_us_sum += decision.latency_us
        self.latency_count += 1

    def render(self) -> str:
        lines = [
            "# HELP tessera_decisions_total Decisions by outcome and deciding check.",
            "# TYPE tessera_decisions_total counter",
        ]
        for (outcome, check), count in sorted(self.decisions.items()):
            lines.append(f'tessera_decisions_total{{outcome="{outcome}",check="{check}"}} {count}')
        lines += [
            "# HELP tessera_check_latency_seconds Pipeline latency.",
            "# TYPE tessera_check_latency_seconds summary",
            f"tessera_check_latency_seconds_sum {self.latency_us_sum / 1e6:.6f}",
            f"tessera_check_latency_seconds_count {self.latency_count}",
            "# HELP tessera_unaudited_decisions_total Decisions answered without a committed audit event "
            "(the store was down; kept for writing later or recorded as an outage).",
            "# TYPE tessera_unaudited_decisions_total counter",
            f"tessera_unaudited_decisions_total {self.unrecorded}",
        ]
        return "\n".join(lines) + "\n"


async def serve_http(host: str, port: int, metrics: Metrics, ready: Callable[[], bool]) -> asyncio.Server:
    """Minimal HTTP/1.1: GET /healthz (alive), /readyz (store reachable, tenants loaded), /metrics."""

    async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            request_line = await asyncio.wait_for(reader.readline(), 5)
            while (await asyncio.wait_for(reader.readline(), 5)) not in (b"\r\n", b"\n", b""):
                pass
            parts = request_line.decode("latin-1").split()
            path = parts[1] if len(parts) > 1 else "/"
            if path == "/healthz":
                status, body, ctype = 200, "ok\n", "text/plain"
            elif path == "/readyz":
                ok = ready()
                status, body, ctype = (
                    (200, "ready\n", "text/plain") if ok else (503, "not ready\n", "text/plain")
                )
            elif path == "/metrics":
                status, body, ctype = 200, metrics.render(), "text/plain; version=0.0.4"
            else:
                status, body, ctype = 404, "not found\n", "text/plain"
            data = body.encode()
            reason = {200: "OK", 404: "Not Found", 503: "Service Unavailable"}[status]
            writer.write(
                f"HTTP/1.1 {status} {reason}\r\nContent-Type: {ctype}\r\nContent-Length: {len(data)}\r\n"
                f"Connection: close\r\n\r\n".encode()
                + data
            )
            await writer.drain()
        except (TimeoutError, ConnectionError):
            pass
        finally:
            writer.close()

    return await asyncio.start_server(handle, host, port)
