"""The admin service's interceptor: authenticate the key, apply the access table, map errors.

Every RPC of ``authz.api.admin.v1`` goes through it (health and reflection do not): the bearer key is
looked up by id and compared by hash on every call (no cache, so a revoked key stops working at once on
every replica), the rule of :data:`~.access.RULES` is checked against the deserialized request, the
caller is made available to the handler as :func:`principal`, and any exception the handler raises
leaves through :mod:`authz.server.status`, the one exception → status mapping.
"""

from __future__ import annotations

import asyncio
import contextvars
import ipaddress
import logging
import re
from collections.abc import AsyncIterator, Awaitable, Callable, Sequence
from typing import Any
from urllib.parse import unquote

import grpc

from authz.admin.keys import ADMIN_CHAIN, Principal, authenticate, parse_key
from authz.admin.limiter import AuthFailureLimiter
from authz.admin.oidc import OidcVerifier, looks_like_jwt
from authz.audit import append_admin_event
from authz.errors import InvalidArgument, PermissionDenied, TooManyRequests, Unauthenticated
from authz.server import status
from authz.server.admin.access import PACKAGE, RULES, Rule

log = logging.getLogger("tessera.admin")

_PRINCIPAL: contextvars.ContextVar[Principal] = contextvars.ContextVar("tessera_admin_principal")
_PREFIX = f"/{PACKAGE}."


def principal() -> Principal:
    """The authenticated caller of the RPC being handled."""
    return _PRINCIPAL.get()


#: The tenant segment of a REST path (``/v1/admin/tenants/{tenant}/...``).
_REST_TENANT = re.compile(r"^/v1/admin/tenants/([^/:?]+)")


def check_path_tenant(context: grpc.aio.ServicerContext, request: Any) -> None:
    """Refuse a REST call whose path names one tenant and whose body another.

    Envoy's transcoder fills the request from the path and the body, and with ``body: "*"`` a body field
    silently overrides the path's; Tessera would then act on the body's tenant while the URL (what logs,
    proxies and reviewers see) names another. The transcoder passes the REST path on as
    ``x-envoy-original-path``; a direct gRPC call has none and is not affected.
    """
    if "tenant" not in type(request).DESCRIPTOR.fields_by_name:
        return
    match = _REST_TENANT.match(_metadata(context, "x-envoy-original-path") or "")
    if match is not None and unquote(match.group(1)) != request.tenant:
        raise InvalidArgument(
            f"the path names tenant {unquote(match.group(1))!r} but the body names {request.tenant!r}",
            reason="TENANT_MISMATCH",
            metadata={"path_tenant": unquote(match.group(1)), "body_tenant": request.tenant},
        )


def bearer(context: grpc.aio.ServicerContext) -> str | None:
    text = _metadata(context, "authorization")
    if text is None:
        return None
    scheme, _, credential = text.strip().partition(" ")
    return credential.strip() if scheme.lower() == "bearer" else None


def source_of(context: grpc.aio.ServicerContext, trusted_proxies: Sequence[Any] = ()) -> str:
    """The caller's address, for rate limits and the audit of failed attempts.

    The gRPC peer (``ipv4:1.2.3.4:5678`` → ``1.2.3.4``), unless that peer is a trusted proxy: behind
    Envoy's transcoder every REST caller shares Envoy's address, so the client is the last
    ``x-forwarded-for`` entry, the one Envoy appended itself (``use_remote_address``); entries a client
    wrote before it are ignored. An unparsable entry falls back to the peer."""
    peer = context.peer() or ""
    kind, _, rest = peer.partition(":")
    if kind not in ("ipv4", "ipv6"):
        return kind or "unknown"
    host = rest.rsplit(":", 1)[0].strip("[]") or "unknown"
    if not trusted_proxies or not _in_networks(host, trusted_proxies):
        return host
    forwarded = _metadata(context, "x-forwarded-for")
    if forwarded:
        client = forwarded.rsplit(",", 1)[-1].strip()
        try:
            return str(ipaddress.ip_address(client))
        except ValueError:
            pass
    return host


def _in_networks(host: str, networks: Sequence[Any]) -> bool:
    try:
        address = ipaddress.ip_address(host)
    except ValueError:
        return False
    return any(address in network for network in networks)


def _metadata(context: grpc.aio.ServicerContext, name: str) -> str | None:
    for key, value in context.invocation_metadata() or ():
        if key.lower() == name:
            return value.decode() if isinstance(value, bytes) else value
    return None


def _too_many(wait: float) -> TooManyRequests:
    return TooManyRequests(
        "too many failed admin authentications; retry later",
        metadata={"retry_after_s": str(max(1, round(wait)))},
    )


