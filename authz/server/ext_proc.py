"""Envoy external processing (``envoy.service.ext_proc.v3.ExternalProcessor``) for MCP list responses.

Transport only: Envoy runs this processor on the gateway's list routes alone (the check service marks an
allowed ``tools/list``, ``prompts/list``, ``resources/list``, ``resources/templates/list`` and every MCP
GET stream with ``x-tessera-list`` and the route cache is cleared, so tool calls never come here). For a
list response Envoy sends the response headers, then the whole buffered body; the body goes back with
the list filtered by :class:`authz.check.listing.ListFilter`. A GET stream (which may replay earlier
list results when resumed with ``Last-Event-ID``) comes chunk by chunk (``STREAMED``) and is filtered
event by event (:class:`SseStreamFilter`).

Both framings of MCP streamable HTTP are handled: ``application/json`` (one message or a batch) and
``text/event-stream`` (each event's ``data`` is one JSON-RPC message; other fields are kept).

Fail closed: a missing caller context, a body that cannot be parsed, an unexpected result shape or any
exception answers the client with a JSON-RPC error (-32018, the request's id) as an immediate response,
never the unfiltered list. If this processor cannot be reached or is too slow, Envoy's own failure reply
is rewritten into the same JSON-RPC error by the gateway config (``local_reply_config``).
"""

from __future__ import annotations

import json
import logging
import time
from collections.abc import AsyncIterator
from typing import Any

from envoy.config.core.v3 import base_pb2
from envoy.service.ext_proc.v3 import external_processor_pb2 as pb
from envoy.service.ext_proc.v3 import external_processor_pb2_grpc
from envoy.type.v3 import http_status_pb2
from google.protobuf.json_format import MessageToDict

from authz.audit import list_event
from authz.check.listing import (
    METADATA_KEY,
    STREAM_METHOD,
    ListContext,
    ListContextError,
    ListFilter,
    ListTally,
)
from authz.check.models import RETRY_AFTER_MS, Code

log = logging.getLogger("tessera.list")

#: Where the check service's dynamic metadata reaches the processor.
EXT_AUTHZ_NAMESPACE = "envoy.filters.http.ext_authz"


class ListWithheld(Exception):
    """The list cannot be shown filtered, so it is not shown at all."""


