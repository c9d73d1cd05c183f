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
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

import grpc

from authz.admin.keys import Principal, authenticate
from authz.errors import PermissionDenied
from authz.server import status
from authz.server.admin.access import PACKAGE, RULES, Rule

_PRINCIPAL: contextvars.ContextVar[Principal] = contextvars.ContextVar("tessera_admin_principal")
_PREFIX = f"/{PACKAGE}."


def principal() -> Principal:
    """The authenticated caller of the RPC being handled."""
    return _PRINCIPAL.get()


def bearer(context: grpc.aio.ServicerContext) -> str | None:
    for key, value in context.invocation_metadata() or ():
        if key.lower() == "authorization":
            text = value.decode() if isinstance(value, bytes) else value
            scheme, _, credential = text.strip().partition(" ")
            return credential.strip() if scheme.lower() == "bearer" else None
    return None


class AdminAuthInterceptor(grpc.aio.ServerInterceptor):
    def __init__(self, store: Any, rules: dict[str, Rule] = RULES):
        self._store = store
        self._rules = rules

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
        caller = await authenticate(self._store, bearer(context))
        if rule is None:
            raise PermissionDenied(f"{name} has no access rule", reason="NO_ACCESS_RULE")
        rule.check(caller, name, request)
        return _PRINCIPAL.set(caller)

    def _unary(self, inner: Callable, rule: Rule | None, name: str) -> Callable:
        async def behavior(request: Any, context: grpc.aio.ServicerContext) -> Any:
            try:
                token = await self._admit(context, rule, name, request)
                try:
                    return await inner(request, context)
                finally:
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
                    _PRINCIPAL.reset(token)
            except (asyncio.CancelledError, grpc.aio.AbortError):
                raise
            except Exception as exc:
                await status.abort(context, exc)

        return behavior
