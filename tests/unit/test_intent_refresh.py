"""Catalog refresh from the upstream's own tools/list: the demo MCP server (real, uvicorn on 127.0.0.1),
the official mcp SDK client, a real SQLite store; and the tenants-file settings that drive it."""

from __future__ import annotations

import socket
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
import uvicorn

from authz.demo import build_app
from authz.errors import ConfigError, DependencyError, OutboundRefused
from authz.intent import (
    CatalogExtractor,
    CatalogRefresher,
    catalog_for_settings,
    fetch_tools_list,
    refresh_catalogs,
)
from authz.outbound import OutboundClient, OutboundPolicy
from authz.storage import TenantSettings
from authz.storage.sqlite import SQLiteStore
from authz.tenants import apply_tenants_file, parse_tenants_file

DEMO_TOOLS = {"read_invoice", "list_invoices", "transfer_funds", "delete_invoice"}
#: The operator allowlist that lets Tessera reach the loopback upstream these tests run.
LOOPBACK = OutboundPolicy.build(["127.0.0.1"])


async def fetch(url: str) -> dict:
    async with OutboundClient(LOOPBACK, purpose="intent tools/list") as outbound:
        return await fetch_tools_list(url, outbound=outbound, timeout_s=10)


@pytest.fixture(scope="module")
def upstream() -> Iterator[str]:
    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    server = uvicorn.Server(uvicorn.Config(build_app(), log_level="warning", lifespan="on"))
    thread = threading.Thread(target=server.run, kwargs={"sockets": [sock]}, daemon=True)
    thread.start()
    deadline = time.monotonic() + 10
    while not server.started:
        assert thread.is_alive() and time.monotonic() < deadline, "demo server did not start"
        time.sleep(0.02)
    try:
        yield f"http://127.0.0.1:{sock.getsockname()[1]}/mcp"
    finally:
        server.should_exit = True
        thread.join(timeout=10)
        sock.close()


def closed_port_url() -> str:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return f"http://127.0.0.1:{s.getsockname()[1]}/mcp"


async def test_fetch_tools_list_from_a_real_mcp_server(upstream):
    listed = await fetch(upstream)
    assert {tool["name"] for tool in listed["tools"]} == DEMO_TOOLS
    assert all(tool["description"] and tool["inputSchema"] for tool in listed["tools"])


async def test_an_unreachable_upstream_is_a_dependency_error():
    with pytest.raises(DependencyError, match="tools/list failed"):
        await fetch(closed_port_url())


async def test_the_fetch_goes_through_the_outbound_rules(upstream):
    async with OutboundClient(OutboundPolicy.build(), purpose="intent tools/list") as outbound:
        with pytest.raises(OutboundRefused, match="loopback"):  # not allowlisted: refused before connecting
            await fetch_tools_list(upstream, outbound=outbound)
        with pytest.raises(DependencyError, match="URL refused"):
            await fetch_tools_list("file:///etc/passwd", outbound=outbound)


async def test_refresh_stores_the_list_and_the_catalog_follows(tmp_path, upstream):
    store = SQLiteStore(tmp_path / "t.db")
    try:
        await store.put_tenant("demo", TenantSettings(intent_mode="enforce", tools_url=upstream))
        await store.put_tenant("other", TenantSettings(intent_mode="enforce"))
        assert await refresh_catalogs(store, fetch=fetch) == {"demo": "updated (4 tools)"}
        settings = await store.get_tenant("demo")
        assert {tool["name"] for tool in settings.upstream_tools} == DEMO_TOOLS
        assert TenantSettings.from_json(settings.to_json()) == settings  # survives the store's JSON
        assert await refresh_catalogs(store, tenants=["demo", "other"], fetch=fetch) == {
            "demo": "unchanged",
            "other": "no tools_url configured",
        }
        extractor = CatalogExtractor(
            {"demo": catalog_for_settings(settings.catalog, settings.upstream_tools)}
        )
        intent = extractor.extract_now("demo", "Settle the Initech invoice from the operating account.")
        assert "transfer_funds" in intent.allowed_tools and "delete_invoice" not in intent.allowed_tools

        # the upstream goes away: the refresh reports it and the last list stays
        await store.put_tenant(
            "demo",
            TenantSettings(
                intent_mode="enforce", tools_url=closed_port_url(), upstream_tools=settings.upstream_tools
            ),
        )
        outcome = await refresh_catalogs(store, fetch=fetch)
        assert outcome["demo"].startswith("failed:")
        assert (await store.get_tenant("demo")).upstream_tools == settings.upstream_tools
    finally:
        await store.close()


