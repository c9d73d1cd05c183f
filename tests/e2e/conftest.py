"""The real stack for the agent SDK's end-to-end tests: Envoy, the check service, the demo MCP server.

One session stack (``stack``) serves most tests; tests that need a broken dependency start their own.
``client`` runs every test with both :class:`authz.client.Gateway` and :class:`AsyncGateway`.
"""

from __future__ import annotations

import asyncio
import threading
import time
import uuid
from collections.abc import AsyncIterator, Iterator
from typing import Any

import pytest
import uvicorn
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, PlainTextResponse, Response
from starlette.routing import Route

from authz.client import AsyncGateway, Gateway
from authz.local.stack import free_port
from authz.storage import Approval, open_store
from tests.integration.conftest import Gateway as Stack
from tests.integration.conftest import start_gateway


@pytest.fixture(scope="session")
def stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stack]:
    running, helper = start_gateway(tmp_path_factory.mktemp("sdk-stack"))
    try:
        yield helper
    finally:
        running.stop()


class Client:
    """Either SDK client behind one awaitable surface. The blocking one runs in a worker thread, so the
    test's event loop stays free (e.g. to decide an approval while the client waits for it)."""

    def __init__(self, kind: str, url: str, token: str | None, **kw: Any):
        self.kind = kind
        self.gw: Any = (Gateway if kind == "sync" else AsyncGateway)(url, token, **kw)

    async def tool_call(self, *args: Any, **kw: Any) -> Any:
        if self.kind == "sync":
            return await asyncio.to_thread(self.gw.tool_call, *args, **kw)
        return await self.gw.tool_call(*args, **kw)

    async def request(self, *args: Any, **kw: Any) -> Any:
        if self.kind == "sync":
            return await asyncio.to_thread(self.gw.request, *args, **kw)
        return await self.gw.request(*args, **kw)

    async def list_tools(self) -> Any:
        if self.kind == "sync":
            return await asyncio.to_thread(self.gw.list_tools)
        return await self.gw.list_tools()

    async def close(self) -> None:
        if self.kind == "sync":
            self.gw.close()
        else:
            await self.gw.aclose()


@pytest.fixture(params=["sync", "async"])
async def client(request, stack: Stack) -> AsyncIterator[Any]:
    """``client(token=..., url=..., **kw)`` makes a client of this test's kind (default: the stack's URL
    and a fresh demo token); every client made is closed after the test."""
    made: list[Client] = []

    def make(token: str | None = None, url: str | None = None, **kw: Any) -> Client:
        made.append(
            Client(request.param, url or stack.url, token if token is not None else stack.token(), **kw)
        )
        return made[-1]

    make.kind = request.param  # type: ignore[attr-defined]
    yield make
    for c in made:
        await c.close()


def unique_agent() -> str:
    return f"sdk-{uuid.uuid4().hex[:12]}"


class Approvals:
    """Operator actions on the stack's store, straight from the test process (no admin API yet)."""

    def __init__(self, store: Any, tenant: str = "demo"):
        self.store = store
        self.tenant = tenant

    async def pending_for(self, agent: str, timeout: float = 15.0) -> Approval:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            found = [a for a in await self.store.list_approvals(self.tenant, "pending") if a.agent == agent]
            if found:
                return found[0]
            await asyncio.sleep(0.05)
        raise AssertionError(f"no pending approval for {agent} after {timeout}s")

    async def decide(self, approval_id: str, verdict: str) -> Approval:
        return await self.store.record_approval_decision(
            self.tenant, approval_id, operator="ops-1", verdict=verdict, note="e2e", now=time.time()
        )


@pytest.fixture
async def approvals(stack: Stack) -> AsyncIterator[Approvals]:
    store = open_store(f"sqlite:///{stack.stack.workdir}/tessera.db")
    try:
        yield Approvals(store)
    finally:
        await store.close()


class FaultyServer:
    """A real HTTP server that misbehaves on purpose, in a thread of the test process.

    As the upstream MCP server (``POST /mcp``) it answers by the ``invoice_id`` argument: ``http-500`` →
    500 text, ``not-json`` → 200 HTML, anything else → a valid MCP result. As the HTTP intent extractor
    (``POST /v1/extract``) it always answers 500.
    """

    def __init__(self, port: int | None = None):
        self.port = port or free_port()

        async def mcp(request: Request) -> Response:
            body = await request.json()
            invoice = (body.get("params") or {}).get("arguments", {}).get("invoice_id")
            if invoice == "http-500":
                return PlainTextResponse("internal error", status_code=500)
            if invoice == "not-json":
                return Response("<html><body>maintenance</body></html>", media_type="text/html")
            result = {"content": [{"type": "text", "text": f"faulty server saw {invoice}"}], "isError": False}
            return JSONResponse({"jsonrpc": "2.0", "id": body.get("id"), "result": result})

        async def extract(request: Request) -> Response:
            return PlainTextResponse("extractor exploded", status_code=500)

        async def health(request: Request) -> Response:
            return JSONResponse({"status": "ok"})

        app = Starlette(
            routes=[
                Route("/mcp", mcp, methods=["POST"]),
                Route("/v1/extract", extract, methods=["POST"]),
                Route("/healthz", health),
            ]
        )
        self.server = uvicorn.Server(
            uvicorn.Config(app, host="127.0.0.1", port=self.port, log_level="warning")
        )
        self.thread = threading.Thread(target=self.server.run, daemon=True)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def __enter__(self) -> FaultyServer:
        self.thread.start()
        deadline = time.monotonic() + 10
        while not self.server.started:
            if time.monotonic() > deadline:
                raise TimeoutError("faulty server did not start")
            time.sleep(0.02)
        return self

    def __exit__(self, *exc: object) -> None:
        self.server.should_exit = True
        self.thread.join(5)


@pytest.fixture(scope="module")
def faulty_stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stack]:
    """A real stack whose upstream and intent extractor are a :class:`FaultyServer`."""
    with FaultyServer() as extractor:
        running, helper = start_gateway(
            tmp_path_factory.mktemp("sdk-faulty"),
            start_upstream=False,
            env={"TESSERA_INTENT_URL": extractor.url},
        )
        try:
            with FaultyServer(running.ports.upstream):
                yield helper
        finally:
            running.stop()
