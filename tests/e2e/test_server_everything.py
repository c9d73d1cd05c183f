"""The official TypeScript reference server (`@modelcontextprotocol/server-everything`, stateful sessions,
SSE answers) behind Envoy and Tessera, driven by the official Python `mcp` client.

The npm package is installed once into a cache directory (`TESSERA_NPM_CACHE`, default
`~/.cache/tessera-npm`) with npm; Node 20 runs it.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import shutil
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import httpx2
import pytest
from mcp import ClientSession
from mcp.client.streamable_http import streamable_http_client

from authz.local.stack import StackPorts, spawn, stop_process
from tests.integration.conftest import Gateway, start_gateway

PACKAGE = "@modelcontextprotocol/server-everything@2026.8.31"
ALLOW_ALL = 'package tessera\nimport rego.v1\ndecision := {"allow": true, "reason": "everything tenant"}\n'


def _server_everything() -> Path:
    cache = Path(os.environ.get("TESSERA_NPM_CACHE", Path.home() / ".cache" / "tessera-npm"))
    entry = cache / "node_modules/@modelcontextprotocol/server-everything/dist/index.js"
    if not entry.exists():
        npm = shutil.which("npm")
        assert npm, "npm is needed for the server-everything tests (apt-get install nodejs npm)"
        cache.mkdir(parents=True, exist_ok=True)
        subprocess.run([npm, "install", "--silent", "--prefix", str(cache), PACKAGE], check=True, timeout=300)
    return entry


@contextlib.contextmanager
def everything_gateway(workdir: Path, policy_source: str) -> Iterator[Gateway]:
    """server-everything as the upstream of a full stack whose tenant ``ev`` runs ``policy_source``
    (intent off); both stop when the block ends."""
    entry = _server_everything()
    (workdir / "ev.rego").write_text(policy_source)
    tenants = workdir / "tenants.yaml"
    tenants.write_text(
        f'tenants:\n  ev:\n    intent:\n      mode: "off"\n    policy: {workdir / "ev.rego"}\n'
    )
    ports = StackPorts.free()
    node = spawn(
        [shutil.which("node") or "node", str(entry), "streamableHttp"],
        env={"PORT": str(ports.upstream)},
        log=workdir / "server-everything.log",
    )
    try:
        # The reference server has no health endpoint: a GET without a session answers 400 once it listens.
        wait_http_any(f"http://127.0.0.1:{ports.upstream}/mcp", node)
        stack, gw = start_gateway(
            workdir, ports=ports, start_upstream=False, env={"TESSERA_TENANTS_FILE": str(tenants)}
        )
        try:
            yield gw
        finally:
            stack.stop()
    finally:
        stop_process(node)


@pytest.fixture(scope="module")
def everything(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Gateway]:
    with everything_gateway(tmp_path_factory.mktemp("everything"), ALLOW_ALL) as gw:
        yield gw


def wait_http_any(url: str, proc: subprocess.Popen, timeout: float = 30.0) -> None:
    import time

    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        assert proc.poll() is None, "server-everything exited"
        try:
            httpx.get(url, timeout=0.5)
            return
        except httpx.HTTPError:
            time.sleep(0.1)
    raise TimeoutError(url)


async def test_sessions_filtered_lists_and_a_long_operation_with_progress(everything: Gateway):
    token = everything.token("ev")
    progress: list[float] = []

    async def on_progress(value: float, total: float | None, message: str | None) -> None:
        progress.append(value)

    async with (
        httpx2.AsyncClient(headers={"Authorization": f"Bearer {token}"}, timeout=60) as http,
        streamable_http_client(f"{everything.url}/v1/mcp", http_client=http) as (read, write),
        ClientSession(read, write) as session,
    ):
        init = await session.initialize()
        assert init.capabilities.tools is not None and init.capabilities.tools.list_changed
        names = {t.name for t in (await session.list_tools()).tools}
        assert {"echo", "get-sum", "trigger-long-running-operation"} <= names
        assert (await session.list_prompts()).prompts and (await session.list_resources()).resources
        echoed = await session.call_tool("echo", {"message": "through Tessera"})
        assert "through Tessera" in echoed.content[0].text
        result = await session.call_tool(
            "trigger-long-running-operation", {"duration": 4, "steps": 4}, progress_callback=on_progress
        )
        assert not result.is_error and progress == [1.0, 2.0, 3.0, 4.0]


async def test_an_attenuated_token_lists_only_its_tool_on_a_stateful_server(everything: Gateway):
    token = everything.token("ev", tools=["echo"])
    async with (
        httpx2.AsyncClient(headers={"Authorization": f"Bearer {token}"}, timeout=60) as http,
        streamable_http_client(f"{everything.url}/v1/mcp", http_client=http) as (read, write),
        ClientSession(read, write) as session,
    ):
        await session.initialize()
        assert [t.name for t in (await session.list_tools()).tools] == ["echo"]


def test_a_denied_delete_is_401_and_the_session_lives_on(everything: Gateway):
    token = everything.token("ev")
    init = everything.mcp(
        {
            "jsonrpc": "2.0",
            "id": 1,
            "method": "initialize",
            "params": {
                "protocolVersion": "2025-06-18",
                "capabilities": {},
                "clientInfo": {"name": "t", "version": "1"},
            },
        },
        token,
    )
    session = init.headers["mcp-session-id"]
    denied = httpx.delete(f"{everything.url}/v1/mcp", headers={"mcp-session-id": session}, timeout=10)
    assert denied.status_code == 401
    ping = everything.mcp(
        {"jsonrpc": "2.0", "id": 2, "method": "ping"}, token, headers={"mcp-session-id": session}
    )
    assert ping.status_code == 200 and "result" in ping.text
    ended = httpx.delete(
        f"{everything.url}/v1/mcp",
        headers={"mcp-session-id": session, "authorization": f"Bearer {token}"},
        timeout=10,
    )
    assert ended.status_code == 200


# -- a resumed GET stream replays earlier list results: they are filtered for the caller who resumes --------

INITIALIZE = {
    "jsonrpc": "2.0",
    "id": 1,
    "method": "initialize",
    "params": {
        "protocolVersion": "2025-06-18",
        "capabilities": {},
        "clientInfo": {"name": "t", "version": "1"},
    },
}


def _sse_events(text: str) -> list[tuple[str | None, dict]]:
    """(id, JSON message) of each SSE event that carries data."""
    events = []
    for block in text.replace("\r\n", "\n").split("\n\n"):
        event_id, data = None, []
        for line in block.split("\n"):
            if line.startswith("id:"):
                event_id = line[3:].strip()
            elif line.startswith("data:"):
                data.append(line[5:].lstrip())
        if data and "".join(data).strip():
            events.append((event_id, json.loads("\n".join(data))))
    return events


def _replayed_list(url: str, headers: dict[str, str], request_id: int) -> list[str]:
    """GET the stream with Last-Event-ID and read until the replayed answer to ``request_id`` arrives."""
    seen = ""
    deadline = time.monotonic() + 20
    with httpx.stream("GET", url, headers=headers, timeout=20) as response:
        assert response.status_code == 200, response.read()
        for chunk in response.iter_text():
            seen += chunk
            for _, message in _sse_events(seen):
                if message.get("id") == request_id:
                    if "error" in message:
                        return [f"error {message['error']['code']}"]
                    return [tool["name"] for tool in message["result"]["tools"]]
            assert time.monotonic() < deadline, seen
    raise AssertionError(f"the replay did not carry the answer to {request_id}: {seen!r}")


def test_a_stream_resumed_with_last_event_id_replays_the_list_filtered_for_the_resuming_token(
    everything: Gateway,
):
    full = everything.token("ev")
    init = everything.mcp(INITIALIZE, full)
    session = init.headers["mcp-session-id"]
    (init_event, _), *_ = _sse_events(init.text)
    assert init_event, "the reference server numbers its events (resumability on)"
    common = {"mcp-session-id": session, "mcp-protocol-version": "2025-06-18"}
    everything.mcp({"jsonrpc": "2.0", "method": "notifications/initialized"}, full, headers=common)
    listed = everything.mcp({"jsonrpc": "2.0", "id": 2, "method": "tools/list"}, full, headers=common)
    assert len(_sse_events(listed.text)[0][1]["result"]["tools"]) > 1
    resume = {**common, "accept": "text/event-stream", "last-event-id": init_event}

    # Straight to the server, the replay holds the whole list (this is what must not leak) ...
    upstream = f"http://127.0.0.1:{everything.stack.ports.upstream}/mcp"
    assert len(_replayed_list(upstream, resume, 2)) > 1

    # ... through Tessera, a token narrowed to echo that resumes the stream gets only echo.
    narrowed = everything.token("ev", tools=["echo"])
    replayed = _replayed_list(
        f"{everything.url}/v1/mcp", {**resume, "authorization": f"Bearer {narrowed}"}, 2
    )
    assert replayed == ["echo"]


async def test_notifications_keep_arriving_on_the_get_stream_that_the_list_processor_watches(
    everything: Gateway,
):
    """The GET stream passes the list processor chunk by chunk (STREAMED): server notifications on it are
    not held back, and the stream outlives the processor's per-message timeout (1 s) many times over."""
    name = "http.tessera_ingress.ext_proc.tessera_list.streams_started"
    before = int(everything.stack.envoy.stats(name).get(name, 0))
    logs: list[float] = []

    async def on_log(params) -> None:
        logs.append(time.monotonic())

    token = everything.token("ev")
    async with (
        httpx2.AsyncClient(headers={"Authorization": f"Bearer {token}"}, timeout=60) as http,
        streamable_http_client(f"{everything.url}/v1/mcp", http_client=http) as (read, write),
        ClientSession(read, write, logging_callback=on_log) as session,
    ):
        await session.initialize()
        await session.call_tool("toggle-simulated-logging", {})  # a log message every 5 s, on the GET stream
        started = time.monotonic()
        while len(logs) < 3 and time.monotonic() - started < 30:
            await asyncio.sleep(0.5)
        await session.call_tool("toggle-simulated-logging", {})
    assert len(logs) >= 3, logs
    assert logs[-1] - logs[0] >= 8  # one stream, open across several notifications
    assert int(everything.stack.envoy.stats(name).get(name, 0)) > before  # the GET stream was processed
