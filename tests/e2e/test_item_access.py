"""A prompt or resource hidden from a caller's list cannot be read either, through real Envoy.

Upstream: the official reference server `@modelcontextprotocol/server-everything` (real prompts and
resources); client: the official Python `mcp` SDK. The tenant's policy hides one prompt and one resource:
they are missing from the lists, and ``prompts/get``, ``resources/read``, ``resources/subscribe`` and
``resources/unsubscribe`` of them are denied (-32012, audited) while the listed ones work.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path

import httpx2
import pytest
from mcp import ClientSession
from mcp.client.streamable_http import streamable_http_client
from mcp.shared.exceptions import MCPError

from authz.token import attenuate
from tests.e2e.test_server_everything import everything_gateway
from tests.integration.conftest import Gateway
from tests.sqlite_raw import raw_sqlite

HIDDEN_PROMPT = "args-prompt"
HIDDEN_RESOURCE = "demo://resource/static/document/architecture.md"
SHOWN_RESOURCE = "demo://resource/static/document/features.md"

ITEMS_POLICY = f"""package tessera
import rego.v1
default decision := {{"allow": false, "reason": "default deny"}}
decision := {{"allow": true, "reason": "tools pass"}} if input.kind == "tool"
decision := {{"allow": true, "reason": "tools pass"}} if not input.kind
decision := {{"allow": true, "reason": "prompt shown"}} if {{
    input.kind == "prompt"
    input.prompt != "{HIDDEN_PROMPT}"
}}
decision := {{"allow": true, "reason": "resource shown"}} if {{
    input.kind in {{"resource", "resource_template"}}
    input.resource != "{HIDDEN_RESOURCE}"
}}
"""


@pytest.fixture(scope="module")
def items(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Gateway]:
    with everything_gateway(tmp_path_factory.mktemp("items"), ITEMS_POLICY) as gw:
        yield gw


def _session(gw: Gateway, token: str):
    http = httpx2.AsyncClient(headers={"Authorization": f"Bearer {token}"}, timeout=30)
    return http, streamable_http_client(f"{gw.url}/v1/mcp", http_client=http)


async def test_a_hidden_prompt_is_not_listed_and_its_get_is_denied_a_listed_one_works(items: Gateway):
    http, transport = _session(items, items.token("ev"))
    async with http, transport as (read, write), ClientSession(read, write) as session:
        await session.initialize()
        names = {p.name for p in (await session.list_prompts()).prompts}
        assert "simple-prompt" in names and HIDDEN_PROMPT not in names
        shown = await session.get_prompt("simple-prompt")
        assert shown.messages
        with pytest.raises(MCPError) as denied:
            await session.get_prompt(HIDDEN_PROMPT, {"city": "Paris"})
        assert denied.value.error.code == -32012
        assert HIDDEN_PROMPT in denied.value.error.data["reason"]


async def test_a_hidden_resource_is_not_listed_and_its_read_and_subscribe_are_denied(items: Gateway):
    http, transport = _session(items, items.token("ev"))
    async with http, transport as (read, write), ClientSession(read, write) as session:
        await session.initialize()
        uris = {str(r.uri) for r in (await session.list_resources()).resources}
        assert SHOWN_RESOURCE in uris and HIDDEN_RESOURCE not in uris
        contents = (await session.read_resource(SHOWN_RESOURCE)).contents
        assert contents and contents[0].text
        for attempt in (session.read_resource, session.subscribe_resource, session.unsubscribe_resource):
            with pytest.raises(MCPError) as denied:
                await attempt(HIDDEN_RESOURCE)
            assert denied.value.error.code == -32012, attempt
        await session.subscribe_resource(SHOWN_RESOURCE)
        await session.unsubscribe_resource(SHOWN_RESOURCE)


def test_a_denied_read_is_audited_with_its_item(items: Gateway):
    reply = items.mcp(
        {"jsonrpc": "2.0", "id": 9, "method": "resources/read", "params": {"uri": HIDDEN_RESOURCE}},
        items.token("ev"),
    )
    error = reply.json()["error"]
    assert reply.status_code == 200 and error["code"] == -32012
    events = _events(items.stack.workdir / "tessera.db", "ev")
    audited = [
        e["tessera"] for e in events if e["tessera"].get("decision_id") == error["data"]["decision_id"]
    ]
    assert len(audited) == 1
    assert audited[0]["decision"] == "deny" and audited[0]["check"] == "policy"
    assert audited[0]["item"] == HIDDEN_RESOURCE and audited[0]["rpc_method"] == "resources/read"


def _events(db: Path, tenant: str) -> list[dict]:
    with raw_sqlite(db) as conn:
        rows = conn.execute(
            "SELECT event FROM audit_events WHERE tenant = ? ORDER BY seq", (tenant,)
        ).fetchall()
    return [json.loads(r[0]) for r in rows]


async def test_prompts_and_resources_caveats_narrow_the_lists_and_the_reads(items: Gateway):
    """A token attenuated to one prompt and one resource prefix sees and reads only those (-32010 for the
    rest), on top of what the policy hides."""
    token = attenuate(
        items.token("ev"), ["prompts = simple-prompt", "resources = demo://resource/static/document/f"]
    )
    http, transport = _session(items, token)
    async with http, transport as (read, write), ClientSession(read, write) as session:
        await session.initialize()
        assert [p.name for p in (await session.list_prompts()).prompts] == ["simple-prompt"]
        assert [str(r.uri) for r in (await session.list_resources()).resources] == [SHOWN_RESOURCE]
        assert (await session.get_prompt("simple-prompt")).messages
        assert (await session.read_resource(SHOWN_RESOURCE)).contents
        with pytest.raises(MCPError) as denied:
            await session.get_prompt("resource-prompt", {"resourceType": "Text", "resourceId": "1"})
        assert denied.value.error.code == -32010
        with pytest.raises(MCPError) as denied:
            await session.read_resource("demo://resource/static/document/structure.md")
        assert denied.value.error.code == -32010
