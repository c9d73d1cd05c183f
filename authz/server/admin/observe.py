"""The admin service's metrics: every RPC counted by name and status, pending approvals kept current."""

from __future__ import annotations

import asyncio
import logging
import time
from collections import Counter
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

import grpc

from authz.observability import AdminMetrics

log = logging.getLogger("tessera.admin")


def _code(context: grpc.aio.ServicerContext, default: grpc.StatusCode) -> str:
    """The status the call ended with: what the handler set or aborted with, else ``default``."""
    code = context.code()
    return code.name if isinstance(code, grpc.StatusCode) else default.name


class AdminMetricsInterceptor(grpc.aio.ServerInterceptor):
    """Outermost interceptor: ``tessera_admin_requests_total{rpc,code}`` and the call's duration, for
    every RPC (health and reflection included), whatever the inner interceptors answer."""

    def __init__(self, metrics: AdminMetrics):
        self._metrics = metrics

    async def intercept_service(
        self,
        continuation: Callable[[grpc.HandlerCallDetails], Awaitable[grpc.RpcMethodHandler]],
        handler_call_details: grpc.HandlerCallDetails,
    ) -> grpc.RpcMethodHandler:
        handler = await continuation(handler_call_details)
        if handler is None:
            return handler
        rpc = handler_call_details.method.lstrip("/")
        if handler.unary_unary is not None:
            return grpc.unary_unary_rpc_method_handler(
                self._unary(handler.unary_unary, rpc),
                request_deserializer=handler.request_deserializer,
                response_serializer=handler.response_serializer,
            )
        if handler.unary_stream is not None:
            return grpc.unary_stream_rpc_method_handler(
                self._stream(handler.unary_stream, rpc),
                request_deserializer=handler.request_deserializer,
                response_serializer=handler.response_serializer,
            )
        return handler  # streaming requests (reflection): not counted

    def _unary(self, inner: Callable, rpc: str) -> Callable:
        async def behavior(request: Any, context: grpc.aio.ServicerContext) -> Any:
            started = time.perf_counter()
            failed = grpc.StatusCode.UNKNOWN
            try:
                response = await inner(request, context)
                failed = grpc.StatusCode.OK
                return response
            except asyncio.CancelledError:
                failed = grpc.StatusCode.CANCELLED
                raise
            finally:
                self._metrics.observe_request(rpc, _code(context, failed), time.perf_counter() - started)

        return behavior

    def _stream(self, inner: Callable, rpc: str) -> Callable:
        async def behavior(request: Any, context: grpc.aio.ServicerContext) -> AsyncIterator[Any]:
            started = time.perf_counter()
            failed = grpc.StatusCode.UNKNOWN
            try:
                async for item in inner(request, context):
                    yield item
                failed = grpc.StatusCode.OK
            except asyncio.CancelledError:
                failed = grpc.StatusCode.CANCELLED
                raise
            finally:
                self._metrics.observe_request(rpc, _code(context, failed), time.perf_counter() - started)

        return behavior


async def count_pending_approvals(store: Any, metrics: AdminMetrics, interval_s: float) -> None:
    """Keep ``tessera_approvals_pending`` current: count the store's pending approvals every interval."""
    while True:
        try:
            pending = await store.list_approvals(status="pending")
        except Exception as exc:
            metrics.store_error("approvals")
            log.warning("counting pending approvals failed: %s", exc)
        else:
            now = time.time()
            metrics.set_approvals_pending(Counter(a.tenant for a in pending if a.expires_at > now))
        await asyncio.sleep(interval_s)
