"""The agent-facing wire contract (ARCHITECTURE §2): Envoy CheckRequest in, CheckResponse out.

:func:`parse_request` turns a CheckRequest into the calls to authorize (or a protocol error);
:func:`ok_response` and :func:`denied_response` build what Envoy needs. No policy decisions here.
"""

from __future__ import annotations

import base64
import binascii
import dataclasses
import json
import re
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any
from urllib.parse import unquote_to_bytes

from envoy.config.core.v3 import base_pb2
from envoy.service.auth.v3 import external_auth_pb2
from envoy.type.v3 import http_status_pb2
from google.rpc import code_pb2, status_pb2

from authz.check.listing import LIST_HEADER, METADATA_KEY, ListContextError, item_of, one_context
from authz.check.models import Check, CheckInput, Code, Decision, Outcome, new_decision_id, unavailable
from authz.config import BodyLimitsConfig
from authz.receipts import HEADER as RECEIPT_HEADER
from authz.server import body as body_limits
from authz.token import AuthenticatedToken, item_violation

TESSERA_HEADER_PREFIX = "x-tessera-"
DECISION_HEADER = "x-tessera-decision-id"
TRACE_HEADER = "x-tessera-trace-id"
_OVERWRITE = base_pb2.HeaderValueOption.OVERWRITE_IF_EXISTS_OR_ADD
DEFAULT_LIMITS = BodyLimitsConfig()

#: HTTP status of a /v1/tool-call denial by check (ARCHITECTURE §2).
TOOL_CALL_STATUS = {
    Check.CAPABILITY: 401,
    Check.INTENT: 403,
    Check.POLICY: 403,
    Check.PROVENANCE: 403,
    Check.BUDGET: 429,
    Check.APPROVAL: 202,
    Check.UNAVAILABLE: 503,
    Check.PROTOCOL: 400,
}


@dataclass(frozen=True, slots=True)
class Message:
    """One JSON-RPC message of an MCP body (or the one call of a /v1/tool-call body)."""

    input: CheckInput
    request_id: Any = None
    is_notification: bool = False


@dataclass(frozen=True, slots=True)
class ParsedRequest:
    """Either the messages to authorize or a protocol error to answer at once."""

    transport: str
    messages: tuple[Message, ...] = ()
    batch: bool = False
    protocol_error: tuple[int, str, Any] | None = None  # (code, message, id)
    client_tessera_headers: tuple[str, ...] = ()
    #: OAuth resource-server mode (route context ``resource_metadata``): the RFC 9728 metadata URL that a
    #: 401 names in ``WWW-Authenticate``; None keeps the IntentGate-compatible JSON-RPC-200 denials.
    resource_metadata: str | None = None
    token_verified: bool = False  # set in that mode: did the bearer token's signature verify?


class _Headers:
    """Lower-cased request headers; keeps repeats so an ambiguous credential can be refused.

    Values stay as Envoy sent them (raw bytes with ``encode_raw_headers``) until a header is read:
    only a handful of the dozen or so headers of a request are ever needed.
    """

    __slots__ = ("values",)

    def __init__(self, http: Any):
        values: dict[str, list[Any]] = {}
        if http.header_map.headers:
            for h in http.header_map.headers:
                values.setdefault(h.key.lower(), []).append(h)
        else:
            for key, value in http.headers.items():
                values.setdefault(key.lower(), []).append(value)
        self.values = values

    def one(self, name: str) -> str | None:
        found = self.values.get(name)
        if not found:
            return None
        if len(found) > 1:
            raise _ProtocolError(Code.INVALID_REQUEST, f"header {name} was sent more than once")
        value = found[0]
        if isinstance(value, str):
            return value
        raw = value.raw_value if value.raw_value else value.value.encode()
        return raw.decode("utf-8", "surrogateescape")


class _ProtocolError(Exception):
    def __init__(self, code: int, message: str, request_id: Any = None, check: Check = Check.PROTOCOL):
        super().__init__(message)
        self.code, self.message, self.request_id, self.check = int(code), message, request_id, check


def _bearer(headers: _Headers) -> str | None:
    value = headers.one("authorization")
    if value is None:
        return None
    scheme, _, token = value.strip().partition(" ")
    if scheme.lower() != "bearer" or not token.strip():
        return ""  # present but unusable: the capability stage denies "missing"
    return token.strip()


