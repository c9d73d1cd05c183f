"""THE one mapping from Tessera's exception tree (:mod:`authz.errors`) to gRPC status.

Every admin RPC error leaves through :func:`to_grpc_status`: a gRPC code, the message, and a
``google.rpc.Status`` in the ``grpc-status-details-bin`` trailer whose details always hold a
``google.rpc.ErrorInfo {reason, domain: "tessera.dev", metadata}`` (``reason`` is the exception's
stable UPPER_SNAKE reason). A :class:`~authz.errors.PolicyCompileError` adds a ``google.rpc.BadRequest``
with one field violation per diagnostic (``field: "source"``, ``description: "line:column: message"``)
and the first diagnostic's line and column in the ErrorInfo metadata. Envoy's transcoder renders the
same ``google.rpc.Status`` as the JSON body of a REST error (``convert_grpc_status``).

=========================================  ===================  ==========
exception                                  gRPC code            HTTP (REST)
=========================================  ===================  ==========
InvalidArgument, PolicyCompileError        INVALID_ARGUMENT     400
NotFound                                   NOT_FOUND            404
AlreadyExists                              ALREADY_EXISTS       409
FailedPrecondition                         FAILED_PRECONDITION  400
Unauthenticated                            UNAUTHENTICATED      401
PermissionDenied                           PERMISSION_DENIED    403
StoreUnavailable, DependencyError          UNAVAILABLE          503
any other TesseraError (ConfigError, ...)  INTERNAL             500
any other exception                        INTERNAL             500
=========================================  ===================  ==========

An unexpected exception is logged here with its traceback and answered with a generic message and an
``incident`` id in the metadata (to find the log line); nothing of its text reaches the caller.
"""

from __future__ import annotations

import logging
import secrets

import grpc
from google.protobuf import any_pb2
from google.rpc import error_details_pb2, status_pb2
from grpc_status import rpc_status

from authz.errors import (
    AlreadyExists,
    DependencyError,
    FailedPrecondition,
    InvalidArgument,
    NotFound,
    PermissionDenied,
    PolicyCompileError,
    StoreUnavailable,
    TesseraError,
    TooManyRequests,
    Unauthenticated,
)

log = logging.getLogger("tessera.admin")

DOMAIN = "tessera.dev"

#: Checked in order: the first class the exception is an instance of decides (subclasses first).
GRPC_CODES: tuple[tuple[type[TesseraError], grpc.StatusCode], ...] = (
    (InvalidArgument, grpc.StatusCode.INVALID_ARGUMENT),
    (NotFound, grpc.StatusCode.NOT_FOUND),
    (AlreadyExists, grpc.StatusCode.ALREADY_EXISTS),
    (FailedPrecondition, grpc.StatusCode.FAILED_PRECONDITION),
    (Unauthenticated, grpc.StatusCode.UNAUTHENTICATED),
    (PermissionDenied, grpc.StatusCode.PERMISSION_DENIED),
    (TooManyRequests, grpc.StatusCode.RESOURCE_EXHAUSTED),
    (StoreUnavailable, grpc.StatusCode.UNAVAILABLE),
    (DependencyError, grpc.StatusCode.UNAVAILABLE),
)

#: The HTTP status Envoy's transcoder answers for each code we use (Envoy's gRPC → HTTP mapping).
HTTP_STATUS = {
    grpc.StatusCode.INVALID_ARGUMENT: 400,
    grpc.StatusCode.NOT_FOUND: 404,
    grpc.StatusCode.ALREADY_EXISTS: 409,
    grpc.StatusCode.FAILED_PRECONDITION: 400,
    grpc.StatusCode.UNAUTHENTICATED: 401,
    grpc.StatusCode.PERMISSION_DENIED: 403,
    grpc.StatusCode.RESOURCE_EXHAUSTED: 429,
    grpc.StatusCode.UNAVAILABLE: 503,
    grpc.StatusCode.INTERNAL: 500,
}

#: The most a message or metadata value may carry (trailers have a size limit).
_MAX_TEXT = 2000


def grpc_code(exc: BaseException) -> grpc.StatusCode:
    """The gRPC code of ``exc`` under the table above."""
    for kind, code in GRPC_CODES:
        if isinstance(exc, kind):
            return code
    return grpc.StatusCode.INTERNAL


def _cut(text: str) -> str:
    return text if len(text) <= _MAX_TEXT else text[: _MAX_TEXT - 1] + "…"


def status_proto(exc: BaseException) -> status_pb2.Status:
    """The ``google.rpc.Status`` (code, message, ErrorInfo and other details) for ``exc``."""
    code = grpc_code(exc)
    if isinstance(exc, TesseraError) and code is not grpc.StatusCode.INTERNAL:
        message, reason, metadata = exc.message, exc.reason, dict(exc.metadata)
    elif isinstance(exc, TesseraError):
        incident = secrets.token_hex(6)
        log.error("admin call failed (incident %s): %s", incident, exc.message, exc_info=exc)
        message, reason, metadata = (
            f"internal error (incident {incident})",
            "INTERNAL",
            {"incident": incident},
        )
    else:
        incident = secrets.token_hex(6)
        log.error("admin call failed unexpectedly (incident %s)", incident, exc_info=exc)
        message, reason, metadata = (
            f"internal error (incident {incident})",
            "INTERNAL",
            {"incident": incident},
        )
    details: list[any_pb2.Any] = []
    bad_request = None
    if isinstance(exc, PolicyCompileError) and exc.diagnostics:
        first = exc.diagnostics[0]
        metadata.setdefault("line", str(first.line))
        metadata.setdefault("column", str(first.column))
        metadata.setdefault("diagnostics", str(len(exc.diagnostics)))
        bad_request = error_details_pb2.BadRequest(
            field_violations=[
                error_details_pb2.BadRequest.FieldViolation(field="source", description=_cut(str(d)))
                for d in exc.diagnostics[:50]
            ]
        )
    info = error_details_pb2.ErrorInfo(
        reason=reason, domain=DOMAIN, metadata={k: _cut(str(v)) for k, v in metadata.items()}
    )
    for detail in (info, bad_request):
        if detail is not None:
            packed = any_pb2.Any()
            packed.Pack(detail)
            details.append(packed)
    return status_pb2.Status(code=code.value[0], message=_cut(message), details=details)


def to_grpc_status(exc: BaseException) -> grpc.Status:
    """``exc`` as a ``grpc.Status`` for ``context.abort_with_status`` (details in the trailer)."""
    return rpc_status.to_status(status_proto(exc))


async def abort(context: grpc.aio.ServicerContext, exc: BaseException) -> None:
    """End the RPC with the status of ``exc`` (raises, as ``abort_with_status`` does)."""
    await context.abort_with_status(to_grpc_status(exc))


def error_info(status: status_pb2.Status) -> error_details_pb2.ErrorInfo | None:
    """The ErrorInfo detail of a ``google.rpc.Status`` (for clients and tests)."""
    for detail in status.details:
        if detail.Is(error_details_pb2.ErrorInfo.DESCRIPTOR):
            info = error_details_pb2.ErrorInfo()
            detail.Unpack(info)
            return info
    return None


__all__ = [
    "DOMAIN",
    "GRPC_CODES",
    "HTTP_STATUS",
    "abort",
    "error_info",
    "grpc_code",
    "status_proto",
    "to_grpc_status",
]