class ListProcessor(external_processor_pb2_grpc.ExternalProcessorServicer):
    """``ExternalProcessor/Process``: one stream per list response (or per MCP GET stream).

    ``recorder`` (a :class:`~authz.audit.ChainRecorder`) receives one audit event per list answer
    handled: how many items of each kind were listed and withheld, or why the answer was withheld.
    The filtered list is sent on only after its event is committed; when that fails, it is withheld.
    """

    def __init__(self, listing: ListFilter, *, metrics: Any = None, recorder: Any = None):
        self._listing = listing
        self._metrics = metrics
        self._recorder = recorder

    async def Process(
        self, request_iterator: AsyncIterator[pb.ProcessingRequest], context: Any
    ) -> AsyncIterator[pb.ProcessingResponse]:
        ctx: ListContext | None = None
        ctx_error: str | None = None
        content_type = ""
        stream: SseStreamFilter | None = None
        async for request in request_iterator:
            if ctx is None and ctx_error is None and request.HasField("metadata_context"):
                try:
                    ctx = _context(request.metadata_context)
                except ListContextError as exc:
                    ctx_error = str(exc)
            kind = request.WhichOneof("request")
            if kind == "response_headers":
                content_type = _header(request.response_headers, "content-type")
                # The body is rewritten, so its length changes: let Envoy frame it.
                yield pb.ProcessingResponse(
                    response_headers=pb.HeadersResponse(
                        response=pb.CommonResponse(
                            header_mutation=_mutation_remove("content-length"),
                        )
                    )
                )
            elif kind == "response_body":
                chunk = request.response_body
                try:
                    if ctx is None:
                        raise ListWithheld(ctx_error or "no caller context for the list response")
                    tally = ListTally()
                    if ctx.method == STREAM_METHOD:
                        if stream is None:
                            stream = SseStreamFilter(self._listing, ctx, content_type)
                        body = await stream.feed(chunk.body, end=chunk.end_of_stream, tally=tally)
                    else:
                        body = await filter_body(self._listing, ctx, content_type, chunk.body, tally=tally)
                    if tally:  # a list result was in it (not an error, not a stream's keep-alive)
                        await self._audit(ctx, tally, "filtered", "")
                except Exception as exc:  # fail closed: never the unfiltered list
                    reason = f"the list could not be filtered: {_describe(exc)}"
                    log.warning("list response withheld: %s", exc)
                    if ctx is not None:
                        await self._audit(ctx, ListTally(), "withheld", reason, quiet=True)
                    # Mid-stream (headers already sent) Envoy resets the stream: the client loses the
                    # stream, never sees the list.
                    yield withheld_response(ctx, reason)
                    return
                yield pb.ProcessingResponse(
                    response_body=pb.BodyResponse(
                        response=pb.CommonResponse(body_mutation=pb.BodyMutation(body=body))
                    )
                )
            elif kind == "request_headers":
                yield pb.ProcessingResponse(request_headers=pb.HeadersResponse())
            elif kind == "request_body":
                yield pb.ProcessingResponse(request_body=pb.BodyResponse())
            elif kind == "request_trailers":
                yield pb.ProcessingResponse(request_trailers=pb.TrailersResponse())
            elif kind == "response_trailers":
                yield pb.ProcessingResponse(response_trailers=pb.TrailersResponse())

    async def _audit(
        self, ctx: ListContext, tally: ListTally, outcome: str, reason: str, *, quiet: bool = False
    ) -> None:
        """Commit the list answer's audit event; raises (the list is then withheld) unless ``quiet``."""
        if self._recorder is None:
            return
        event = list_event(
            ctx.tenant,
            agent=ctx.agent,
            token_id=ctx.token_id,
            jti=ctx.jti,
            method=ctx.method,
            server=ctx.server,
            listed=tally.listed,
            withheld=tally.withheld,
            outcome=outcome,
            reason=reason,
            time_ms=time.time_ns() // 1_000_000,
            failed=tally.failed,
        )
        try:
            await self._recorder.record_events([(ctx.tenant, event)])
        except Exception as exc:
            if not quiet:
                raise ListWithheld(f"the list's audit event could not be written: {_describe(exc)}") from exc
            log.error("audit of a withheld list failed: %s", exc)


def _context(metadata: base_pb2.Metadata) -> ListContext:
    if EXT_AUTHZ_NAMESPACE not in metadata.filter_metadata:
        raise ListContextError("no list context in the request's metadata")
    data = MessageToDict(metadata.filter_metadata[EXT_AUTHZ_NAMESPACE]).get(METADATA_KEY)
    if not isinstance(data, dict):
        raise ListContextError("no list context in the request's metadata")
    return ListContext.from_metadata(data)


def _header(headers: pb.HttpHeaders, name: str) -> str:
    for h in headers.headers.headers:
        if h.key.lower() == name:
            return (h.raw_value.decode("latin-1") if h.raw_value else h.value).strip()
    return ""


def _mutation_remove(name: str) -> pb.HeaderMutation:
    return pb.HeaderMutation(remove_headers=[name])


async def filter_body(
    listing: ListFilter, ctx: ListContext, content_type: str, body: bytes, *, tally: ListTally | None = None
) -> bytes:
    """The upstream's list body with the list filtered, in the framing it came in."""
    media = _media(content_type)
    if not body.strip():
        return body  # e.g. 202 for a notification: nothing listed
    if media == "text/event-stream":
        return await _filter_sse(listing, ctx, body, tally)
    if media == "application/json" or media.endswith("+json"):
        doc = json.loads(body)
        if isinstance(doc, list):
            doc = [await listing.filter_message(ctx, m, in_batch=True, tally=tally) for m in doc]
        else:
            doc = await listing.filter_message(ctx, doc, tally=tally)
        return _dumps(doc)
    raise ListWithheld(f"unexpected content type {content_type!r} for a list response")


def _media(content_type: str) -> str:
    return content_type.split(";", 1)[0].strip().lower()


#: A GET stream's non-SSE answer (an error from the server) is buffered whole up to this size.
MAX_STREAM_BUFFER = 1 << 20


