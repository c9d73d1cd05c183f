"""The console's client of the admin API: the same gRPC services scripts call, as the signed-in person.

Every call carries ``authorization: Bearer <the person's ID token>``, so the admin service authenticates,
authorizes (role and tenant scope from the token's claims) and audits it exactly like a call made with an
admin key; the console holds no credential of its own. The browser's address goes along as
``x-forwarded-for`` (the console is a trusted proxy of the admin service, like Envoy), so failed
sign-ins are rate-limited per person, not for the console as a whole.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import Any

import grpc
from google.protobuf import descriptor_pool, json_format, message_factory
from google.rpc import error_details_pb2
from grpc_status import rpc_status

from authz.api.admin.v1 import (  # noqa: F401  (each import registers its service in the pool)
    approval_service_pb2,
    audit_service_pb2,
    memory_writer_service_pb2,
    policy_service_pb2,
    tenant_service_pb2,
    token_service_pb2,
)

PACKAGE = "authz.api.admin.v1"


@dataclass
class AdminError(Exception):
    """A refused or failed admin call, as the console shows it."""

    code: grpc.StatusCode
    message: str
    reason: str = ""

    def __str__(self) -> str:
        return self.message

    @property
    def http_status(self) -> int:
        return {
            grpc.StatusCode.UNAUTHENTICATED: 401,
            grpc.StatusCode.PERMISSION_DENIED: 403,
            grpc.StatusCode.NOT_FOUND: 404,
            grpc.StatusCode.INVALID_ARGUMENT: 400,
            grpc.StatusCode.FAILED_PRECONDITION: 409,
            grpc.StatusCode.ALREADY_EXISTS: 409,
            grpc.StatusCode.RESOURCE_EXHAUSTED: 429,
        }.get(self.code, 502)


def _method(service: str, method: str):
    return descriptor_pool.Default().FindServiceByName(f"{PACKAGE}.{service}").methods_by_name[method]


def _error(exc: grpc.aio.AioRpcError) -> AdminError:
    """The refusal as the console shows it; the ErrorInfo reason when the status carries one."""
    reason = ""
    try:
        status = rpc_status.from_call(exc)
        for detail in status.details if status is not None else ():
            if detail.Is(error_details_pb2.ErrorInfo.DESCRIPTOR):
                info = error_details_pb2.ErrorInfo()
                detail.Unpack(info)
                reason = info.reason
    except ValueError:  # malformed details: the code and message are enough
        reason = ""
    return AdminError(exc.code(), exc.details() or exc.code().name, reason)


class AdminClient:
    def __init__(self, address: str, timeout_s: float = 10.0):
        self._address = address
        self._channel: grpc.aio.Channel | None = None
        self._timeout_s = timeout_s

    @property
    def channel(self) -> grpc.aio.Channel:
        # Opened on first use, inside the event loop that serves the console: a grpc.aio channel binds
        # to the loop current at its creation, and the console may be built before that loop runs.
        if self._channel is None:
            self._channel = grpc.aio.insecure_channel(self._address)
        return self._channel

    async def close(self) -> None:
        if self._channel is not None:
            await self._channel.close()

    @staticmethod
    def _metadata(id_token: str, client: str | None) -> tuple[tuple[str, str], ...]:
        meta = [("authorization", f"Bearer {id_token}")]
        if client:
            meta.append(("x-forwarded-for", client))
        return tuple(meta)

    def _callable(self, service: str, method: str, streaming: bool):
        desc = _method(service, method)
        request_cls = message_factory.GetMessageClass(desc.input_type)
        response_cls = message_factory.GetMessageClass(desc.output_type)
        factory = self.channel.unary_stream if streaming else self.channel.unary_unary
        call = factory(
            f"/{PACKAGE}.{service}/{method}",
            request_serializer=lambda m: m.SerializeToString(),
            response_deserializer=response_cls.FromString,
        )
        return call, request_cls

    async def call(
        self, service: str, method: str, request: dict[str, Any], id_token: str, client: str | None = None
    ) -> dict[str, Any]:
        """One unary RPC: the request as JSON-like dict (proto field names), the answer likewise (every
        field present, enums by name)."""
        call, request_cls = self._callable(service, method, streaming=False)
        message = json_format.ParseDict(request, request_cls())
        try:
            answer = await call(message, metadata=self._metadata(id_token, client), timeout=self._timeout_s)
        except grpc.aio.AioRpcError as exc:
            raise _error(exc) from None
        return json_format.MessageToDict(
            answer, preserving_proto_field_name=True, always_print_fields_with_no_presence=True
        )

    async def stream_bytes(
        self, service: str, method: str, request: dict[str, Any], id_token: str, client: str | None = None
    ) -> AsyncIterator[bytes]:
        """A server-streaming RPC of ``google.api.HttpBody`` (audit export): its data, chunk by chunk."""
        call, request_cls = self._callable(service, method, streaming=True)
        message = json_format.ParseDict(request, request_cls())
        stream = call(message, metadata=self._metadata(id_token, client), timeout=300)
        try:
            async for chunk in stream:
                yield chunk.data
        except grpc.aio.AioRpcError as exc:
            raise _error(exc) from None
