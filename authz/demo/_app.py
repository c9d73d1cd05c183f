"""The demo upstream as one Starlette app, and its command line.

Routes:

``/mcp``
    MCP streamable HTTP (official SDK), stateless with JSON responses: every POST is self-contained
    (no session id, no SSE), which is what a gateway that authorizes each request needs. GET answers
    405 (no standalone stream); DELETE answers 405 from the SDK (no session to end).
``POST /v1/tool-call``
    ``{"tool": name, "arguments": {...}}`` → ``200 {"result": <structured result>}``. Errors are
    ``{"error": {"code", "message", "data"}}`` with 400 (malformed body, unknown tool, bad arguments),
    404 (the invoice does not exist) or 422 (any other tool failure).
``GET /healthz``
    200 ``{"status": "ok"}``.
With ``--require-receipts <JWKS URL>`` (what ``tessera run`` starts) every route but ``/healthz`` and
``/_demo/*`` needs a valid Tessera receipt (:mod:`authz.receipts`): a request that did not pass the
gateway, or whose body differs from the one Tessera allowed, is answered 403 before any tool runs.

``GET /_demo/requests`` (``?path=/mcp`` to filter), ``DELETE /_demo/requests``
    ``{"requests": [...]}``: the last 100 requests, oldest first, each ``{"seq", "time", "method",
    "path", "query", "headers": {lower-cased name: [every value, in order]}}``, so tests can prove what
    the gateway forwarded. ``/healthz`` and ``/_demo/*`` are not recorded. DELETE empties it (204).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import time
from collections import deque
from collections.abc import Sequence
from typing import Any

from mcp.server import MCPServer
from mcp.server.mcpserver import Context
from mcp.server.mcpserver.exceptions import ToolError
from mcp.server.transport_security import TransportSecuritySettings
from mcp.types import ToolAnnotations
from pydantic import ValidationError
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.types import ASGIApp, Receive, Scope, Send

from authz.demo._book import InvalidToolArgument, InvoiceBook, InvoiceNotFound
from authz.receipts import ReceiptMiddleware, ReceiptVerifier

DEFAULT_HOST = "127.0.0.1"
DEFAULT_PORT = 9000
PORT_ENV = "TESSERA_DEMO_PORT"
MCP_PATH = "/mcp"
RECORDED_REQUESTS = 100

_UNRECORDED_PREFIXES = ("/_demo/", "/healthz")
#: Reached without the gateway (liveness probes, tests reading what was forwarded): no receipt needed.
RECEIPT_EXEMPT = ("/healthz", "/_demo/requests")


class RequestRecorder:
    """A ring of the last ``size`` requests' method, path and headers."""

    def __init__(self, size: int = RECORDED_REQUESTS) -> None:
        self._entries: deque[dict[str, Any]] = deque(maxlen=size)
        self._seq = 0

    def record(self, scope: Scope) -> None:
        headers: dict[str, list[str]] = {}
        for raw_name, raw_value in scope.get("headers", ()):
            headers.setdefault(raw_name.decode("latin-1").lower(), []).append(raw_value.decode("latin-1"))
        self._seq += 1
        self._entries.append(
            {
                "seq": self._seq,
                "time": time.time(),
                "method": scope.get("method", ""),
                "path": scope.get("path", ""),
                "query": scope.get("query_string", b"").decode("latin-1"),
                "headers": headers,
            }
        )

    def entries(self, path: str | None = None) -> list[dict[str, Any]]:
        return [e for e in self._entries if path is None or e["path"] == path]

    def clear(self) -> None:
        self._entries.clear()


class _RecordHeaders:
    """Pure ASGI middleware: record every HTTP request before routing (so 404s are recorded too)."""

    def __init__(self, app: ASGIApp, recorder: RequestRecorder) -> None:
        self.app = app
        self.recorder = recorder

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http" and not scope.get("path", "").startswith(_UNRECORDED_PREFIXES):
            self.recorder.record(scope)
        await self.app(scope, receive, send)


class _NoStandaloneStream:
    """Answer ``GET /mcp`` with 405, as the MCP spec allows for a server that offers no SSE stream.

    In stateless mode the SDK would open a standalone SSE stream on GET that can never carry anything
    (there is no session to push to) and stays open until a proxy's timeout cuts it.
    """

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http" and scope.get("method") == "GET" and scope.get("path") == MCP_PATH:
            response = JSONResponse(
                {
                    "jsonrpc": "2.0",
                    "id": None,
                    "error": {"code": -32600, "message": "no SSE stream: POST only"},
                },
                status_code=405,
                headers={"allow": "POST, DELETE"},
            )
            await response(scope, receive, send)
            return
        await self.app(scope, receive, send)


