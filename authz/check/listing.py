"""Per-caller filtering of MCP list results: ``tools/list`` shows only what the caller may call.

A ``tools/list`` request itself needs a valid token only (ARCHITECTURE §2). Its *answer* is filtered by
the inputs a ``tools/call`` is decided on, evaluated for each listed tool without arguments:

1. the token's ``tools`` caveats (their intersection): a tool outside them is hidden;
2. the tenant's catalog for the list's server (catalogs are per tenant and server), where it binds:
   with intent ``enforce`` + ``require_prompt`` and the built-in catalog extractor, a tool absent from
   the catalog can never match a prompt's intent, so it is hidden;
3. the tenant's active policy, evaluated in the **list phase**: the same input document as a call, with
   ``input.phase == "list"`` (``"call"`` for a call), ``input.arguments == {}``, no intent, provenance
   or approval. ``allow`` or ``escalate`` lists the tool (some call may pass, possibly after a human
   approves); ``deny``, an evaluation error or an undefined decision hides it. A tenant without an
   active policy lists nothing (every call of it would be denied). With a policy server (a tenant on
   OPA) the items are evaluated concurrently; one that fails or times out is hidden, counted
   (:attr:`ListTally.failed`) and logged.

Prompts and resources are hidden by the token's ``prompts`` / ``resources`` caveats and by a policy
that names them (:meth:`ListFilter.item_verdict`); a get or read of one (:data:`ITEM_METHODS`) is
decided by the same judgement on the check path, so what a list withholds cannot be fetched either.

A policy tells the phases apart with ``input.phase``; a rule that judges arguments should answer the
list phase explicitly (the demo policy lists ``transfer_funds``, whose calls depend on the amount).

The check service learns the caller when it allows the list request (:meth:`ListFilter.context_for`)
and hands that context to the response processor through Envoy's dynamic metadata; the processor
filters the upstream's answer with :meth:`ListFilter.filter_message`. No gRPC in here: the transport is
:mod:`authz.server.ext_proc`.
"""

from __future__ import annotations

import asyncio
import inspect
import json
import logging
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime
from typing import Any

from authz.check.directory import TenantDirectory, TenantView, settings_for_server
from authz.check.models import CheckInput, Decision
from authz.intent import CatalogExtractor, catalog_for_settings
from authz.provenance import NOT_PRESENTED
from authz.token import AuthenticatedToken, item_violation

log = logging.getLogger("tessera.list")

#: The JSON-RPC methods whose result is filtered, and the result member that holds the items.
LIST_RESULTS: Mapping[str, str] = {
    "tools/list": "tools",
    "prompts/list": "prompts",
    "resources/list": "resources",
    "resources/templates/list": "resourceTemplates",
}

#: What a listed item is, per result member: the policy's ``input.kind`` in the list phase, and the item
#: field that names it.
ITEM_KINDS: Mapping[str, tuple[str, str]] = {
    "tools": ("tool", "name"),
    "prompts": ("prompt", "name"),
    "resources": ("resource", "uri"),
    "resourceTemplates": ("resource_template", "uriTemplate"),
}

#: The MCP requests that read one listed item, and the ``params`` member that names it: each is decided
#: like that item's entry in its list (:meth:`ListFilter.item_verdict`), so whatever a list withholds
#: from a caller, a direct get or read of it is denied. ``completion/complete`` names its item in
#: ``params.ref`` (a prompt by ``name``, a resource template by ``uri``).
ITEM_METHODS: Mapping[str, tuple[str, str]] = {
    "prompts/get": ("prompt", "name"),
    "resources/read": ("resource", "uri"),
    "resources/subscribe": ("resource", "uri"),
    # Decided like a subscribe so a caller can never probe, through the answer to an unsubscribe, a
    # resource it may not see.
    "resources/unsubscribe": ("resource", "uri"),
}
_COMPLETION_REFS = {"ref/prompt": ("prompt", "name"), "ref/resource": ("resource_template", "uri")}


