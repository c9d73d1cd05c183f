"""Helpers for agents built on the official ``mcp`` SDK (2.x): its streamable HTTP transport with
Tessera's headers, and its ``MCPError`` turned into the SDK's typed exceptions.

``mcp`` and ``httpx2`` are imported only when a helper that needs them runs, so ``authz.client`` stays
importable without them.

::

    from mcp import Client
    from authz.client import mcp_errors, tessera_meta, tessera_transport

    async with Client(tessera_transport("http://127.0.0.1:8080", token)) as client:
        with mcp_errors():                              # MCPError -> PolicyError, BudgetError, ...
            result = await client.call_tool(
                "read_invoice", {"invoice_id": "INV-1001"}, meta=tessera_meta(intent_prompt="show INV-1001")
            )
"""

from __future__ import annotations

import contextlib
import sys
from collections.abc import AsyncIterator, Iterator, Mapping, Sequence
from typing import Any

from ._errors import GatewayError, ProtocolError, TesseraError, error_from_rpc
from ._protocol import clean_token, endpoint, headers_for

META_PROMPT = "tessera/intent-prompt"
META_APPROVAL = "tessera/approval-id"
META_PROVENANCE = "tessera/provenance"


def mcp_headers(
    token: str | None = None,
    *,
    intent_prompt: str | None = None,
    approval_id: str | None = None,
    provenance: Sequence[Mapping[str, Any]] | None = None,
) -> dict[str, str]:
    """HTTP headers for every request of an MCP connection through Tessera: ``Authorization: Bearer``
    and, when given, a percent-encoded ``X-Intent-Prompt``, ``X-Approval-Id`` and ``X-Memory-Provenance``.

    Headers hold for the whole connection; for values that change per call use :func:`tessera_meta`.
    """
    return headers_for(
        clean_token(token), intent_prompt=intent_prompt, approval_id=approval_id, provenance=provenance
    )


def tessera_meta(
    *,
    intent_prompt: str | None = None,
    approval_id: str | None = None,
    provenance: Sequence[Mapping[str, Any]] | None = None,
    **extra: Any,
) -> dict[str, Any]:
    """``_meta`` for one ``call_tool(..., meta=...)``: the same inputs as the headers, per call (the
    gateway reads ``params._meta["tessera/..."]`` and prefers it to the headers)."""
    meta: dict[str, Any] = dict(extra)
    if intent_prompt is not None:
        meta[META_PROMPT] = intent_prompt
    if approval_id is not None:
        meta[META_APPROVAL] = approval_id
    if provenance is not None:
        meta[META_PROVENANCE] = [dict(entry) for entry in provenance]
    return meta


def mcp_http_client(
    token: str | None = None,
    *,
    intent_prompt: str | None = None,
    approval_id: str | None = None,
    provenance: Sequence[Mapping[str, Any]] | None = None,
    headers: Mapping[str, str] | None = None,
    timeout: float = 30.0,
) -> Any:
    """An ``httpx2.AsyncClient`` carrying Tessera's headers, for
    ``streamable_http_client(url, http_client=...)``. The caller owns (and closes) it."""
    import httpx2

    merged = dict(headers or {}) | mcp_headers(
        token, intent_prompt=intent_prompt, approval_id=approval_id, provenance=provenance
    )
    return httpx2.AsyncClient(headers=merged, timeout=httpx2.Timeout(timeout))


@contextlib.asynccontextmanager
async def tessera_transport(
    url: str,
    token: str | None = None,
    *,
    intent_prompt: str | None = None,
    approval_id: str | None = None,
    provenance: Sequence[Mapping[str, Any]] | None = None,
    headers: Mapping[str, str] | None = None,
    timeout: float = 30.0,
) -> AsyncIterator[Any]:
    """The ``mcp`` SDK's streamable HTTP transport to ``<url>/v1/mcp`` with Tessera's headers; usable as
    ``mcp.Client(tessera_transport(...))`` or ``async with tessera_transport(...) as (read, write)`` for a
    ``ClientSession``. Closes the HTTP client it creates."""
    from mcp.client.streamable_http import streamable_http_client

    client = mcp_http_client(
        token,
        intent_prompt=intent_prompt,
        approval_id=approval_id,
        provenance=provenance,
        headers=headers,
        timeout=timeout,
    )
    async with client, streamable_http_client(endpoint(url), http_client=client) as streams:
        yield streams


def error_from_mcp(exc: BaseException) -> TesseraError:
    """The typed Tessera exception for an exception raised by the ``mcp`` SDK.

    ``MCPError`` (``McpError`` in mcp 1.x) carrying a Tessera code becomes its class
    (:class:`PolicyError` for -32012...), any other JSON-RPC error a :class:`ProtocolError`; an
    ``httpx2``/``httpx`` transport or status error becomes a :class:`GatewayError`. Anything else is
    wrapped in a :class:`ProtocolError` with code None.
    """
    if isinstance(exc, TesseraError):
        return exc
    error = getattr(exc, "error", None)  # mcp's MCPError keeps an ErrorData here
    code = getattr(error, "code", getattr(exc, "code", None))
    if isinstance(code, int) and not isinstance(code, bool):
        message = getattr(error, "message", getattr(exc, "message", str(exc)))
        data = getattr(error, "data", getattr(exc, "data", None))
        return error_from_rpc({"code": code, "message": message, "data": data})
    response = getattr(exc, "response", None)
    status = getattr(response, "status_code", None)
    if _is_http_error(exc):
        if isinstance(status, int):
            return GatewayError(f"the gateway answered HTTP {status}", http_status=status)
        return GatewayError(f"cannot reach the gateway: {type(exc).__name__}: {exc}".rstrip(": "))
    return ProtocolError(None, f"{type(exc).__name__}: {exc}")


def _is_http_error(exc: BaseException) -> bool:
    # Only modules already imported can have raised it; never import one just to ask.
    for module in ("httpx2", "httpx"):
        mod = sys.modules.get(module)
        if mod is not None and isinstance(exc, mod.HTTPError):
            return True
    return False


def _is_mcp_error(exc: BaseException) -> bool:
    mod = sys.modules.get("mcp.shared.exceptions")
    classes = tuple(getattr(mod, name) for name in ("MCPError", "McpError") if hasattr(mod, name))
    return bool(classes) and isinstance(exc, classes)


def _translatable(exc: BaseException) -> bool:
    return _is_mcp_error(exc) or _is_http_error(exc)


@contextlib.contextmanager
def mcp_errors() -> Iterator[None]:
    """Re-raise the ``mcp`` SDK's errors as Tessera's typed exceptions (original as ``__cause__``).

    A plain ``with`` block, so it works around ``await`` calls too::

        with mcp_errors():
            await session.call_tool("delete_invoice", {"invoice_id": "INV-1001"})   # raises PolicyError
    """
    try:
        yield
    except BaseExceptionGroup as group:  # anyio task groups may wrap the one error that matters
        leaves = list(_leaves(group))
        if len(leaves) == 1 and _translatable(leaves[0]):
            raise error_from_mcp(leaves[0]) from leaves[0]
        raise
    except Exception as exc:
        if _translatable(exc):
            raise error_from_mcp(exc) from exc
        raise


def _leaves(group: BaseExceptionGroup) -> Iterator[BaseException]:
    for exc in group.exceptions:
        if isinstance(exc, BaseExceptionGroup):
            yield from _leaves(exc)
        else:
            yield exc


__all__ = [
    "error_from_mcp",
    "mcp_errors",
    "mcp_headers",
    "mcp_http_client",
    "tessera_meta",
    "tessera_transport",
]