def build_mcp_server(book: InvoiceBook) -> MCPServer:
    """The MCP server with the four invoice tools bound to ``book``."""
    server = MCPServer(
        "tessera-demo-invoices",
        version="0.1.0",
        instructions="An invoice book: read and list invoices, transfer funds, delete invoices.",
        log_level="WARNING",
    )
    read_only = ToolAnnotations(read_only_hint=True, open_world_hint=False)
    server.add_tool(book.read_invoice, annotations=read_only)
    server.add_tool(book.list_invoices, annotations=read_only)
    server.add_tool(
        book.transfer_funds,
        annotations=ToolAnnotations(read_only_hint=False, destructive_hint=True, open_world_hint=True),
    )
    server.add_tool(
        book.delete_invoice,
        annotations=ToolAnnotations(read_only_hint=False, destructive_hint=True, idempotent_hint=True),
    )
    return server


async def slow_report(seconds: float, ctx: Context, progress_every: float = 0.0) -> dict[str, Any]:
    """Build a report that takes ``seconds`` seconds (at most 300): a long-running tool call.

    With ``progress_every`` > 0 it reports progress that often (when the client asked for progress)."""
    seconds = max(0.0, min(float(seconds), 300.0))
    step = progress_every if progress_every > 0 else seconds
    done = 0.0
    while done < seconds:
        pause = min(step, seconds - done)
        await asyncio.sleep(pause)
        done += pause
        if progress_every > 0:
            await ctx.report_progress(done, seconds)
    return {"seconds": seconds, "status": "done"}


def _error(status: int, code: str, message: str, data: dict[str, Any] | None = None) -> JSONResponse:
    return JSONResponse({"error": {"code": code, "message": message, "data": data or {}}}, status_code=status)


def build_app(
    book: InvoiceBook | None = None,
    *,
    host: str = DEFAULT_HOST,
    recorder: RequestRecorder | None = None,
    sse: bool = False,
    slow_tool: bool = False,
    allowed_origins: Sequence[str] = (),
    receipts: ReceiptVerifier | None = None,
) -> Starlette:
    """Build the demo upstream. A fresh app per call (the SDK's session manager runs only once).

    ``sse``: answer MCP POSTs as ``text/event-stream`` (the SDK's default framing) instead of JSON.
    ``slow_tool``: add ``slow_report(seconds)``, a tool that takes that long (at most 300 s), for
    tests of long-running calls through the gateway.
    ``allowed_origins``: browser origins the SDK's DNS-rebinding protection accepts besides loopback
    ones (the gateway's CORS origins, when browsers reach this server through it).

    ``host`` is the address the server binds to: on a loopback address the SDK's DNS-rebinding
    protection accepts only loopback ``Host`` headers (any port), elsewhere it is off.
    ``receipts``: refuse (403) requests without a valid Tessera receipt (health and ``/_demo`` exempt).
    """
    book = book if book is not None else InvoiceBook()
    recorder = recorder if recorder is not None else RequestRecorder()
    server = build_mcp_server(book)
    if slow_tool:
        server.add_tool(slow_report, annotations=ToolAnnotations(read_only_hint=True, open_world_hint=False))

    @server.custom_route("/v1/tool-call", methods=["POST"])
    async def tool_call(request: Request) -> Response:
        try:
            body = json.loads(await request.body())
        except (json.JSONDecodeError, UnicodeDecodeError) as exc:
            return _error(400, "invalid_json", f"body is not JSON: {exc}")
        if not isinstance(body, dict) or not isinstance(body.get("tool"), str):
            return _error(400, "invalid_request", 'expected {"tool": "<name>", "arguments": {...}}')
        name, arguments = body["tool"], body.get("arguments", {})
        if arguments is None:
            arguments = {}
        if not isinstance(arguments, dict):
            return _error(400, "invalid_request", '"arguments" must be an object', {"tool": name})
        known = {tool.name for tool in await server.list_tools()}
        if name not in known:
            return _error(
                400, "unknown_tool", f"unknown tool {name!r}", {"tool": name, "tools": sorted(known)}
            )
        try:
            result = await server.call_tool(name, arguments)
        except ToolError as exc:
            cause = exc.__cause__
            if isinstance(cause, ValidationError):
                # Locations and messages only: the rejected values are the caller's data.
                errors = [{"loc": list(e["loc"]), "msg": e["msg"], "type": e["type"]} for e in cause.errors()]
                message = "arguments do not match the tool's input schema"
                return _error(400, "invalid_arguments", message, {"tool": name, "errors": errors})
            if isinstance(cause, InvalidToolArgument):
                return _error(400, "invalid_arguments", str(cause), {"tool": name})
            if isinstance(cause, InvoiceNotFound):
                return _error(404, "not_found", str(cause), {"tool": name})
            return _error(422, "tool_error", str(cause or exc), {"tool": name})
        if getattr(result, "is_error", False):
            text = " ".join(getattr(block, "text", "") for block in result.content)
            return _error(422, "tool_error", text, {"tool": name})
        structured = getattr(result, "structured_content", None)
        if structured is None:
            structured = [block.model_dump(mode="json", exclude_none=True) for block in result.content]
        return JSONResponse({"result": structured})

    @server.custom_route("/healthz", methods=["GET"])
    async def healthz(request: Request) -> Response:
        return JSONResponse({"status": "ok"})

    @server.custom_route("/_demo/requests", methods=["GET", "DELETE"])
    async def recorded_requests(request: Request) -> Response:
        if request.method == "DELETE":
            recorder.clear()
            return Response(status_code=204)
        return JSONResponse({"requests": recorder.entries(request.query_params.get("path"))})

    security = None
    if allowed_origins and host in ("127.0.0.1", "localhost", "::1"):
        security = TransportSecuritySettings(
            enable_dns_rebinding_protection=True,
            allowed_hosts=["127.0.0.1:*", "localhost:*", "[::1]:*"],
            allowed_origins=["http://127.0.0.1:*", "http://localhost:*", "http://[::1]:*", *allowed_origins],
        )
    app = server.streamable_http_app(
        streamable_http_path=MCP_PATH,
        stateless_http=True,
        json_response=not sse,
        host=host,
        transport_security=security,
    )
    app.add_middleware(_NoStandaloneStream)
    if receipts is not None:  # before any route runs, after the recorder saw the request
        app.add_middleware(ReceiptMiddleware, verifier=receipts, exempt_paths=RECEIPT_EXEMPT)
    app.add_middleware(_RecordHeaders, recorder=recorder)  # added last = outermost: sees every request
    app.state.book = book
    app.state.recorder = recorder
    app.state.mcp_server = server
    return app