class SseStreamFilter:
    """Filters an MCP GET stream chunk by chunk (Envoy's ``STREAMED`` body mode).

    Complete events (up to the last blank line seen) are filtered and sent on at once; a partial event
    waits for the chunk that completes it, so a list result is never sent before it was filtered. A
    non-SSE answer (a JSON error) is buffered whole and filtered at its end."""

    def __init__(self, listing: ListFilter, ctx: ListContext, content_type: str):
        self._listing = listing
        self._ctx = ctx
        self._sse = _media(content_type) == "text/event-stream"
        self._content_type = content_type
        self._pending = b""

    async def feed(self, chunk: bytes, *, end: bool, tally: ListTally | None = None) -> bytes:
        self._pending += chunk
        if len(self._pending) > MAX_STREAM_BUFFER:
            raise ListWithheld("a stream event larger than the processor's buffer")
        if not self._sse:
            if not end:
                return b""
            body, self._pending = self._pending, b""
            return await filter_body(self._listing, self._ctx, self._content_type, body, tally=tally)
        if end:
            ready, self._pending = self._pending, b""
        else:
            cut = _last_event_end(self._pending)
            if cut == 0:
                return b""
            ready, self._pending = self._pending[:cut], self._pending[cut:]
        return await _filter_sse(self._listing, self._ctx, ready, tally) if ready else b""


def _last_event_end(data: bytes) -> int:
    """The offset just past the last event boundary (a blank line) in ``data``, 0 when there is none.

    A trailing ``\r`` might be the first half of ``\r\n``: a boundary ending there waits for more."""
    best = 0
    for boundary in (b"\n\n", b"\r\n\r\n", b"\r\r", b"\n\r\n", b"\r\n\n"):
        at = data.rfind(boundary)
        if at >= 0:
            best = max(best, at + len(boundary))
    if best and best == len(data) and data.endswith(b"\r"):
        best = _last_event_end(data[:-1])
    return best


async def _filter_sse(
    listing: ListFilter, ctx: ListContext, body: bytes, tally: ListTally | None = None
) -> bytes:
    """Rewrite each event's data; field lines other than ``data`` and the event boundaries are kept."""
    text = body.decode("utf-8").replace("\r\n", "\n").replace("\r", "\n")
    lines = text.split("\n")
    if text.endswith("\n"):
        lines.pop()  # the empty string after the last line ending
    out: list[str] = []
    event: list[str] = []
    data: list[str] = []

    async def flush() -> None:
        payload = "\n".join(data)
        if payload.strip():
            message = await listing.filter_message(ctx, json.loads(payload), tally=tally)
            event.append("data: " + _dumps(message).decode())
        elif data:  # an event without a message (the TypeScript SDK's priming event): as it came
            event.extend("data:" + (" " + line if line else "") for line in data)
        out.extend(event)
        event.clear()
        data.clear()

    for line in lines:
        if line == "":  # the end of an event
            await flush()
            out.append("")
            continue
        name, _, value = line.partition(":")
        if name == "data":
            data.append(value[1:] if value.startswith(" ") else value)
        else:
            event.append(line)  # event:, id:, retry: and comments pass unchanged
    await flush()  # a stream that ends without the final blank line
    return "".join(line + "\n" for line in out).encode()


def _dumps(doc: Any) -> bytes:
    return json.dumps(doc, separators=(",", ":"), ensure_ascii=False).encode()


def withheld_response(ctx: ListContext | None, reason: str) -> pb.ProcessingResponse:
    rpc_id = json.loads(ctx.rpc_id) if ctx is not None else None
    body = {
        "jsonrpc": "2.0",
        "id": rpc_id,
        "error": {
            "code": int(Code.UNAVAILABLE),
            "message": "authorization unavailable",
            "data": {"check": "unavailable", "reason": reason, "retry_after_ms": RETRY_AFTER_MS},
        },
    }
    return pb.ProcessingResponse(
        immediate_response=pb.ImmediateResponse(
            status=http_status_pb2.HttpStatus(code=200),
            headers=pb.HeaderMutation(
                set_headers=[
                    base_pb2.HeaderValueOption(
                        header=base_pb2.HeaderValue(key="content-type", raw_value=b"application/json"),
                        append_action=base_pb2.HeaderValueOption.OVERWRITE_IF_EXISTS_OR_ADD,
                    )
                ]
            ),
            body=_dumps(body),
            details="tessera_list_withheld",
        )
    )


def _describe(exc: BaseException) -> str:
    return str(exc) or type(exc).__name__