def item_of(method: str, params: Any) -> tuple[str, str] | None:
    """``(kind, name)`` of the item an item request names, None for any other method.

    Raises :class:`ValueError` when an item request does not name its item (it cannot be judged, so it
    is refused as invalid params rather than forwarded)."""
    if method == "completion/complete":
        ref = params.get("ref") if isinstance(params, dict) else None
        spec = _COMPLETION_REFS.get(ref.get("type")) if isinstance(ref, dict) else None
        if spec is None:
            raise ValueError("completion/complete needs a ref of type ref/prompt or ref/resource")
        container = ref
    elif method in ITEM_METHODS:
        spec, container = ITEM_METHODS[method], params
    else:
        return None
    kind, key = spec
    name = container.get(key) if isinstance(container, dict) else None
    if not isinstance(name, str) or not name:
        raise ValueError(f"{method} needs a {key!r}")
    return kind, name


#: The ``method`` of a :class:`ListContext` for an MCP GET stream (the standalone stream, or a stream
#: resumed with ``Last-Event-ID``). The server may replay on it any earlier message of the session,
#: including list results it answered to another caller's token, so every response on it that carries
#: a list member is filtered for the caller who opened the stream.
STREAM_METHOD = "stream"

#: The ``method`` of a :class:`ListContext` for a JSON-RPC batch that holds several list methods: as on a
#: stream, every result that carries a list member is filtered.
BATCH_METHOD = "batch"

#: The policy input key that, when the policy reads it, makes prompts (resp. resources and resource
#: templates) subject to the policy in the list phase. A policy that never reads it does not judge them.
_POLICY_NAMES = {"prompt": "prompt", "resource": "resource", "resource_template": "resource"}

#: Request header the check service sets on an allowed list request; the gateway's list route (the one
#: with the response processor) matches on it. Clients cannot send it: Envoy strips x-tessera-* early.
LIST_HEADER = "x-tessera-list"

#: Dynamic-metadata key (namespace ``envoy.filters.http.ext_authz``) that carries a :class:`ListContext`.
METADATA_KEY = "tessera_list"


class ListContextError(ValueError):
    """The processor was given no usable caller context: the list is withheld (fail closed)."""


@dataclass(frozen=True, slots=True)
class ListContext:
    """Who asked for a list: what the check service knew when it allowed the request.

    Nothing secret: the caveats are readable in the token itself, the token id is a hash.
    ``tools`` is the intersection of the token's ``tools`` caveats, ``None`` when it has none.
    ``rpc_id`` is the request's JSON-RPC id, JSON-encoded, so a failure can still answer that id.
    """

    tenant: str
    agent: str | None
    token_id: str
    jti: str
    caveats: tuple[str, ...]
    tools: frozenset[str] | None
    method: str
    path: str
    source_ip: str
    rpc_id: str = "null"
    #: The tool server the list came from (its route's ``server`` context extension), None with one.
    server: str | None = None
    #: The token's ``prompts`` caveats (their intersection, None: none) and ``resources`` caveats (the
    #: URI prefixes of each): items outside them are withheld like tools outside ``tools``.
    prompts: frozenset[str] | None = None
    resources: tuple[tuple[str, ...], ...] = ()

    def to_metadata(self) -> dict[str, Any]:
        return {
            "tenant": self.tenant,
            "agent": self.agent,
            "token_id": self.token_id,
            "jti": self.jti,
            "caveats": list(self.caveats),
            "tools": sorted(self.tools) if self.tools is not None else None,
            "method": self.method,
            "path": self.path,
            "source_ip": self.source_ip,
            "rpc_id": self.rpc_id,
            "server": self.server,
            "prompts": sorted(self.prompts) if self.prompts is not None else None,
            "resources": [list(prefixes) for prefixes in self.resources],
        }

    @classmethod
    def from_metadata(cls, data: Mapping[str, Any]) -> ListContext:
        try:
            tools = data.get("tools")
            prompts = data.get("prompts")
            return cls(
                tenant=_text(data["tenant"]),
                agent=data.get("agent") if isinstance(data.get("agent"), str) else None,
                token_id=_text(data["token_id"]),
                jti=_text(data["jti"]),
                caveats=tuple(_text(c) for c in data["caveats"]),
                tools=None if tools is None else frozenset(_text(t) for t in tools),
                method=_text(data["method"]),
                path=_text(data.get("path", "")),
                source_ip=_text(data.get("source_ip", "")),
                rpc_id=_text(data.get("rpc_id", "null")),
                server=_text(data["server"]) if data.get("server") is not None else None,
                prompts=None if prompts is None else frozenset(_text(p) for p in prompts),
                resources=tuple(tuple(_text(p) for p in prefixes) for prefixes in data.get("resources", ())),
            )
        except (KeyError, TypeError) as exc:
            raise ListContextError(f"list context incomplete: {exc}") from None