def _default_port() -> int:
    raw = os.environ.get(PORT_ENV, "").strip()
    if not raw:
        return DEFAULT_PORT
    if not raw.isdigit() or not 0 < int(raw) < 65536:
        raise ValueError(f"{PORT_ENV} must be a TCP port number, got {raw!r}")
    return int(raw)


def main(argv: Sequence[str] | None = None) -> int:
    """``python -m authz.demo [--host H] [--port P] [--log-level L]``; serves until interrupted."""
    import uvicorn  # only the command line needs the server

    parser = argparse.ArgumentParser(
        prog="python -m authz.demo", description="Tessera's demo upstream: an MCP invoice tool server."
    )
    parser.add_argument("--host", default=DEFAULT_HOST, help=f"address to bind (default {DEFAULT_HOST})")
    parser.add_argument(
        "--port", type=int, default=None, help=f"port to bind (default ${PORT_ENV} or {DEFAULT_PORT})"
    )
    parser.add_argument(
        "--log-level", default="info", choices=["critical", "error", "warning", "info", "debug"]
    )
    parser.add_argument("--sse", action="store_true", help="answer MCP POSTs as text/event-stream")
    parser.add_argument("--slow-tool", action="store_true", help="add the slow_report(seconds) tool")
    parser.add_argument(
        "--allow-origin", action="append", default=[], help="a browser origin to accept (repeatable)"
    )
    parser.add_argument(
        "--require-receipts",
        metavar="JWKS_URL",
        help="refuse requests without a valid Tessera receipt; keys from this URL "
        "(the gateway's /v1/admin/receipt-keys)",
    )
    args = parser.parse_args(argv)
    try:
        port = args.port if args.port is not None else _default_port()
    except ValueError as exc:
        parser.error(str(exc))
    uvicorn.run(
        build_app(
            host=args.host,
            sse=args.sse,
            slow_tool=args.slow_tool,
            allowed_origins=args.allow_origin,
            # A rotated-in key is fetched within a second of its first receipt (the demo favours quick
            # feedback over sparing the key endpoint; the library default is 10 s).
            receipts=ReceiptVerifier(jwks_url=args.require_receipts, min_refetch_s=1.0)
            if args.require_receipts
            else None,
        ),
        host=args.host,
        port=port,
        log_level=args.log_level,
        access_log=args.log_level in ("info", "debug"),
        server_header=False,
    )
    return 0
