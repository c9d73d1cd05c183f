"""``Gateway`` (blocking) and ``AsyncGateway``: one MCP endpoint behind Tessera, one capability token."""

from __future__ import annotations

import itertools
import os
import time
from collections.abc import Mapping, Sequence
from typing import Any

import anyio
import httpx

from ._errors import ApprovalRequired
from ._protocol import (
    TOKEN_ENV,
    ToolResult,
    clean_token,
    endpoint,
    headers_for,
    next_page,
    parse_reply,
    poll_delays,
    rpc_body,
    tool_call_params,
    transport_error,
)

_CONTENT_HEADERS = {"content-type": "application/json", "accept": "application/json, text/event-stream"}
_MAX_PAGES = 100


class _ApprovalWait:
    """The decisions of ``wait_for_approval``: how long to pause after each -32019, or give up."""

    def __init__(self, seconds: float | None):
        if seconds is not None and (
            not isinstance(seconds, int | float) or isinstance(seconds, bool) or not seconds >= 0
        ):
            raise ValueError("wait_for_approval must be a number of seconds >= 0 (or None: do not wait)")
        self.deadline = None if seconds is None else time.monotonic() + seconds
        self.delays = poll_delays()

    def pause_after(self, exc: ApprovalRequired) -> float:
        """Seconds to sleep before asking again with ``exc.approval_id``; re-raises ``exc`` when the wait
        is over (or was never asked for)."""
        if self.deadline is None or not exc.approval_id:
            raise exc
        remaining = self.deadline - time.monotonic()
        if remaining <= 0:
            raise exc
        return min(next(self.delays), remaining)


class _Core:
    """What both clients share: the endpoint, the token, request ids and header building."""

    def __init__(self, url: str, token: str | None, timeout: float):
        if not isinstance(timeout, int | float) or isinstance(timeout, bool) or not timeout > 0:
            raise ValueError("timeout must be a positive number of seconds")
        self._url = endpoint(url)
        self._token = clean_token(token if token is not None else os.environ.get(TOKEN_ENV))
        self._timeout = float(timeout)
        self._ids = itertools.count(1)
        self._owns_client = False

    @property
    def url(self) -> str:
        """The MCP endpoint calls go to (``<gateway>/v1/mcp``)."""
        return self._url

    @property
    def token(self) -> str | None:
        return self._token

    def _request_id(self, request_id: Any) -> Any:
        if request_id is None:
            return next(self._ids)
        if isinstance(request_id, bool) or not isinstance(request_id, str | int):
            raise TypeError("request_id must be a str or an int")
        return request_id

    def _headers(
        self,
        intent_prompt: str | None = None,
        approval_id: str | None = None,
        provenance: Sequence[Mapping[str, Any]] | None = None,
    ) -> dict[str, str]:
        return _CONTENT_HEADERS | headers_for(
            self._token, intent_prompt=intent_prompt, approval_id=approval_id, provenance=provenance
        )

    def __repr__(self) -> str:  # never the token
        return f"{type(self).__name__}({self._url!r}, token={'<set>' if self._token else None})"


class Gateway(_Core):
    """A blocking client for tool calls through Tessera.

    ::

        with Gateway("http://127.0.0.1:8080", token) as gw:
            result = gw.tool_call("read_invoice", {"invoice_id": "INV-1001"}, intent_prompt="show INV-1001")
            print(result.text)

    ``token`` defaults to ``$TESSERA_TOKEN``. ``timeout`` bounds each HTTP request (seconds). Pass
    ``client`` (an ``httpx.Client``) to reuse your own connection pool, proxies or TLS settings: the
    gateway never closes a client it did not create.
    """

    def __init__(
        self,
        url: str,
        token: str | None = None,
        *,
        timeout: float = 10.0,
        client: httpx.Client | None = None,
    ):
        super().__init__(url, token, timeout)
        if client is None:
            self._client = httpx.Client(timeout=self._timeout)
            self._owns_client = True
        elif isinstance(client, httpx.Client):
            self._client = client
        else:
            raise TypeError("client must be an httpx.Client (use AsyncGateway for an httpx.AsyncClient)")

    def tool_call(
        self,
        tool: str,
        arguments: Mapping[str, Any] | None = None,
        *,
        intent_prompt: str | None = None,
        request_id: str | int | None = None,
        approval_id: str | None = None,
        wait_for_approval: float | None = None,
        provenance: Sequence[Mapping[str, Any]] | None = None,
    ) -> ToolResult:
        """Call ``tool`` through the gateway (MCP ``tools/call`` on ``/v1/mcp``).

        ``intent_prompt`` is the user's request that led to this call (sent percent-encoded as
        ``X-Intent-Prompt``); ``approval_id`` resumes a call a human approved; ``provenance`` presents
        signed memory entries (``X-Memory-Provenance``). With ``wait_for_approval=seconds``, a call that
        needs approval is repeated with its approval id, with backoff, until it is allowed (returns),
        rejected or expired (:class:`PolicyError`) or the time runs out (:class:`ApprovalRequired`).

        Returns a :class:`ToolResult` (check ``is_error``: the tool ran and reported a failure); raises
        a :class:`TesseraError` subclass when the gateway denied or could not answer.
        """
        params = tool_call_params(tool, arguments)
        wait = _ApprovalWait(wait_for_approval)
        while True:
            try:
                result, decision_id, rid = self._rpc(
                    "tools/call", params, request_id, self._headers(intent_prompt, approval_id, provenance)
                )
                return ToolResult.from_result(result, decision_id=decision_id, request_id=rid)
            except ApprovalRequired as exc:
                pause = wait.pause_after(exc)
                approval_id = exc.approval_id
            time.sleep(pause)

    def list_tools(self) -> list[dict[str, Any]]:
        """The tools the MCP server behind the gateway offers (``tools/list``, every page), as its raw
        tool definitions: ``name``, ``description``, ``inputSchema``... Needs a valid token only."""
        tools: list[dict[str, Any]] = []
        cursor: str | None = None
        for _ in range(_MAX_PAGES):
            page, cursor = next_page(self.request("tools/list", {"cursor": cursor} if cursor else None))
            tools.extend(page)
            if cursor is None:
                break
        return tools

    def request(self, method: str, params: Mapping[str, Any] | None = None) -> Any:
        """Send any other JSON-RPC request through the gateway (e.g. ``resources/read``); returns its
        ``result``. Errors raise as for :meth:`tool_call`."""
        return self._rpc(method, params, None, self._headers())[0]

    def with_token(self, token: str) -> Gateway:
        """A gateway for the same endpoint with another token (e.g. an attenuated one for a sub-agent),
        sharing this one's HTTP client: close the parent last."""
        if not isinstance(token, str) or not token.strip():
            raise ValueError("with_token needs a token")
        return Gateway(self._url, token, timeout=self._timeout, client=self._client)

    def _rpc(
        self, method: str, params: Mapping[str, Any] | None, request_id: Any, headers: dict[str, str]
    ) -> tuple[Any, str | None, Any]:
        rid = self._request_id(request_id)
        body = rpc_body(method, params, rid)
        try:
            response = self._client.post(self._url, content=body, headers=headers, timeout=self._timeout)
        except httpx.HTTPError as exc:
            raise transport_error(exc, self._url) from exc
        result, decision_id = parse_reply(response.status_code, response.headers, response.content, rid)
        return result, decision_id, rid

    def close(self) -> None:
        """Close the HTTP client if this gateway created it (a client passed in is left open)."""
        if self._owns_client:
            self._client.close()

    def __enter__(self) -> Gateway:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