def _prompt(headers: _Headers) -> str | None:
    raw = headers.one("x-intent-prompt")
    if raw is None:
        return None
    try:
        return unquote_to_bytes(raw).decode("utf-8")
    except UnicodeDecodeError:
        raise _ProtocolError(Code.INVALID_REQUEST, "X-Intent-Prompt is not percent-encoded UTF-8") from None


def _provenance_header(headers: _Headers) -> Any:
    raw = headers.one("x-memory-provenance")
    if raw is None:
        return None
    try:
        return json.loads(base64.urlsafe_b64decode(raw + "=" * (-len(raw) % 4)))
    except (binascii.Error, ValueError):
        return {"malformed": "X-Memory-Provenance is not base64url JSON"}


def parse_request(
    request: external_auth_pb2.CheckRequest,
    *,
    deadline: float | None,
    limits: body_limits.Limits = DEFAULT_LIMITS,
    authenticates: Callable[[str | None], bool] | None = None,
) -> ParsedRequest:
    """Translate a CheckRequest; ``authenticates`` (token → does its signature verify?) lets the body
    of a caller without a valid token go unparsed unless it is small (:mod:`authz.server.body`)."""
    parsed = _parse_request(request, deadline=deadline, limits=limits, authenticates=authenticates)
    metadata_url = request.attributes.context_extensions.get("resource_metadata")
    if not metadata_url:
        return parsed
    token = parsed.messages[0].input.token if parsed.messages else None
    pinned = request.attributes.context_extensions.get("tenant")
    # On a route pinned to a tenant, a token of another tenant is not a credential for this resource:
    # challenged like one that does not verify, so an OAuth client goes to this tenant's servers.
    verified = (
        bool(token)
        and authenticates is not None
        and (authenticates(token, tenant=pinned) if pinned else authenticates(token))
    )
    return dataclasses.replace(parsed, resource_metadata=metadata_url, token_verified=verified)


def _parse_request(
    request: external_auth_pb2.CheckRequest,
    *,
    deadline: float | None,
    limits: body_limits.Limits,
    authenticates: Callable[[str | None], bool] | None,
) -> ParsedRequest:
    attrs = request.attributes
    http = attrs.request.http
    ext = attrs.context_extensions
    # Each read of a protobuf field builds a new Python object: every field is read once.
    method, path = http.method, http.path
    route = ext.get("route") or ("tool-call" if path.startswith("/v1/tool-call") else "mcp")
    try:
        headers = _Headers(http)
        spoofed = tuple(name for name in headers.values if name.startswith(TESSERA_HEADER_PREFIX))
        base = {
            "transport": route,
            "http_method": method,
            "path": path,
            "source_ip": attrs.source.address.socket_address.address,
            "token": _bearer(headers),
            "intent_prompt": _prompt(headers),
            "approval_id": headers.one("x-approval-id"),
            "provenance": _provenance_header(headers),
            "pinned_tenant": ext.get("tenant") or None,
            "server": ext.get("server") or None,
            "deadline": deadline,
        }
        body = http.raw_body or http.body.encode()
        if method != "POST" and (route == "tool-call" or body.strip()):
            # Only POST carries a call: a tool call sent with GET or DELETE is refused here rather than
            # forwarded after a token-only check (the upstream might act on it).
            raise _ProtocolError(
                Code.INVALID_REQUEST, f"invalid request: a call must be sent with POST, not {method}"
            )
        if (
            authenticates is not None
            and len(body) > limits.preauth_bytes
            and not authenticates(base["token"])
        ):
            # Not authenticated and too large to be worth reading: deny on the token without the body.
            return ParsedRequest(route, (Message(CheckInput(**base)),), client_tessera_headers=spoofed)
        if route == "tool-call":
            return ParsedRequest(
                route, (_tool_call_message(body, base, limits),), client_tessera_headers=spoofed
            )
        if method != "POST":  # GET opens the SSE stream, DELETE ends a session: token only
            return ParsedRequest(route, (Message(CheckInput(**base)),), client_tessera_headers=spoofed)
        messages, batch = _mcp_messages(body, base, limits)
        return ParsedRequest(route, messages, batch=batch, client_tessera_headers=spoofed)
    except _ProtocolError as exc:
        return ParsedRequest(route, protocol_error=(exc.code, exc.message, exc.request_id))