async def test_the_scheduled_refresher_follows_each_tenants_interval(tmp_path, upstream):
    store = SQLiteStore(tmp_path / "t.db")
    await store.put_tenant("fast", TenantSettings(tools_url=upstream, intent_refresh_s=60.0))
    await store.put_tenant("default", TenantSettings(tools_url=upstream))  # the service's 300 s
    await store.put_tenant("none", TenantSettings())
    fetched: list[str] = []

    async def counting_fetch(url: str) -> dict:
        fetched.append(url)
        return await fetch(url)

    now = [1000.0]
    refresher = CatalogRefresher(store, interval_s=300.0, fetch=counting_fetch, clock=lambda: now[0])
    try:
        assert set(await refresher.run_once()) == {"fast", "default"}  # both due at start
        assert len(fetched) == 2 and (await store.get_tenant("fast")).upstream_tools is not None
        now[0] += 30
        assert await refresher.run_once() == {}  # nobody due yet
        now[0] += 31
        assert await refresher.run_once() == {"fast": "unchanged"}
        now[0] += 240  # 301 s after the start: the default interval has passed
        assert set(await refresher.run_once()) == {"default", "fast"}
        # a new tools_url is due at once, whatever the interval
        await store.put_tenant("fast", TenantSettings(tools_url=upstream + "?v=2", intent_refresh_s=60.0))
        now[0] += 1
        assert set(await refresher.run_once()) == {"fast"}
        # an upstream that is down is tried again after RETRY_S, not a whole interval later
        await store.put_tenant("default", TenantSettings(tools_url=closed_port_url()))
        now[0] += 1
        assert (await refresher.run_once())["default"].startswith("failed")
        now[0] += 29
        assert "default" not in await refresher.run_once()
        now[0] += 1
        assert "default" in await refresher.run_once()
    finally:
        await store.close()
    assert len(fetched) == 8


async def test_refresh_refuses_a_list_it_cannot_turn_into_a_catalog(tmp_path):
    store = SQLiteStore(tmp_path / "t.db")
    try:
        await store.put_tenant(
            "demo", TenantSettings(intent_mode="enforce", tools_url="http://upstream.test/mcp")
        )

        async def bad_fetch(url: str) -> dict:
            return {"tools": [{"description": "no name"}]}

        outcome = await refresh_catalogs(store, fetch=bad_fetch)
        assert (
            outcome["demo"].startswith("failed:") and (await store.get_tenant("demo")).upstream_tools is None
        )
    finally:
        await store.close()


def write_tenants(tmp_path: Path, intent: str) -> Path:
    path = tmp_path / "tenants.yaml"
    path.write_text(f"tenants:\n  demo:\n    intent: {intent}\n")
    return path


def test_tenants_file_intent_settings(tmp_path, monkeypatch):
    path = write_tenants(
        tmp_path, "{mode: enforce, undetermined: policy, tools_url: 'http://127.0.0.1:9000/mcp'}"
    )
    settings, _ = parse_tenants_file(path)["demo"]
    assert settings.intent_undetermined == "policy" and settings.tools_url == "http://127.0.0.1:9000/mcp"
    timed, _ = parse_tenants_file(write_tenants(tmp_path, "{mode: enforce, refresh_s: 60}"))["demo"]
    assert timed.intent_refresh_s == 60.0
    with pytest.raises(ConfigError, match="refresh_s"):
        parse_tenants_file(write_tenants(tmp_path, "{mode: enforce, refresh_s: 1}"))
    local = "{mode: enforce, tools_url: '${TESSERA_TEST_UPSTREAM:-http://127.0.0.1:9000}/mcp'}"
    monkeypatch.delenv("TESSERA_TEST_UPSTREAM", raising=False)
    assert (
        parse_tenants_file(write_tenants(tmp_path, local))["demo"][0].tools_url == "http://127.0.0.1:9000/mcp"
    )
    monkeypatch.setenv("TESSERA_TEST_UPSTREAM", "http://127.0.0.1:4242")
    assert (
        parse_tenants_file(write_tenants(tmp_path, local))["demo"][0].tools_url == "http://127.0.0.1:4242/mcp"
    )
    with pytest.raises(ConfigError, match="TESSERA_UNSET_UPSTREAM is not set"):
        parse_tenants_file(
            write_tenants(tmp_path, "{mode: enforce, tools_url: '${TESSERA_UNSET_UPSTREAM}/mcp'}")
        )
    with pytest.raises(ConfigError, match="looks like a secret"):
        parse_tenants_file(
            write_tenants(tmp_path, "{mode: enforce, tools_url: 'http://x/${TESSERA_MASTER_KEY}'}")
        )
    default, _ = parse_tenants_file(write_tenants(tmp_path, "{mode: enforce}"))["demo"]
    assert default.intent_undetermined == "deny" and default.tools_url is None
    assert "intent_undetermined" not in default.to_json()  # settings stored before this read back unchanged
    with pytest.raises(ConfigError, match="undetermined"):
        parse_tenants_file(write_tenants(tmp_path, "{mode: enforce, undetermined: allow}"))
    with pytest.raises(ConfigError, match="tools_url"):
        parse_tenants_file(write_tenants(tmp_path, "{mode: enforce, tools_url: 'file:///etc/passwd'}"))