def _text(value: Any) -> str:
    if not isinstance(value, str):
        raise TypeError(f"expected a string, got {type(value).__name__}")
    return value


def caller_context(
    token: AuthenticatedToken, inp: CheckInput, method: str, rpc_id: str = "null"
) -> ListContext:
    """The :class:`ListContext` of an authenticated caller's request ``inp``."""
    return ListContext(
        tenant=token.tenant,
        agent=token.agent,
        token_id=token.token_id,
        jti=token.jti,
        caveats=tuple(token.raw_caveats),
        tools=token.tools,
        method=method,
        path=inp.path,
        source_ip=inp.source_ip,
        rpc_id=rpc_id,
        server=inp.server,
        prompts=token.prompts,
        resources=token.resources,
    )


def rpc_id_json(value: Any) -> str:
    return json.dumps(value, separators=(",", ":"), ensure_ascii=True)


class ListFilter:
    """Decides which listed tools a caller sees. Reads the tenant snapshot; never writes."""

    def __init__(
        self,
        *,
        authenticator: Any,
        directory: TenantDirectory,
        clock: Callable[[], float] = time.time,
        catalog_names: Callable[[TenantView, str | None], frozenset[str] | None] | None = None,
    ):
        self._auth = authenticator
        self._directory = directory
        self._clock = clock
        self._catalog_names = catalog_names or binding_catalog
        # Parsed catalogs per (tenant snapshot, server): a refresh installs new TenantView objects.
        self._catalogs: dict[tuple[int, str | None], tuple[TenantView, frozenset[str] | None]] = {}

    # -- at check time --------------------------------------------------------------------------------
    def context_for(self, inp: CheckInput, decision: Decision, request_id: Any) -> ListContext | None:
        """The context of an allowed list request, or None when ``inp`` is not a filtered list method.

        Raises :class:`ListContextError` when the token no longer authenticates (it just did: the
        caller then denies rather than forward a list nobody can filter)."""
        if inp.rpc_method in LIST_RESULTS:
            method = inp.rpc_method
        elif inp.transport == "mcp" and inp.http_method == "GET" and inp.rpc_method is None:
            method = STREAM_METHOD
        else:
            return None
        token = self._auth.authenticate(inp.token) if inp.token else None
        if not isinstance(token, AuthenticatedToken):
            raise ListContextError("the list request's token does not authenticate")
        return caller_context(token, inp, method, rpc_id_json(request_id))

    # -- on the response ------------------------------------------------------------------------------
    async def visible(self, ctx: ListContext, tool: str, kind: str = "tool") -> bool:
        """May this caller see the item in a list? For a tool: false unless some call of it could pass.

        ``kind`` is ``tool``, ``prompt``, ``resource`` or ``resource_template`` and ``tool`` the
        item's name (a URI or URI template for resources). Prompts and resources are judged by the
        policy only when it reads ``input.prompt`` (resp. ``input.resource``). A policy server (OPA)
        is awaited; an evaluation that fails hides the item."""
        verdict = self._list_verdict(ctx, tool, kind)
        if inspect.isawaitable(verdict):
            try:
                verdict = await verdict
            except Exception:
                return False
        return _listed(verdict)

    def _list_verdict(self, ctx: ListContext, tool: str, kind: str) -> Any:
        """``True``/``False`` when decided without the policy, else the policy's result (an awaitable
        with a policy server, which evaluates asynchronously)."""
        if kind != "tool":
            return self.item_verdict(ctx, tool, kind)
        tenant = self._directory.get(ctx.tenant)
        if ctx.tools is not None and tool not in ctx.tools:
            return False
        if tenant is None or tenant.policy is None or tenant.settings_error is not None:
            return False
        key = (id(tenant), ctx.server)
        cached = self._catalogs.get(key)
        if cached is None or cached[0] is not tenant:
            if len(self._catalogs) > 1024:
                self._catalogs.clear()
            cached = self._catalogs[key] = (tenant, self._catalog_names(tenant, ctx.server))
        catalog = cached[1]
        if catalog is not None and tool not in catalog:
            return False
        return tenant.policy.evaluate(self.policy_input(ctx, tool))

    def item_verdict(self, ctx: ListContext, name: str, kind: str) -> Any:
        """The list-phase judgement of a prompt, resource or resource template: ``True`` (listed) or
        ``False`` (withheld) when decided without the policy, else the policy's result for it (an
        awaitable with a policy server). Shared by the list filter and the check of a get or read of
        the item (:data:`ITEM_METHODS`), so the two can never disagree."""
        if item_violation(ctx.prompts, ctx.resources, kind, name) is not None:
            return False  # outside the token's prompts/resources caveats
        tenant = self._directory.get(ctx.tenant)
        if tenant is None or tenant.settings_error is not None:
            return False
        if tenant.policy is None or not _policy_reads(tenant.policy, _POLICY_NAMES[kind]):
            return True
        return tenant.policy.evaluate(self.policy_input(ctx, name, kind))

    def policy_input(self, ctx: ListContext, name: str, kind: str = "tool") -> dict[str, Any]:
        """The list-phase policy input: a call's shape, ``phase: "list"``, no arguments.

        ``kind`` says what is listed; for a tool ``tool`` is its name, for a prompt ``prompt`` is its
        name (``tool`` null), for a resource or resource template ``resource`` is its URI or URI
        template (``tool`` null)."""
        now = self._clock()
        doc: dict[str, Any] = {
            "phase": "list",
            "kind": kind,
            "tenant": ctx.tenant,
            "agent": ctx.agent,
            "token": {"id": ctx.token_id, "jti": ctx.jti, "caveats": list(ctx.caveats)},
            "request": {"transport": "mcp", "method": "POST", "path": ctx.path, "source_ip": ctx.source_ip},
            "tool": name if kind == "tool" else None,
            "arguments": {},
            "intent": None,
            "provenance": NOT_PRESENTED.to_policy_input(),
            "approval": None,
            "time": {
                "now": datetime.fromtimestamp(now, UTC).strftime("%Y-%m-%dT%H:%M:%SZ"),
                "unix": int(now),
            },
        }
        if ctx.server is not None:
            doc["server"] = ctx.server
        if kind != "tool":
            doc[_POLICY_NAMES[kind]] = name
        return doc

    async def filter_message(
        self, ctx: ListContext, message: Any, *, in_batch: bool = False, tally: ListTally | None = None
    ) -> Any:
        """One JSON-RPC message from the upstream with its list result filtered (others unchanged).

        Raises :class:`ValueError` for a result that is not a list of named items: an unexpected
        shape is withheld rather than passed on unfiltered. In a batch, results without the list
        member answer the batch's other requests and pass unchanged. On a GET stream
        (:data:`STREAM_METHOD`) the request is unknown: every list member a result carries is
        filtered. ``tally`` counts what was listed and withheld (for the audit event)."""
        if not isinstance(message, dict) or "result" not in message:
            return message  # an error, a notification, a server request: nothing listed
        result = message["result"]
        if ctx.method in (STREAM_METHOD, BATCH_METHOD):
            if not isinstance(result, dict):
                return message
            members = [m for m in ITEM_KINDS if m in result]
            if not members:
                return message
        else:
            member = LIST_RESULTS.get(ctx.method)
            if in_batch and member is not None and isinstance(result, dict) and member not in result:
                return message
            if member is None or not isinstance(result, dict):
                raise ValueError(f"{ctx.method} result has no {member!r} list")
            members = [member]
        filtered = dict(result)
        for member in members:
            filtered[member] = await self._filter_items(ctx, member, result.get(member), tally)
        return {**message, "result": filtered}

    async def _filter_items(
        self, ctx: ListContext, member: str, items: Any, tally: ListTally | None
    ) -> list[Any]:
        """The items the caller may see. A policy server's evaluations run concurrently (each bounded
        by the policy's own timeout, so a list takes about one evaluation's time, not one per item); an
        item whose evaluation fails (error, timeout, undefined or badly shaped decision) is hidden,
        counted in ``tally.failed`` and logged."""
        kind, key = ITEM_KINDS[member]
        if not isinstance(items, list):
            raise ValueError(f"the {member!r} member of a list result is not a list")
        for item in items:  # the whole shape first: no evaluation starts for a list that is refused
            if not isinstance(item, dict) or not isinstance(item.get(key), str):
                raise ValueError(f"a listed {kind} has no {key!r}")
        verdicts = [self._list_verdict(ctx, item[key], kind) for item in items]
        pending = [i for i, v in enumerate(verdicts) if inspect.isawaitable(v)]
        if pending:
            answers = await asyncio.gather(*(verdicts[i] for i in pending), return_exceptions=True)
            for i, answer in zip(pending, answers, strict=True):
                verdicts[i] = answer
        kept, failed, why = [], 0, ""
        for item, verdict in zip(items, verdicts, strict=True):
            if isinstance(verdict, BaseException) or (not isinstance(verdict, bool) and verdict.error):
                failed += 1
                why = why or (_describe(verdict) if isinstance(verdict, BaseException) else verdict.reason)
            elif _listed(verdict):
                kept.append(item)
        if failed:
            log.warning(
                "tenant %s: %d %s(s) hidden from a list because their policy evaluation failed: %s",
                ctx.tenant,
                failed,
                kind,
                why,
            )
        if tally is not None:
            tally.add(kind, listed=len(kept), withheld=len(items) - len(kept), failed=failed)
        return kept