def _load_body(body: bytes, limits: body_limits.Limits) -> Any:
    try:
        return body_limits.load_bounded(body, limits)
    except body_limits.BodyError as exc:
        doc = exc.doc
        request_id = doc.get("id") if isinstance(doc, dict) and _valid_id(doc.get("id")) else None
        raise _ProtocolError(exc.code, exc.message, request_id) from None


def _tool_call_message(body: bytes, base: dict[str, Any], limits: body_limits.Limits) -> Message:
    doc = _load_body(body, limits)
    if not isinstance(doc, dict) or not isinstance(doc.get("tool"), str) or not doc["tool"]:
        raise _ProtocolError(Code.INVALID_REQUEST, 'body must be {"tool": "<name>", "arguments": {...}}')
    arguments = doc.get("arguments", {})
    if not isinstance(arguments, dict):
        raise _ProtocolError(Code.INVALID_PARAMS, "arguments must be a JSON object")
    return Message(CheckInput(**base, rpc_method="tools/call", tool=doc["tool"], arguments=arguments))


def _valid_id(value: Any) -> bool:
    return value is None or (isinstance(value, str | int | float) and not isinstance(value, bool))


def _mcp_messages(
    body: bytes, base: dict[str, Any], limits: body_limits.Limits
) -> tuple[tuple[Message, ...], bool]:
    doc = _load_body(body, limits)
    batch = isinstance(doc, list)
    items = doc if batch else [doc]
    if not items:
        raise _ProtocolError(Code.INVALID_REQUEST, "empty JSON-RPC batch")
    if len(items) > limits.max_batch:
        raise _ProtocolError(
            Code.INVALID_REQUEST, f"invalid request: a batch may hold at most {limits.max_batch} messages"
        )
    return tuple(_mcp_message(item, base) for item in items), batch


def _mcp_message(item: Any, base: dict[str, Any]) -> Message:
    if not isinstance(item, dict):
        raise _ProtocolError(Code.INVALID_REQUEST, "invalid request: a JSON-RPC message must be an object")
    request_id = item.get("id")
    if not _valid_id(request_id):
        raise _ProtocolError(Code.INVALID_REQUEST, "invalid request: id must be a string, number or null")
    if item.get("jsonrpc") != "2.0":
        raise _ProtocolError(Code.INVALID_REQUEST, 'invalid request: "jsonrpc" must be "2.0"', request_id)
    method = item.get("method")
    if method is None:
        if "result" in item or "error" in item:  # the client answering a server request: token only
            return Message(CheckInput(**base, rpc_method="response"), request_id)
        raise _ProtocolError(Code.INVALID_REQUEST, "invalid request: method missing", request_id)
    if not isinstance(method, str):
        raise _ProtocolError(Code.INVALID_REQUEST, "invalid request: method must be a string", request_id)
    notification = "id" not in item
    params = item.get("params", {})
    if params is None:
        params = {}
    if not isinstance(params, dict | list):
        raise _ProtocolError(
            Code.INVALID_REQUEST, "invalid request: params must be an object or array", request_id
        )
    meta = params.get("_meta") if isinstance(params, dict) else None
    fields = dict(base)
    if isinstance(meta, dict):
        if isinstance(meta.get("tessera/intent-prompt"), str):
            fields["intent_prompt"] = meta["tessera/intent-prompt"]
        if isinstance(meta.get("tessera/approval-id"), str):
            fields["approval_id"] = meta["tessera/approval-id"]
        if "tessera/provenance" in meta:
            fields["provenance"] = meta["tessera/provenance"]
    if method != "tools/call":
        try:
            item = item_of(method, params)  # a prompt or resource read is decided like its list entry
        except ValueError as exc:
            raise _ProtocolError(Code.INVALID_PARAMS, f"invalid params: {exc}", request_id) from None
        if item is not None:
            fields["item_kind"], fields["item"] = item
        return Message(CheckInput(**fields, rpc_method=method), request_id, notification)
    if not isinstance(params, dict) or not isinstance(params.get("name"), str) or not params["name"]:
        raise _ProtocolError(Code.INVALID_PARAMS, "invalid params: tools/call needs a tool name", request_id)
    arguments = params.get("arguments", {})
    if arguments is None:
        arguments = {}
    if not isinstance(arguments, dict):
        raise _ProtocolError(Code.INVALID_PARAMS, "invalid params: arguments must be an object", request_id)
    return Message(
        CheckInput(**fields, rpc_method=method, tool=params["name"], arguments=arguments),
        request_id,
        notification,
    )


