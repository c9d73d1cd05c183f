"""An extractor backed by an external HTTP service (e.g. an LLM behind a small API).

Wire contract (ARCHITECTURE §5)::

    POST {url}/v1/extract
    content-type: application/json
    x-tessera-tenant: <tenant>            (informational; the body is the contract)
    {"prompt": "...", "agent_id": "..." | null}

    200 {"intent": {"summary": str, "allowed_tools": [str], "forbidden_tools": [str],
                    "confidence": number in [0, 1], "rationale": str}}

The five intent fields are required and type-checked; tool names must be non-empty strings of at most
256 characters, at most 1000 per list; the body may be at most 1 MiB. Unknown extra fields are ignored
(so the service can grow without breaking gateways), except an optional boolean ``determined``: a service
may say it did not understand the prompt (otherwise an intent naming no tool is undetermined, as the
tenant's ``undetermined: deny | policy`` setting expects). Any failure — timeout (one deadline for the
whole exchange), connection error, non-2xx status, non-JSON or badly shaped body — raises
:class:`authz.errors.DependencyError`; the pipeline turns that into a -32018 deny (fail closed).

Successful answers are cached per (tenant, agent, SHA-256 of the prompt) for ``cache_ttl`` seconds in
an LRU of ``cache_size`` entries. The agent is part of the key because the service receives it and may
answer differently per agent. Concurrent identical requests share one in-flight call. Failures are
never cached.
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import math
import time
from collections import OrderedDict
from typing import Any
from urllib.parse import quote

from authz.errors import DependencyError, InvalidArgument, OutboundRefused
from authz.intent._model import Intent
from authz.outbound import OutboundClient, OutboundPolicy

__all__ = ["HttpExtractor"]

MAX_REPLY_BYTES = 1024 * 1024
MAX_TOOLS = 1000
MAX_TOOL_NAME = 256
_INTENT_FIELDS = ("summary", "allowed_tools", "forbidden_tools", "confidence", "rationale")
_CacheKey = tuple[str, str | None, bytes]


class HttpExtractor:
    """Intent extraction through ``POST {url}/v1/extract``; see the module docstring for the contract.

    Requests go through :class:`authz.outbound.OutboundClient` (no loopback, private or metadata address
    unless the operator allowlist permits it). ``outbound`` may be shared with other components (it is
    then not closed by :meth:`aclose`); without one, the extractor owns a client under ``policy``
    (default: nothing but public addresses). ``clock`` is for tests.
    """

    def __init__(
        self,
        url: str,
        *,
        timeout: float,
        cache_size: int = 10_000,
        cache_ttl: float = 300,
        outbound: OutboundClient | None = None,
        policy: OutboundPolicy | None = None,
        clock: Any = time.monotonic,
    ):
        if not isinstance(url, str) or not url.startswith(("http://", "https://")):
            raise InvalidArgument(f"intent extractor url must be an http(s) URL, got {url!r}")
        if not _positive(timeout):
            raise InvalidArgument(f"intent extractor timeout must be a positive number, got {timeout!r}")
        if isinstance(cache_size, bool) or not isinstance(cache_size, int) or cache_size < 0:
            raise InvalidArgument(
                f"intent extractor cache_size must be a non-negative integer, got {cache_size!r}"
            )
        if not (_positive(cache_ttl) or cache_ttl == 0):
            raise InvalidArgument(
                f"intent extractor cache_ttl must be a non-negative number, got {cache_ttl!r}"
            )
        self._endpoint = url.rstrip("/") + "/v1/extract"
        self._timeout = float(timeout)
        self._cache_size = cache_size
        self._cache_ttl = float(cache_ttl)
        self._cache: OrderedDict[_CacheKey, tuple[float, Intent]] = OrderedDict()
        self._inflight: dict[_CacheKey, asyncio.Task[Intent]] = {}
        self._owns_client = outbound is None
        self._client = outbound or OutboundClient(
            policy or OutboundPolicy(),
            timeout_s=self._timeout,
            max_response_bytes=MAX_REPLY_BYTES,
            max_redirects=0,
            purpose="intent extractor",
        )
        self._clock = clock

    @property
    def endpoint(self) -> str:
        return self._endpoint

    async def extract(self, tenant: str, agent: str | None, prompt: str) -> Intent:
        if not isinstance(prompt, str):
            raise InvalidArgument(f"prompt must be a string, got {type(prompt).__name__}")
        key: _CacheKey = (tenant, agent, hashlib.sha256(prompt.encode("utf-8", "surrogatepass")).digest())
        cached = self._cached(key)
        if cached is not None:
            return cached
        task = self._inflight.get(key)
        if task is None:
            task = asyncio.ensure_future(self._fetch(tenant, agent, prompt))
            self._inflight[key] = task
            task.add_done_callback(lambda t, k=key: self._finish(k, t))
        # shield: a caller that is cancelled must not cancel the call other callers are waiting on.
        return await asyncio.shield(task)

    def _cached(self, key: _CacheKey) -> Intent | None:
        entry = self._cache.get(key)
        if entry is None:
            return None
        expires, intent = entry
        if self._clock() >= expires:
            del self._cache[key]
            return None
        self._cache.move_to_end(key)
        return intent

    def _finish(self, key: _CacheKey, task: asyncio.Task[Intent]) -> None:
        if self._inflight.get(key) is task:
            del self._inflight[key]
        if task.cancelled():
            return
        exc = task.exception()  # also marks the exception retrieved when every waiter went away
        if exc is None and self._cache_size and self._cache_ttl:
            self._cache[key] = (self._clock() + self._cache_ttl, task.result())
            self._cache.move_to_end(key)
            while len(self._cache) > self._cache_size:
                self._cache.popitem(last=False)

    async def _fetch(self, tenant: str, agent: str | None, prompt: str) -> Intent:
        try:
            async with asyncio.timeout(self._timeout):
                response = await self._client.request(
                    "POST",
                    self._endpoint,
                    json={"prompt": prompt, "agent_id": agent},
                    headers={"x-tessera-tenant": quote(tenant, safe=""), "accept": "application/json"},
                )
        except TimeoutError:
            raise _error(f"intent extractor did not answer within {self._timeout:g}s", "timeout") from None
        except OutboundRefused as exc:
            raise OutboundRefused(
                exc.message, metadata={"dependency": "intent_extractor", "failure": "refused"}
            ) from None
        except DependencyError as exc:
            failure = exc.metadata.get("failure", "transport")
            if failure == "timeout":
                raise _error(
                    f"intent extractor did not answer within {self._timeout:g}s", "timeout"
                ) from None
            if failure == "too_large":
                raise _malformed(f"body is larger than {MAX_REPLY_BYTES} bytes") from None
            raise _error(f"intent extractor request failed: {exc.message}", "transport") from None
        if not 200 <= response.status_code < 300:
            raise _error(f"intent extractor answered HTTP {response.status_code}", "status")
        return _parse_reply(response.content)

    async def aclose(self) -> None:
        """Close the HTTP client if the extractor created it."""
        if self._owns_client:
            await self._client.aclose()

    async def __aenter__(self) -> HttpExtractor:
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self.aclose()

    def clear_cache(self) -> None:
        self._cache.clear()


def _positive(value: Any) -> bool:
    return (
        not isinstance(value, bool) and isinstance(value, int | float) and math.isfinite(value) and value > 0
    )


def _error(message: str, failure: str) -> DependencyError:
    return DependencyError(message, metadata={"dependency": "intent_extractor", "failure": failure})


def _malformed(detail: str) -> DependencyError:
    return _error(f"intent extractor reply is malformed: {detail}", "malformed")


def _parse_reply(body: bytes) -> Intent:
    try:
        doc = json.loads(body)
    except (ValueError, RecursionError):
        raise _malformed("body is not JSON") from None
    if not isinstance(doc, dict) or not isinstance(doc.get("intent"), dict):
        raise _malformed("expected an object with an 'intent' object")
    intent = doc["intent"]
    missing = [f for f in _INTENT_FIELDS if f not in intent]
    if missing:
        raise _malformed(f"intent is missing {', '.join(missing)}")
    for name in ("summary", "rationale"):
        if not isinstance(intent[name], str):
            raise _malformed(f"intent.{name} must be a string")
    confidence = intent["confidence"]
    if (
        isinstance(confidence, bool)
        or not isinstance(confidence, int | float)
        or not math.isfinite(confidence)
        or not 0 <= confidence <= 1
    ):
        raise _malformed("intent.confidence must be a number in [0, 1]")
    tools = {name: _tool_list(intent[name], name) for name in ("allowed_tools", "forbidden_tools")}
    return Intent(
        allowed_tools=tools["allowed_tools"],
        forbidden_tools=tools["forbidden_tools"],
        confidence=float(confidence),
        rationale=intent["rationale"],
        source="http",
        summary=intent["summary"],
        # optional: a classifier may say it did not understand the prompt even if it named tools
        determined=intent["determined"] if isinstance(intent.get("determined"), bool) else None,
    )


def _tool_list(value: Any, name: str) -> frozenset[str]:
    if not isinstance(value, list):
        raise _malformed(f"intent.{name} must be a list of tool names")
    if len(value) > MAX_TOOLS:
        raise _malformed(f"intent.{name} has more than {MAX_TOOLS} entries")
    for tool in value:
        if not isinstance(tool, str) or not tool or len(tool) > MAX_TOOL_NAME:
            raise _malformed(
                f"intent.{name} must contain non-empty strings of at most {MAX_TOOL_NAME} characters"
            )
    return frozenset(value)
