"""ASGI middleware: refuse (403) every request without a valid Tessera receipt before the app runs."""

from __future__ import annotations

import json
import logging
from collections.abc import Awaitable, Callable, Iterable, MutableMapping
from typing import Any

from authz.receipts._format import HEADER, ReceiptError
from authz.receipts._verify import ReceiptVerifier

log = logging.getLogger("tessera.receipts")

Scope = MutableMapping[str, Any]
Message = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]
ASGIApp = Callable[[Scope, Receive, Send], Awaitable[None]]

#: Largest body buffered for the receipt check; larger requests are refused (Envoy's own limit for
#: bodies it authorizes is 1 MiB by default).
DEFAULT_MAX_BODY = 4 * 1024 * 1024
_HEADER = HEADER.encode("latin-1")


class ReceiptMiddleware:
    """Wraps an ASGI app (e.g. an MCP server's Starlette app).

    The whole body is read first (a receipt binds its SHA-256), the receipt is verified
    (:class:`ReceiptVerifier`: key, signature, expiry, body, replay), and only then does the app see the
    request, with the same body. Refusals are HTTP 403 with ``{"error": {"code": "receipt_<reason>",
    "message": ...}}``. ``exempt_paths`` (e.g. a health check) skip the check; WebSocket and lifespan
    scopes pass through. The verified receipt is put in ``scope["tessera.receipt"]``.
    """

    def __init__(
        self,
        app: ASGIApp,
        verifier: ReceiptVerifier,
        *,
        exempt_paths: Iterable[str] = (),
        max_body: int = DEFAULT_MAX_BODY,
    ):
        self.app = app
        self.verifier = verifier
        self._exempt = frozenset(exempt_paths)
        self._max_body = max_body

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or scope.get("path") in self._exempt:
            await self.app(scope, receive, send)
            return
        token = None
        for name, value in scope.get("headers", ()):
            if name.lower() == _HEADER:
                if token is not None:  # two receipts: which one did Tessera add? Refuse the ambiguity.
                    await _refuse(send, ReceiptError("malformed", "more than one Tessera receipt"))
                    return
                token = value.decode("latin-1")
        body, more, disconnected = bytearray(), True, False
        while more:
            message = await receive()
            if message["type"] == "http.disconnect":
                disconnected = True
                break
            body += message.get("body", b"")
            more = message.get("more_body", False)
            if len(body) > self._max_body:
                await _refuse(send, ReceiptError("too_large", "request body too large to check its receipt"))
                return
        if disconnected:
            return
        try:
            receipt = await self.verifier.averify(token, bytes(body))
        except ReceiptError as exc:
            log.warning("refused a request without a valid Tessera receipt: %s", exc.reason)
            await _refuse(send, exc)
            return
        scope["tessera.receipt"] = receipt
        await self.app(scope, _replay(bytes(body), receive), send)


def _replay(body: bytes, receive: Receive) -> Receive:
    sent = False

    async def replayed() -> Message:
        nonlocal sent
        if not sent:
            sent = True
            return {"type": "http.request", "body": body, "more_body": False}
        return await receive()  # later: disconnect notifications of the real connection

    return replayed


async def _refuse(send: Send, error: ReceiptError) -> None:
    payload = json.dumps({"error": {"code": f"receipt_{error.reason}", "message": error.message}}).encode()
    await send(
        {
            "type": "http.response.start",
            "status": 403,
            "headers": [
                (b"content-type", b"application/json"),
                (b"content-length", str(len(payload)).encode()),
            ],
        }
    )
    await send({"type": "http.response.body", "body": payload})