@dataclass(slots=True)
class ListTally:
    """How many items of each kind one list response showed and withheld (audited, never the names)."""

    listed: dict[str, int] = field(default_factory=dict)
    withheld: dict[str, int] = field(default_factory=dict)
    #: Of the withheld, those whose policy evaluation failed (error, timeout, undefined decision).
    failed: dict[str, int] = field(default_factory=dict)

    def add(self, kind: str, *, listed: int, withheld: int, failed: int = 0) -> None:
        self.listed[kind] = self.listed.get(kind, 0) + listed
        self.withheld[kind] = self.withheld.get(kind, 0) + withheld
        if failed:
            self.failed[kind] = self.failed.get(kind, 0) + failed

    def __bool__(self) -> bool:
        return bool(self.listed or self.withheld)


def one_context(contexts: list[ListContext]) -> ListContext:
    """The context of a whole request from its list messages' contexts (a batch may hold several)."""
    first = contexts[0]
    if len({ctx.method for ctx in contexts}) > 1:
        return replace(first, method=BATCH_METHOD)
    return first


def _listed(verdict: Any) -> bool:
    """A list-phase verdict: ``True``/``False``, or a policy result that lists on allow or escalate."""
    if isinstance(verdict, bool):
        return verdict
    return verdict.outcome in ("allow", "escalate")


