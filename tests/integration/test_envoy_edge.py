"""The shipped Envoy config follows Envoy's edge-proxy guidance (issue 13 §5), checked on a real Envoy.

The stalled-connection test renders the shipped config (``request_headers_timeout`` 5 s, unchanged) and
runs the real Envoy binary; nothing behind it needs to run, since a request whose headers never complete
never gets as far as the check or the upstream.
"""

from __future__ import annotations

import selectors
import socket
import time
from pathlib import Path

import yaml

from authz.local.envoy_config import SHIPPED_CONFIG, EnvoyProcess, render_envoy_config
from authz.local.stack import free_port

HCM = "envoy.filters.network.http_connection_manager"


def _hcm(doc: dict) -> dict:
    (listener,) = doc["static_resources"]["listeners"]
    (chain,) = listener["filter_chains"]
    return next(f for f in chain["filters"] if f["name"] == HCM)["typed_config"]


def test_shipped_config_sets_the_edge_limits():
    doc = yaml.safe_load(SHIPPED_CONFIG.read_text())
    hcm = _hcm(doc)
    assert hcm["request_headers_timeout"] == "5s"
    assert hcm["request_timeout"] and hcm["stream_idle_timeout"]
    assert hcm["common_http_protocol_options"]["idle_timeout"]
    assert hcm["max_request_headers_kb"] <= 60
    assert hcm["common_http_protocol_options"]["max_headers_count"] <= 100
    assert hcm["http2_protocol_options"]["max_concurrent_streams"] <= 100
    (listener,) = doc["static_resources"]["listeners"]
    assert listener["per_connection_buffer_limit_bytes"] == 32768
    upstream = next(c for c in doc["static_resources"]["clusters"] if c["name"] == "demo_upstream")
    assert upstream["per_connection_buffer_limit_bytes"] == 32768
    monitors = {m["name"] for m in doc["overload_manager"]["resource_monitors"]}
    assert {
        "envoy.resource_monitors.fixed_heap",
        "envoy.resource_monitors.global_downstream_max_connections",
    } <= monitors
    actions = {a["name"] for a in doc["overload_manager"]["actions"]}
    assert {"envoy.overload_actions.shrink_heap", "envoy.overload_actions.stop_accepting_requests"} <= actions
    runtime = doc["layered_runtime"]["layers"][0]["static_layer"]
    assert runtime["envoy.resource_limits.listener.tessera_ingress.connection_limit"] > 0


def test_200_stalled_connections_are_closed_after_the_header_timeout(tmp_path: Path):
    listen, admin = free_port(), free_port()
    config = tmp_path / "envoy.yaml"
    config.write_text(
        render_envoy_config(
            listen_port=listen,
            admin_port=admin,
            check_endpoints=[("127.0.0.1", free_port())],
            upstream=("127.0.0.1", free_port()),
        )
    )
    with EnvoyProcess(config, admin_port=admin, log_path=tmp_path / "envoy.log") as envoy:
        sockets = []
        for i in range(200):
            sock = socket.create_connection(("127.0.0.1", listen), timeout=5)
            # A request line and one header, then nothing: the headers never complete (slowloris).
            sock.sendall(f"POST /v1/mcp HTTP/1.1\r\nHost: gw\r\nX-Stall: {i}\r\n".encode())
            sock.setblocking(False)
            sockets.append(sock)
        started = time.monotonic()
        selector = selectors.DefaultSelector()
        for sock in sockets:
            selector.register(sock, selectors.EVENT_READ)
        closed: dict[socket.socket, float] = {}
        while len(closed) < len(sockets) and time.monotonic() - started < 10:
            for key, _ in selector.select(timeout=0.5):
                sock = key.fileobj
                try:
                    data = sock.recv(65536)
                except ConnectionResetError:
                    data = b""
                if not data:  # EOF: Envoy closed the connection (after a 408, read first)
                    closed[sock] = time.monotonic() - started
                    selector.unregister(sock)
        for sock in sockets:
            sock.close()
        assert len(closed) == 200, f"{200 - len(closed)} stalled connections still open after 10 s"
        assert min(closed.values()) >= 4  # closed by the 5 s header timeout, not at once
        stats = envoy.stats("http.tessera_ingress.downstream_rq_header_timeout")
        assert stats["http.tessera_ingress.downstream_rq_header_timeout"] == 200
