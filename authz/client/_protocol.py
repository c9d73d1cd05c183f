"""The wire contract (ARCHITECTURE §2) without I/O: requests to build, replies to judge.

:class:`Gateway` and :class:`AsyncGateway` differ only in how they send and sleep; everything they
decide is here, so the two cannot drift apart.
"""

from __future__ import annotations

import base64
import json
import re
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import quote

from ._errors import GatewayError, ProtocolError, TesseraError, error_from_rpc

MCP_PATH = "/v1/mcp"
DECISION_HEADER = "x-tessera-decision-id"
PROMPT_HEADER = "X-Intent-Prompt"
APPROVAL_HEADER = "X-Approval-Id"
PROVENANCE_HEADER = "X-Memory-Provenance"
TOKEN_ENV = "TESSERA_TOKEN"

#: Approval polling: first pause, growth factor and longest pause between two attempts (seconds).
POLL_FIRST = 0.25
POLL_FACTOR = 2.0
POLL_MAX = 5.0

_BODY_EXCERPT = 2000


#: ``/v1/mcp`` or one of several tool servers behind the gateway, ``/v1/mcp/<name>`` (docs/mcp.md).
_MCP_ENDPOINT = re.compile(r"/v1/mcp(/[a-z0-9_-]+)?$")


def endpoint(url: str) -> str:
    """``http://host:8080`` → ``http://host:8080/v1/mcp``; a URL already ending in ``/v1/mcp`` or in a
    named server's ``/v1/mcp/<name>`` is kept."""
    if not isinstance(url, str) or not url.strip():
        raise ValueError("the gateway URL must be a non-empty string, e.g. http://127.0.0.1:8080")
    url = url.strip().rstrip("/")
    return url if _MCP_ENDPOINT.search(url) else url + MCP_PATH


def encode_prompt(prompt: str) -> str:
    """Percent-encode UTF-8 so a prompt in any language (and with newlines) fits one header value."""
    if not isinstance(prompt, str):
        raise TypeError(f"intent_prompt must be a str, got {type(prompt).__name__}")
    return quote(prompt, safe="")


def encode_provenance(entries: Sequence[Mapping[str, Any]]) -> str:
    """Signed memory entries as the ``X-Memory-Provenance`` value: base64url (no padding) of JSON."""
    if isinstance(entries, str | bytes) or not isinstance(entries, Sequence):
        raise TypeError("provenance must be a sequence of signed memory entries (dicts)")
    raw = json.dumps(list(entries), separators=(",", ":"), ensure_ascii=False).encode()
    return base64.urlsafe_b64encode(raw).decode("ascii").rstrip("=")


def headers_for(
    token: str | None,
    *,
    intent_prompt: str | None = None,
    approval_id: str | None = None,
    provenance: Sequence[Mapping[str, Any]] | None = None,
) -> dict[str, str]:
    """The Tessera request headers (without content negotiation)."""
    headers: dict[str, str] = {}
    if token:
        headers["Authorization"] = f"Bearer {token}"
    if intent_prompt is not None:
        headers[PROMPT_HEADER] = encode_prompt(intent_prompt)
    if approval_id is not None:
        if not isinstance(approval_id, str) or not approval_id.isprintable() or not approval_id.strip():
            raise ValueError("approval_id must be a non-empty printable string")
        headers[APPROVAL_HEADER] = approval_id.strip()
    if provenance is not None:
        headers[PROVENANCE_HEADER] = encode_provenance(provenance)
    return headers


def clean_token(token: str | None) -> str | None:
    if token is None:
        return None
    if not isinstance(token, str):
        raise TypeError(f"token must be a str, got {type(token).__name__}")
    token = token.strip()
    if token.lower().startswith("bearer "):
        token = token[7:].strip()
    if any(ch.isspace() or not ch.isprintable() for ch in token):
        raise ValueError("token must not contain whitespace or control characters")
    return token or None