class AsyncGateway(_Core):
    """The asyncio (any anyio backend) twin of :class:`Gateway`: same arguments, same results, same
    exceptions; ``client`` is an ``httpx.AsyncClient``.

    ::

        async with AsyncGateway("http://127.0.0.1:8080", token) as gw:
            result = await gw.tool_call("read_invoice", {"invoice_id": "INV-1001"})
    """

    def __init__(
        self,
        url: str,
        token: str | None = None,
        *,
        timeout: float = 10.0,
        client: httpx.AsyncClient | None = None,
    ):
        super().__init__(url, token, timeout)
        if client is None:
            self._client = httpx.AsyncClient(timeout=self._timeout)
            self._owns_client = True
        elif isinstance(client, httpx.AsyncClient):
            self._client = client
        else:
            raise TypeError("client must be an httpx.AsyncClient (use Gateway for an httpx.Client)")

    async def tool_call(
        self,
        tool: str,
        arguments: Mapping[str, Any] | None = None,
        *,
        intent_prompt: str | None = None,
        request_id: str | int | None = None,
        approval_id: str | None = None,
        wait_for_approval: float | None = None,
        provenance: Sequence[Mapping[str, Any]] | None = None,
    ) -> ToolResult:
        """See :meth:`Gateway.tool_call`."""
        params = tool_call_params(tool, arguments)
        wait = _ApprovalWait(wait_for_approval)
        while True:
            try:
                result, decision_id, rid = await self._rpc(
                    "tools/call", params, request_id, self._headers(intent_prompt, approval_id, provenance)
                )
                return ToolResult.from_result(result, decision_id=decision_id, request_id=rid)
            except ApprovalRequired as exc:
                pause = wait.pause_after(exc)
                approval_id = exc.approval_id
            await anyio.sleep(pause)

    async def list_tools(self) -> list[dict[str, Any]]:
        """See :meth:`Gateway.list_tools`."""
        tools: list[dict[str, Any]] = []
        cursor: str | None = None
        for _ in range(_MAX_PAGES):
            page, cursor = next_page(await self.request("tools/list", {"cursor": cursor} if cursor else None))
            tools.extend(page)
            if cursor is None:
                break
        return tools

    async def request(self, method: str, params: Mapping[str, Any] | None = None) -> Any:
        """See :meth:`Gateway.request`."""
        return (await self._rpc(method, params, None, self._headers()))[0]

    def with_token(self, token: str) -> AsyncGateway:
        """See :meth:`Gateway.with_token`."""
        if not isinstance(token, str) or not token.strip():
            raise ValueError("with_token needs a token")
        return AsyncGateway(self._url, token, timeout=self._timeout, client=self._client)

    async def _rpc(
        self, method: str, params: Mapping[str, Any] | None, request_id: Any, headers: dict[str, str]
    ) -> tuple[Any, str | None, Any]:
        rid = self._request_id(request_id)
        body = rpc_body(method, params, rid)
        try:
            response = await self._client.post(
                self._url, content=body, headers=headers, timeout=self._timeout
            )
        except httpx.HTTPError as exc:
            raise transport_error(exc, self._url) from exc
        result, decision_id = parse_reply(response.status_code, response.headers, response.content, rid)
        return result, decision_id, rid

    async def aclose(self) -> None:
        """Close the HTTP client if this gateway created it (a client passed in is left open)."""
        if self._owns_client:
            await self._client.aclose()

    async def __aenter__(self) -> AsyncGateway:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.aclose()


__all__ = ["AsyncGateway", "Gateway"]