def _describe(exc: BaseException) -> str:
    text = str(exc).strip()
    return f"{type(exc).__name__}: {text[:200]}" if text else type(exc).__name__


def _policy_reads(policy: Any, key: str) -> bool:
    """Does the policy read ``input.<key>``? A policy whose reads are unknown (it may read the whole
    input, or it is not a compiled policy) is taken to read everything: it judges every kind."""
    keys = getattr(policy, "input_keys", None)
    return keys is None or key in keys


def binding_catalog(tenant: TenantView, server: str | None = None) -> frozenset[str] | None:
    """The tool names a tenant's catalog for ``server`` (None: the main endpoint; catalogs are per
    (tenant, server)) restricts calls to, or None when the catalog does not bind.

    It binds in intent ``enforce`` mode with ``require_prompt`` and the built-in catalog extractor:
    every call then needs a prompt whose extracted intent allows the tool, and that extractor only
    ever allows catalogued tools. An HTTP extractor may name any tool, so there the catalog does not
    bind."""
    settings = settings_for_server(tenant.settings, server)
    if settings.intent_mode != "enforce" or not settings.require_prompt:
        return None
    if not isinstance(tenant.extractor_for(server), CatalogExtractor):
        return None
    if settings.intent_undetermined == "policy":  # an undetermined prompt lets the policy allow any tool
        return None
    if not settings.catalog and settings.upstream_tools is None:
        return None
    return catalog_for_settings(settings.catalog, settings.upstream_tools).tool_names