# -- responses --------------------------------------------------------------------------------------------


def _header(name: str, value: str, *, overwrite: bool = False) -> base_pb2.HeaderValueOption:
    option = base_pb2.HeaderValueOption(header=base_pb2.HeaderValue(key=name, value=value))
    if overwrite:
        option.append_action = _OVERWRITE
    return option


def ok_response(
    decision: Decision, parsed: ParsedRequest, *, strip_authorization: bool
) -> external_auth_pb2.CheckResponse:
    """Forward: set x-tessera-* for the upstream, drop the bearer token and any client-sent x-tessera-*."""
    ours = {DECISION_HEADER: decision.decision_id}
    if decision.tenant:
        ours["x-tessera-tenant"] = decision.tenant
    if decision.agent:
        ours["x-tessera-agent"] = decision.agent
    remove = [name for name in parsed.client_tessera_headers if name not in ours]
    if strip_authorization:
        remove.append("authorization")
    # Built in place (``add()`` and field assignment): about 3x cheaper than nesting constructor
    # keyword arguments, which builds each sub-message and then copies it into its parent.
    reply = external_auth_pb2.CheckResponse()
    reply.status.code = code_pb2.OK  # present (an empty Status), as Envoy's own OK replies are
    reply.status.SetInParent()
    ok = reply.ok_response
    headers = ok.headers
    for name, value in ours.items():
        _add_header(headers, name, value, overwrite=True)
    ok.headers_to_remove.extend(remove)
    _add_header(ok.response_headers_to_add, DECISION_HEADER, decision.decision_id, overwrite=True)
    return reply


def _add_header(options: Any, name: str, value: str, *, overwrite: bool = False) -> None:
    """Append a header option to the repeated ``HeaderValueOption`` field ``options``."""
    option = options.add()
    header = option.header
    header.key = name
    header.value = value
    if overwrite:
        option.append_action = _OVERWRITE


def add_receipt(
    reply: external_auth_pb2.CheckResponse,
    signer: Any,
    request: external_auth_pb2.CheckRequest,
    decisions: Sequence[Decision],
    positions: Sequence[tuple[str, int, str]],
) -> None:
    """Add ``x-tessera-receipt`` (:mod:`authz.receipts`) to an allowed request forwarded upstream.

    It binds the exact body Envoy forwards (``pack_as_bytes``: the bytes, not a re-encoding) and the
    last message's decision and audit position (recorded before this answer)."""
    http = request.attributes.request.http
    last = decisions[-1]
    seq, chain = (positions[-1][1], positions[-1][2]) if len(positions) == len(decisions) else (None, None)
    receipt = signer.issue(
        tenant=last.tenant,
        agent=last.agent,
        tool=last.tool if len(decisions) == 1 else None,
        body=http.raw_body if http.raw_body else http.body.encode(),
        decision_id=last.decision_id,
        audit_seq=seq,
        audit_hash=chain,
        server=request.attributes.context_extensions.get("server") or None,
    )
    _add_header(reply.ok_response.headers, RECEIPT_HEADER, receipt, overwrite=True)


def mark_list_request(
    reply: external_auth_pb2.CheckResponse, parsed: ParsedRequest, decisions: Sequence[Decision], listing: Any
) -> external_auth_pb2.CheckResponse | None:
    """Route an allowed list request through the list processor (:mod:`authz.server.ext_proc`).

    Adds the ``x-tessera-list`` request header (the gateway's list route matches it) and the caller's
    :class:`~authz.check.listing.ListContext` as dynamic metadata. Returns a deny reply instead when
    the context cannot be built: a list that cannot be filtered is not forwarded.
    """
    contexts = []
    for message, decision in zip(parsed.messages, decisions, strict=False):
        try:
            ctx = listing.context_for(message.input, decision, message.request_id)
        except ListContextError as exc:
            denial = unavailable(decision, str(exc))
            return deny_for(parsed, denial, parsed.messages)
        if ctx is not None:
            contexts.append(ctx)
    if contexts:  # one context per request: a batch of several list methods filters each result it holds
        ctx = one_context(contexts)
        reply.ok_response.headers.append(_header(LIST_HEADER, ctx.method, overwrite=True))
        reply.dynamic_metadata.update({METADATA_KEY: ctx.to_metadata()})
    return None