@dataclass(frozen=True, slots=True)
class ToolResult:
    """What a tool returned through the gateway.

    ``content`` holds the MCP content blocks exactly as the server sent them (dicts: ``text``, ``image``,
    ``audio``, ``resource``, ``resource_link``... with every field kept); ``structured_content`` is the
    tool's structured output (None if it has none); ``is_error`` is MCP's ``isError``: the call was
    authorized and the tool ran, but reported a failure. ``decision_id`` is the gateway's audit id for
    the allow decision; ``raw`` the whole JSON-RPC ``result`` object.
    """

    content: list[dict[str, Any]]
    is_error: bool = False
    structured_content: Any = None
    decision_id: str | None = None
    meta: dict[str, Any] | None = None
    request_id: Any = None
    raw: dict[str, Any] = field(default_factory=dict, repr=False)

    @property
    def text(self) -> str:
        """The text blocks joined by newlines (empty when the tool returned no text)."""
        return "\n".join(
            block["text"]
            for block in self.content
            if block.get("type") == "text" and isinstance(block.get("text"), str)
        )

    def blocks(self, kind: str) -> list[dict[str, Any]]:
        """The content blocks of one type, e.g. ``result.blocks("image")``."""
        return [block for block in self.content if block.get("type") == kind]

    @classmethod
    def from_result(cls, result: Any, *, decision_id: str | None, request_id: Any) -> ToolResult:
        if not isinstance(result, dict):
            raise ProtocolError(None, "malformed tools/call result: not an object", decision_id=decision_id)
        content = result.get("content", [])
        if not isinstance(content, list) or not all(isinstance(block, dict) for block in content):
            raise ProtocolError(
                None, "malformed tools/call result: content is not a list of blocks", decision_id=decision_id
            )
        meta = result.get("_meta")
        return cls(
            content=content,
            is_error=result.get("isError") is True,
            structured_content=result.get("structuredContent"),
            decision_id=decision_id,
            meta=meta if isinstance(meta, dict) else None,
            request_id=request_id,
            raw=result,
        )


def rpc_body(method: str, params: Mapping[str, Any] | None, request_id: Any) -> bytes:
    message: dict[str, Any] = {"jsonrpc": "2.0", "id": request_id, "method": method}
    if params is not None:
        message["params"] = dict(params)
    return json.dumps(message, separators=(",", ":"), ensure_ascii=False, allow_nan=False).encode()


def tool_call_params(tool: str, arguments: Mapping[str, Any] | None) -> dict[str, Any]:
    if not isinstance(tool, str) or not tool:
        raise ValueError("tool must be a non-empty string")
    if arguments is None:
        arguments = {}
    if not isinstance(arguments, Mapping):
        raise TypeError(f"arguments must be a mapping, got {type(arguments).__name__}")
    return {"name": tool, "arguments": dict(arguments)}


def _retry_after(headers: Mapping[str, str]) -> float | None:
    value = headers.get("retry-after")
    if value is None:
        return None
    try:
        seconds = float(value)
    except ValueError:
        return None  # an HTTP date: rare here, not worth a parser
    return seconds if seconds >= 0 else None


def _excerpt(body: bytes) -> str:
    text = body[:_BODY_EXCERPT].decode("utf-8", "replace")
    return text + ("..." if len(body) > _BODY_EXCERPT else "")


def _sse_messages(body: bytes) -> Iterator[Any]:
    """JSON payloads of the ``data:`` lines of a text/event-stream body, one per event."""
    for event in body.decode("utf-8", "replace").replace("\r\n", "\n").replace("\r", "\n").split("\n\n"):
        lines = [line[5:].removeprefix(" ") for line in event.split("\n") if line.startswith("data:")]
        if lines:
            try:
                yield json.loads("\n".join(lines))
            except ValueError:
                continue