class AdminAuthInterceptor(grpc.aio.ServerInterceptor):
    """Failed authentications are rate-limited per source and per key id (:class:`AuthFailureLimiter`)
    and audited in the ``_admin`` chain with the key id only; the presented key appears in no log,
    error or event (the comparison itself is constant-time, see :func:`authz.admin.keys.authenticate`)."""

    def __init__(
        self,
        store: Any,
        rules: dict[str, Rule] = RULES,
        limiter: AuthFailureLimiter | None = None,
        trusted_proxies: Sequence[Any] = (),
        oidc: OidcVerifier | None = None,
    ):
        self._store = store
        self._oidc = oidc
        self._rules = rules
        self._limiter = limiter if limiter is not None else AuthFailureLimiter()
        self._trusted_proxies = tuple(trusted_proxies)

    async def intercept_service(
        self,
        continuation: Callable[[grpc.HandlerCallDetails], Awaitable[grpc.RpcMethodHandler]],
        handler_call_details: grpc.HandlerCallDetails,
    ) -> grpc.RpcMethodHandler:
        handler = await continuation(handler_call_details)
        method = handler_call_details.method
        if handler is None or not method.startswith(_PREFIX):
            return handler
        rule = self._rules.get(method)
        name = method.rsplit("/", 1)[-1]
        if handler.unary_unary is not None:
            return grpc.unary_unary_rpc_method_handler(
                self._unary(handler.unary_unary, rule, name),
                request_deserializer=handler.request_deserializer,
                response_serializer=handler.response_serializer,
            )
        if handler.unary_stream is not None:
            return grpc.unary_stream_rpc_method_handler(
                self._stream(handler.unary_stream, rule, name),
                request_deserializer=handler.request_deserializer,
                response_serializer=handler.response_serializer,
            )
        return handler  # the admin API has no client-streaming RPC

    async def _admit(self, context: grpc.aio.ServicerContext, rule: Rule | None, name: str, request: Any):
        if rule is not None and rule.public:
            return None  # the request carries its own credential; the handler verifies it
        check_path_tenant(context, request)
        presented = bearer(context)
        source = source_of(context, self._trusted_proxies)
        key_id = parse_key(presented) if presented else None
        wait = self._limiter.locked(source)
        if wait > 0:  # a locked source is refused before any lookup
            raise _too_many(wait)
        try:
            caller = await self._authenticate(presented)
        except Unauthenticated as exc:
            # A locked key id refuses further guesses (without an event each), but a correct key still
            # gets in: key ids are not secret, and guesses must not lock out the key's holder.
            key_wait = self._limiter.locked(None, key_id) if key_id else 0.0
            tripped = self._limiter.failed(source, key_id)
            if key_wait > 0 and not tripped:
                raise _too_many(key_wait) from None
            await self._audit_failure(source, key_id, name, exc.reason, tripped)
            raise
        if rule is None:
            raise PermissionDenied(f"{name} has no access rule", reason="NO_ACCESS_RULE")
        rule.check(caller, name, request)
        return _PRINCIPAL.set(caller)

    async def _authenticate(self, presented: str | None) -> Principal:
        """An admin key, or (when OIDC sign-in is configured) a person's ID token."""
        if presented and self._oidc is not None and looks_like_jwt(presented):
            return self._oidc.principal(presented)
        return await authenticate(self._store, presented)

    async def _audit_failure(
        self, source: str, key_id: str | None, method: str, reason: str, tripped: list[str]
    ) -> None:
        details = {"source": source, "key_id": key_id, "method": method, "reason": reason}
        if tripped:
            details["locked"] = tripped
            details["lockout_s"] = self._limiter.lockout_s
            log.warning(
                "admin authentication locked for %s s after repeated failures (source %s, key id %s)",
                self._limiter.lockout_s,
                source,
                key_id or "-",
            )
        try:
            await append_admin_event(
                self._store,
                ADMIN_CHAIN,
                "unauthenticated",
                "admin_key.authenticate.fail",
                f"admin_key:{key_id or '-'}",
                details,
            )
        except Exception as exc:  # the caller is refused either way; say what was not recorded
            log.error("could not audit a failed admin authentication from %s: %s", source, exc)

    def _unary(self, inner: Callable, rule: Rule | None, name: str) -> Callable:
        async def behavior(request: Any, context: grpc.aio.ServicerContext) -> Any:
            try:
                token = await self._admit(context, rule, name, request)
                try:
                    return await inner(request, context)
                finally:
                    if token is not None:
                        _PRINCIPAL.reset(token)
            except (asyncio.CancelledError, grpc.aio.AbortError):
                raise
            except Exception as exc:
                await status.abort(context, exc)

        return behavior

    def _stream(self, inner: Callable, rule: Rule | None, name: str) -> Callable:
        async def behavior(request: Any, context: grpc.aio.ServicerContext) -> AsyncIterator[Any]:
            try:
                token = await self._admit(context, rule, name, request)
                try:
                    async for item in inner(request, context):
                        yield item
                finally:
                    if token is not None:
                        _PRINCIPAL.reset(token)
            except (asyncio.CancelledError, grpc.aio.AbortError):
                raise
            except Exception as exc:
                await status.abort(context, exc)

        return behavior