def error_object(code: int, message: str, data: dict[str, Any] | None) -> dict[str, Any]:
    error: dict[str, Any] = {"code": code, "message": message}
    if data:
        error["data"] = data
    return error


def decision_error(decision: Decision) -> dict[str, Any]:
    """The JSON-RPC ``error`` member for a non-allow decision."""
    data = {"check": str(decision.check), "reason": decision.reason, "decision_id": decision.decision_id}
    data.update({k: v for k, v in decision.data.items() if v is not None and k != "code"})
    return error_object(
        decision.code or int(Code.INVALID_REQUEST), _MESSAGES.get(decision.check, "denied"), data
    )


_MESSAGES = {
    Check.CAPABILITY: "capability check failed",
    Check.INTENT: "intent check failed",
    Check.POLICY: "denied by policy",
    Check.BUDGET: "budget exhausted",
    Check.PROVENANCE: "provenance check failed",
    Check.UNAVAILABLE: "authorization unavailable",
    Check.APPROVAL: "approval required",
    Check.PROTOCOL: "invalid request",
}


def denied_response(http_status: int, body: Any, decision_id: str | None) -> external_auth_pb2.CheckResponse:
    headers = [_header("content-type", "application/json")]
    if decision_id:
        headers.append(_header(DECISION_HEADER, decision_id))
    return external_auth_pb2.CheckResponse(
        status=status_pb2.Status(code=code_pb2.PERMISSION_DENIED),
        denied_response=external_auth_pb2.DeniedHttpResponse(
            status=http_status_pb2.HttpStatus(code=http_status),
            headers=headers,
            body=json.dumps(body, separators=(",", ":"), ensure_ascii=False),
        ),
    )


def deny_for(
    parsed: ParsedRequest, denial: Decision, messages: Sequence[Message]
) -> external_auth_pb2.CheckResponse:
    """The local reply for a denied (or escalated) call, in the transport's own shape."""
    error = decision_error(denial)
    if parsed.resource_metadata and denial.check is Check.CAPABILITY and not parsed.token_verified:
        return unauthenticated(parsed.resource_metadata, denial, error, parsed.messages)
    if parsed.transport == "tool-call":
        return denied_response(TOOL_CALL_STATUS.get(denial.check, 403), {"error": error}, denial.decision_id)
    if messages and messages[0].input.http_method != "POST":
        return stream_denial(denial, error)
    requests = [m for m in messages if not m.is_notification and m.input.rpc_method != "response"]
    if not requests:  # a denied notification (or client response): 403 with an error without id
        return denied_response(403, {"jsonrpc": "2.0", "error": error}, denial.decision_id)
    replies = [{"jsonrpc": "2.0", "id": m.request_id, "error": error} for m in requests]
    return denied_response(200, replies if parsed.batch else replies[0], denial.decision_id)


def unauthenticated(
    resource_metadata: str, denial: Decision, error: dict[str, Any], messages: Sequence[Message]
) -> external_auth_pb2.CheckResponse:
    """OAuth resource-server mode: no usable credentials is HTTP 401 whose ``WWW-Authenticate`` names the
    protected-resource metadata (RFC 9728, MCP authorization), so an OAuth client starts discovery.
    A token that was presented but does not verify adds ``error="invalid_token"`` (RFC 6750). Denials
    of a verified token (expired, outside its caveats, revoked) keep the JSON-RPC contract."""
    presented = bool(messages and messages[0].input.token)
    challenge = f'Bearer resource_metadata="{resource_metadata}"'
    if presented:
        challenge += ', error="invalid_token"'
    request_id = next((m.request_id for m in messages if not m.is_notification), None)
    body = {"jsonrpc": "2.0", "id": request_id, "error": error}
    reply = denied_response(401, body, denial.decision_id)
    reply.denied_response.headers.append(_header("www-authenticate", challenge))
    return reply