def parse_reply(
    status: int, headers: Mapping[str, str], body: bytes, request_id: Any
) -> tuple[Any, str | None]:
    """Judge one HTTP reply to a JSON-RPC request: its ``result`` and the decision id, or raise.

    ``headers`` must be case-insensitive (httpx's are). Non-2xx and non-JSON bodies raise
    :class:`GatewayError`; a JSON-RPC error raises its typed class; anything else malformed raises
    :class:`ProtocolError`.
    """
    decision_id = headers.get(DECISION_HEADER) or None
    content_type = headers.get("content-type", "").split(";")[0].strip().lower()
    if not 200 <= status < 300:
        raise _status_error(status, headers, body, decision_id)
    if content_type == "text/event-stream":
        message = next(
            (m for m in _sse_messages(body) if isinstance(m, dict) and ("result" in m or "error" in m)), None
        )
        if message is None:
            raise GatewayError(
                "the gateway's event stream carried no JSON-RPC response",
                http_status=status,
                body=_excerpt(body),
                decision_id=decision_id,
            )
    else:
        try:
            message = json.loads(body)
        except (ValueError, UnicodeDecodeError):
            raise GatewayError(
                "the gateway answered with a body that is not JSON"
                + (f" ({content_type})" if content_type else ""),
                http_status=status,
                body=_excerpt(body),
                decision_id=decision_id,
            ) from None
    return judge_message(message, request_id, decision_id=decision_id, retry_after=_retry_after(headers))


def judge_message(
    message: Any, request_id: Any, *, decision_id: str | None = None, retry_after: float | None = None
) -> tuple[Any, str | None]:
    if not isinstance(message, dict) or message.get("jsonrpc") != "2.0":
        raise ProtocolError(None, "the reply is not a JSON-RPC 2.0 response", decision_id=decision_id)
    if "error" in message:
        # An error may carry id null when the server could not read the request's id.
        if message.get("id") not in (request_id, None):
            raise ProtocolError(None, f"the reply answers request {message.get('id')!r}, not {request_id!r}")
        raise error_from_rpc(message["error"], decision_id=decision_id, retry_after=retry_after)
    if message.get("id") != request_id:
        raise ProtocolError(
            None,
            f"the reply answers request {message.get('id')!r}, not {request_id!r}",
            decision_id=decision_id,
        )
    if "result" not in message:
        raise ProtocolError(None, "the reply has neither result nor error", decision_id=decision_id)
    return message["result"], decision_id


def _status_error(
    status: int, headers: Mapping[str, str], body: bytes, decision_id: str | None
) -> TesseraError:
    code: int | None = None
    data: dict[str, Any] | None = None
    message = f"the gateway answered HTTP {status}"
    try:
        doc = json.loads(body) if body else None
    except (ValueError, UnicodeDecodeError):
        doc = None
    error = doc.get("error") if isinstance(doc, dict) else None
    if isinstance(error, dict):  # e.g. a denied notification (403) carries the JSON-RPC error
        typed = error_from_rpc(error, decision_id=decision_id)
        code, data = typed.code, typed.data
        message = f"{message}: {typed.message}"
    return GatewayError(
        message,
        http_status=status,
        body=_excerpt(body),
        retry_after=_retry_after(headers),
        code=code,
        data=data,
        decision_id=decision_id,
    )


def transport_error(exc: BaseException, url: str) -> GatewayError:
    kind = type(exc).__name__
    detail = str(exc).strip()
    return GatewayError(f"cannot reach the gateway at {url}: {kind}" + (f": {detail}" if detail else ""))


def poll_delays() -> Iterator[float]:
    """Pauses between approval polls: 0.25, 0.5, 1, 2, 4, 5, 5, ..."""
    delay = POLL_FIRST
    while True:
        yield delay
        delay = min(delay * POLL_FACTOR, POLL_MAX)


def next_page(result: Any) -> tuple[list[dict[str, Any]], str | None]:
    """The tools of one ``tools/list`` page and the cursor of the next (None at the end)."""
    if not isinstance(result, dict) or not isinstance(result.get("tools", []), list):
        raise ProtocolError(None, "malformed tools/list result")
    cursor = result.get("nextCursor")
    return [t for t in result.get("tools", []) if isinstance(t, dict)], cursor if isinstance(
        cursor, str
    ) else None
