"""The plain-HTTP endpoints on a service's metrics port: /healthz, /readyz and /metrics."""

from __future__ import annotations

import asyncio
from collections.abc import Callable

from prometheus_client import CollectorRegistry
from prometheus_client.exposition import choose_encoder

_REASONS = {200: "OK", 404: "Not Found", 503: "Service Unavailable"}


async def serve_http(
    host: str, port: int, registry: CollectorRegistry, ready: Callable[[], bool]
) -> asyncio.Server:
    """Minimal HTTP/1.1: GET /healthz (alive), /readyz (``ready()``), /metrics.

    /metrics answers in the Prometheus text format, or in OpenMetrics (with exemplars) when the scraper's
    ``Accept`` header asks for it, as Prometheus does.
    """

    async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            request_line = await asyncio.wait_for(reader.readline(), 5)
            accept = ""
            while (line := await asyncio.wait_for(reader.readline(), 5)) not in (b"\r\n", b"\n", b""):
                name, _, value = line.decode("latin-1").partition(":")
                if name.strip().lower() == "accept":
                    accept = value.strip()
            parts = request_line.decode("latin-1").split()
            path = parts[1].split("?", 1)[0] if len(parts) > 1 else "/"
            if path == "/healthz":
                status, data, ctype = 200, b"ok\n", "text/plain"
            elif path == "/readyz":
                ok = ready()
                status, data, ctype = (
                    (200, b"ready\n", "text/plain") if ok else (503, b"not ready\n", "text/plain")
                )
            elif path == "/metrics":
                encoder, ctype = choose_encoder(accept)
                status, data = 200, encoder(registry)
            else:
                status, data, ctype = 404, b"not found\n", "text/plain"
            writer.write(
                f"HTTP/1.1 {status} {_REASONS[status]}\r\nContent-Type: {ctype}\r\n"
                f"Content-Length: {len(data)}\r\nConnection: close\r\n\r\n".encode()
                + data
            )
            await writer.drain()
        except (TimeoutError, ConnectionError):
            pass
        finally:
            writer.close()

    return await asyncio.start_server(handle, host, port)