def insufficient_scope(
    parsed: ParsedRequest, denial: Decision, authenticator: Any
) -> external_auth_pb2.CheckResponse | None:
    """OAuth mode: a verified token denied because the tool, prompt or resource is outside its caveats
    is HTTP 403 with ``WWW-Authenticate: Bearer error="insufficient_scope", scope="..."`` (RFC 6750
    §3.1), so an OAuth client can ask for that scope; None for any other denial (the JSON-RPC contract
    applies). See :func:`missing_scope` for the scope named."""
    if denial.check is not Check.CAPABILITY or not parsed.messages:
        return None
    token = authenticator.authenticate(parsed.messages[0].input.token or "")
    scope = missing_scope(denial, token, parsed.messages)
    if scope is None:
        return None
    # An item name that cannot be written as a scope token (RFC 6750 §3: no space, quote or backslash,
    # printable ASCII only) is left out of the header rather than echoed into it; still a 403.
    named = f'scope="{scope}", ' if _SCOPE_TOKEN.fullmatch(scope) else ""
    challenge = f'Bearer error="insufficient_scope", {named}resource_metadata="{parsed.resource_metadata}"'
    request_id = next((m.request_id for m in parsed.messages if not m.is_notification), None)
    reply = denied_response(
        403, {"jsonrpc": "2.0", "id": request_id, "error": decision_error(denial)}, denial.decision_id
    )
    reply.denied_response.headers.append(_header("www-authenticate", challenge))
    return reply


_SCOPE_TOKEN = re.compile(r"[\x21\x23-\x5b\x5d-\x7e]+")


def missing_scope(denial: Decision, token: Any, messages: Sequence[Message]) -> str | None:
    """The scope a verified ``token`` lacks for ``denial``, None when the denial is not about one: the
    tool's name for a tool outside its ``tools`` caveats; ``prompts:<name>`` / ``resources:<uri>`` for
    a prompt or resource (template) outside its ``prompts`` / ``resources`` caveats (the caveat that
    would admit it)."""
    if denial.tool is not None:
        tools = getattr(token, "tools", None)
        return denial.tool if tools is not None and denial.tool not in tools else None
    if denial.item is None or not isinstance(token, AuthenticatedToken):
        return None
    kind = next((m.input.item_kind for m in messages if m.input.item == denial.item), None)
    if kind is None or item_violation(token.prompts, token.resources, kind, denial.item) is None:
        return None
    return f"{'prompts' if kind == 'prompt' else 'resources'}:{denial.item}"


def stream_denial(denial: Decision, error: dict[str, Any]) -> external_auth_pb2.CheckResponse:
    """A denied GET (the SSE stream) or DELETE (end of a session) carries no JSON-RPC request to answer:
    an HTTP error status, so an MCP client surfaces it instead of reconnecting forever (GET) or taking
    the denial for success (DELETE). 401 with ``WWW-Authenticate`` for a capability failure, 503 when
    authorization is unavailable, else 403."""
    status = {Check.CAPABILITY: 401, Check.UNAVAILABLE: 503}.get(denial.check, 403)
    reply = denied_response(status, {"jsonrpc": "2.0", "error": error}, denial.decision_id)
    if status == 401:
        reply.denied_response.headers.append(
            _header(
                "www-authenticate",
                'Bearer error="invalid_token", error_description="capability check failed"',
            )
        )
    return reply


def protocol_denial(parsed: ParsedRequest) -> tuple[external_auth_pb2.CheckResponse, Decision]:
    """Answer a malformed body; returns the reply and the decision to audit."""
    assert parsed.protocol_error is not None
    code, message, request_id = parsed.protocol_error
    decision = Decision(
        decision_id=new_decision_id(),
        outcome=Outcome.DENY,
        check=Check.PROTOCOL,
        reason=message,
        data={"code": code},
    )
    error = error_object(
        code, message, {"check": "protocol", "reason": message, "decision_id": decision.decision_id}
    )
    if parsed.transport == "tool-call":
        return denied_response(400, {"error": error}, decision.decision_id), decision
    return denied_response(
        200, {"jsonrpc": "2.0", "id": request_id, "error": error}, decision.decision_id
    ), decision


def add_trace_header(reply: external_auth_pb2.CheckResponse, trace_id: str) -> None:
    """Tell the agent which trace its call was authorized in (``x-tessera-trace-id``, tracing on)."""
    if reply.HasField("ok_response"):
        reply.ok_response.response_headers_to_add.append(_header(TRACE_HEADER, trace_id, overwrite=True))
    else:
        reply.denied_response.headers.append(_header(TRACE_HEADER, trace_id))


def monotonic_deadline(time_remaining: float | None, cap_s: float) -> float:
    """Deadline for the pipeline: Envoy's remaining time less a margin for the reply, capped."""
    budget = cap_s if time_remaining is None else min(cap_s, max(0.0, time_remaining - 0.02))
    return time.monotonic() + budget
