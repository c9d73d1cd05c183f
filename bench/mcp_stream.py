"""The MCP GET stream row of `make bench`: what the list processor costs a long-lived server stream.

Every MCP GET stream passes Tessera's list processor chunk by chunk (ext_proc ``STREAMED``, see
docs/mcp.md "Resumed streams"): each event's JSON is parsed, any list result in it filtered, and the
event re-encoded. This row measures events per second through that route (``GET /v1/mcp`` with a token:
ext_authz, then the processor) against the same events through an unprocessed passthrough route on the
same Envoy (no ext_authz, no ext_proc), from an upstream that writes a stream of MCP log notifications as
fast as it can (a subprocess of this module, so it does not share the client's interpreter).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import sys
import time
from pathlib import Path
from typing import Any

import httpx
import yaml

from authz.local.envoy_config import UPSTREAM_CLUSTER, EnvoyProcess, render_envoy_config
from authz.local.stack import free_port, spawn, stop_process, wait_listening
from bench.listing import STREAMS_STAT

#: Events per stream; a run repeats streams for the row's duration.
EVENTS = 5000
_EVENT = {
    "jsonrpc": "2.0",
    "method": "notifications/message",
    "params": {"level": "info", "logger": "bench", "data": "a log line the server sends on its stream " * 3},
}
PASSTHROUGH = "/bench-stream-passthrough"
_FILTER_CONFIG = "type.googleapis.com/envoy.config.route.v3.FilterConfig"
_EXT_AUTHZ_PER_ROUTE = "type.googleapis.com/envoy.extensions.filters.http.ext_authz.v3.ExtAuthzPerRoute"


def _payload(events: int) -> bytes:
    line = b"event: message\ndata: " + json.dumps(_EVENT, separators=(",", ":")).encode() + b"\n\n"
    return line * events


async def _serve(port: int, events: int) -> None:
    """A minimal HTTP/1.1 upstream: any request gets the event stream, then the connection closes."""
    payload = _payload(events)
    head = (
        b"HTTP/1.1 200 OK\r\ncontent-type: text/event-stream\r\n"
        b"cache-control: no-cache\r\nconnection: close\r\n\r\n"
    )

    async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            await reader.readuntil(b"\r\n\r\n")
            writer.write(head)
            for at in range(0, len(payload), 16384):
                writer.write(payload[at : at + 16384])
                await writer.drain()
        except (ConnectionError, asyncio.IncompleteReadError):
            pass
        finally:
            writer.close()

    server = await asyncio.start_server(handle, "127.0.0.1", port)
    async with server:
        await server.serve_forever()


def _config(workdir: Path, listen: int, admin: int, check_port: int, upstream: int) -> Path:
    doc = yaml.safe_load(
        render_envoy_config(
            listen_port=listen,
            admin_port=admin,
            check_endpoints=[("127.0.0.1", check_port)],
            upstream=("127.0.0.1", upstream),
            check_timeout_ms=1000,
        )
    )
    hcm = doc["static_resources"]["listeners"][0]["filter_chains"][0]["filters"][0]["typed_config"]
    routes = hcm["route_config"]["virtual_hosts"][0]["routes"]
    routes.insert(
        0,
        {
            "name": "bench_stream_passthrough",
            "match": {"path": PASSTHROUGH},
            "route": {"cluster": UPSTREAM_CLUSTER, "timeout": "0s"},
            "typed_per_filter_config": {
                "envoy.filters.http.ext_authz": {"@type": _EXT_AUTHZ_PER_ROUTE, "disabled": True},
                "envoy.filters.http.grpc_json_transcoder": {"@type": _FILTER_CONFIG, "disabled": True},
            },
        },
    )
    path = workdir / "envoy-stream.yaml"
    path.write_text(yaml.safe_dump(doc, sort_keys=False))
    return path


def _stream_once(client: httpx.Client, url: str, headers: dict[str, str]) -> int:
    """Events received on one GET stream (counted by their blank-line boundaries)."""
    events, tail = 0, b""
    with client.stream("GET", url, headers=headers) as response:
        if response.status_code != 200:
            raise RuntimeError(f"GET {url}: HTTP {response.status_code}: {response.read()[:200]!r}")
        for chunk in response.iter_raw():
            joined = tail + chunk
            events += joined.count(b"\n\n")
            tail = joined[-1:]
    return events


def _rate(url: str, headers: dict[str, str], seconds: float) -> dict[str, Any]:
    events = streams = short = 0
    with httpx.Client(timeout=60) as client:
        _stream_once(client, url, headers)  # warm-up: connections, the processor's first stream
        started = time.perf_counter()
        while time.perf_counter() - started < seconds:
            got = _stream_once(client, url, headers)
            events += got
            streams += 1
            short += got != EVENTS
        elapsed = time.perf_counter() - started
    return {"events_per_s": events / elapsed, "streams": streams, "incomplete": short}


def stream_rows(workdir: Path, check_port: int, token: str, seconds: float) -> dict[str, Any]:
    """Events/s through the processed GET stream route and through the passthrough, one Envoy, one run."""
    upstream = free_port()
    server = spawn(
        [sys.executable, "-m", "bench.mcp_stream", "--serve", str(upstream)],
        log=workdir / "stream-upstream.log",
    )
    listen, admin = free_port(), free_port()
    envoy = EnvoyProcess(
        _config(workdir, listen, admin, check_port, upstream),
        admin_port=admin,
        log_path=workdir / "envoy-stream.log",
    )
    try:
        wait_listening(upstream, 30, server, "the stream upstream")
        envoy.start()
        envoy.wait_ready(30)
        base = f"http://127.0.0.1:{listen}"
        accept = {"accept": "text/event-stream"}
        plain = _rate(base + PASSTHROUGH, accept, seconds / 2)
        processed = _rate(base + "/v1/mcp", {**accept, "authorization": f"Bearer {token}"}, seconds / 2)
        stats = envoy.stats(STREAMS_STAT)
    finally:
        envoy.stop()
        stop_process(server)
    return {
        "passthrough": plain,
        "processed": processed,
        "processor_streams": int(sum(stats.values())),
        "ratio": processed["events_per_s"] / plain["events_per_s"] if plain["events_per_s"] else 0.0,
    }


def report(summary: dict[str, Any]) -> list[str]:
    plain, processed = summary["passthrough"], summary["processed"]
    ok = processed["incomplete"] == 0 and plain["incomplete"] == 0
    ok = ok and summary["processor_streams"] >= processed["streams"]
    return [
        f"MCP GET stream ({EVENTS} log notifications per stream): processed {processed['events_per_s']:,.0f} "
        f"vs passthrough {plain['events_per_s']:,.0f} events/s (x{summary['ratio']:.2f}); "
        f"{processed['streams']} + {plain['streams']} streams, {summary['processor_streams']} processor "
        f"streams ({'OK' if ok else 'INCOMPLETE STREAMS OR UNPROCESSED'})"
    ]


def ok(summary: dict[str, Any]) -> bool:
    return summary["processed"]["incomplete"] == 0 and summary["passthrough"]["incomplete"] == 0


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description="the MCP GET stream bench's upstream")
    parser.add_argument("--serve", type=int, required=True, help="port to serve the event stream on")
    parser.add_argument("--events", type=int, default=EVENTS)
    args = parser.parse_args()
    asyncio.run(_serve(args.serve, args.events))