async def test_applying_the_tenants_file_keeps_the_fetched_list(tmp_path):
    path = write_tenants(tmp_path, "{mode: enforce, tools_url: 'http://127.0.0.1:9000/mcp'}")
    store = SQLiteStore(tmp_path / "t.db")
    try:
        await apply_tenants_file(store, path)
        fetched = (await store.get_tenant("demo")).to_json() | {"upstream_tools": [{"name": "read_invoice"}]}
        await store.put_tenant("demo", TenantSettings.from_json(fetched))
        assert await apply_tenants_file(store, path) == []  # a restart changes nothing
        assert (await store.get_tenant("demo")).upstream_tools == ({"name": "read_invoice"},)
    finally:
        await store.close()


async def test_tessera_intent_refresh_is_the_operators_request(tmp_path, upstream, capsys, monkeypatch):
    import asyncio
    import json

    from authz.cli import main

    db = tmp_path / "t.db"
    store = SQLiteStore(db)
    await store.put_tenant("demo", TenantSettings(intent_mode="enforce", tools_url=upstream))
    await store.close()
    args = ["intent", "refresh", "--database-url", f"sqlite:///{db}", "--var-dir", str(tmp_path / "var")]
    code = await asyncio.to_thread(main, [*args, "--tenant", "demo"])
    refused = json.loads(capsys.readouterr().out)["demo"]
    assert code == 1 and "loopback" in refused  # the upstream is on loopback: refused until allowlisted
    monkeypatch.setenv("TESSERA_OUTBOUND_ALLOW", "127.0.0.1")
    code = await asyncio.to_thread(main, [*args, "--tenant", "demo"])
    assert code == 0 and json.loads(capsys.readouterr().out) == {"demo": "updated (4 tools)"}
    code = await asyncio.to_thread(main, [*args, "--tenant", "nobody-configured"])
    assert code == 1 and json.loads(capsys.readouterr().out) == {"nobody-configured": "unknown tenant"}
    store = SQLiteStore(db)
    await store.put_tenant("plain", TenantSettings(intent_mode="enforce"))
    await store.close()
    code = await asyncio.to_thread(main, [*args, "--tenant", "plain"])
    assert code == 1 and json.loads(capsys.readouterr().out) == {"plain": "no tools_url configured"}


def test_admin_settings_with_a_tools_url_need_no_hand_written_catalog():
    import dataclasses

    from authz.errors import InvalidArgument
    from authz.server.admin.tenants import validated_settings

    fields = {f.name: getattr(TenantSettings(), f.name) for f in dataclasses.fields(TenantSettings)}
    fields["intent_mode"] = "enforce"
    with pytest.raises(InvalidArgument, match="needs a tool catalog"):
        validated_settings(dict(fields))
    fields["tools_url"] = "http://127.0.0.1:9000/mcp"
    assert validated_settings(dict(fields)).tools_url == "http://127.0.0.1:9000/mcp"


def test_a_derived_catalog_binds_tools_list_like_a_hand_written_one():
    from authz.check.directory import TenantView
    from authz.check.listing import binding_catalog

    tools = ({"name": "read_invoice"}, {"name": "delete_invoice", "description": "Delete an invoice."})

    def view(**kw) -> TenantView:
        settings = TenantSettings(intent_mode="enforce", require_prompt=True, **kw)
        return TenantView("demo", settings, None, None, CatalogExtractor({}))

    assert binding_catalog(view(upstream_tools=tools)) == {"read_invoice", "delete_invoice"}
    assert binding_catalog(view()) is None  # nothing fetched or written yet: no restriction to derive
    # with undetermined: policy, the policy may allow a tool for a prompt nothing of which was understood
    assert binding_catalog(view(upstream_tools=tools, intent_undetermined="policy")) is None


async def test_the_mcp_session_connects_to_the_vetted_address_not_a_later_dns_answer(upstream, monkeypatch):
    """The name is vetted once (the outbound client's resolver: 127.0.0.1); the MCP SDK's session then
    connects to that address, never resolving the name itself (socket.getaddrinfo, a STAND-IN for DNS,
    would now answer 192.0.2.1, where nothing listens: the rebinding answer). The name is ``localhost``
    because the demo server, like any MCP SDK server, refuses other Host headers (its own rebinding
    guard), and the Host header keeps the name."""
    real = socket.getaddrinfo
    connect_lookups: list[str] = []

    def getaddrinfo(host, port, *args, **kwargs):
        if host == "localhost":
            connect_lookups.append(host)
            return [(socket.AF_INET, socket.SOCK_STREAM, 6, "", ("192.0.2.1", int(port or 0)))]
        return real(host, port, *args, **kwargs)

    async def vetting_resolver(host: str, port: int) -> list[str]:
        return ["127.0.0.1"]

    monkeypatch.setattr(socket, "getaddrinfo", getaddrinfo)
    url = upstream.replace("127.0.0.1", "localhost")
    async with OutboundClient(LOOPBACK, resolver=vetting_resolver, purpose="intent tools/list") as outbound:
        listed = await fetch_tools_list(url, outbound=outbound, timeout_s=10)
    assert {tool["name"] for tool in listed["tools"]} == DEMO_TOOLS
    assert connect_lookups == []
