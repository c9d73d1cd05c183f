"""authz.server.status: the one exception tree → gRPC status (+ google.rpc.ErrorInfo) mapping."""

from __future__ import annotations

import grpc
import pytest
from google.rpc import error_details_pb2, status_pb2
from grpc_status import rpc_status

from authz.errors import (
    AlreadyExists,
    CompileDiagnostic,
    ConfigError,
    DependencyError,
    FailedPrecondition,
    InvalidArgument,
    NotFound,
    PermissionDenied,
    PolicyCompileError,
    StorageError,
    StoreUnavailable,
    TesseraError,
    Unauthenticated,
)
from authz.server.status import DOMAIN, HTTP_STATUS, error_info, grpc_code, status_proto, to_grpc_status

CASES = [
    (InvalidArgument("bad"), grpc.StatusCode.INVALID_ARGUMENT, "INVALID_ARGUMENT", 400),
    (
        PolicyCompileError("no", [CompileDiagnostic(3, 7, "x")]),
        grpc.StatusCode.INVALID_ARGUMENT,
        "POLICY_COMPILE_ERROR",
        400,
    ),
    (NotFound("gone"), grpc.StatusCode.NOT_FOUND, "NOT_FOUND", 404),
    (AlreadyExists("dup"), grpc.StatusCode.ALREADY_EXISTS, "ALREADY_EXISTS", 409),
    (FailedPrecondition("state"), grpc.StatusCode.FAILED_PRECONDITION, "FAILED_PRECONDITION", 400),
    (Unauthenticated("who"), grpc.StatusCode.UNAUTHENTICATED, "UNAUTHENTICATED", 401),
    (PermissionDenied("no"), grpc.StatusCode.PERMISSION_DENIED, "PERMISSION_DENIED", 403),
    (StoreUnavailable("down"), grpc.StatusCode.UNAVAILABLE, "STORE_UNAVAILABLE", 503),
    (DependencyError("hook"), grpc.StatusCode.UNAVAILABLE, "DEPENDENCY_FAILED", 503),
    (StorageError("disk"), grpc.StatusCode.INTERNAL, "INTERNAL", 500),
    (ConfigError("cfg"), grpc.StatusCode.INTERNAL, "INTERNAL", 500),
    (TesseraError("base"), grpc.StatusCode.INTERNAL, "INTERNAL", 500),
    (RuntimeError("secret detail /etc/passwd"), grpc.StatusCode.INTERNAL, "INTERNAL", 500),
]


@pytest.mark.parametrize(("exc", "code", "reason", "http"), CASES, ids=lambda v: type(v).__name__)
def test_every_error_maps_to_one_code_with_error_info(exc, code, reason, http) -> None:
    assert grpc_code(exc) is code
    assert HTTP_STATUS[code] == http
    status = status_proto(exc)
    assert status.code == code.value[0]
    info = error_info(status)
    assert info is not None and info.reason == reason and info.domain == DOMAIN


def test_known_errors_keep_their_message_reason_and_metadata() -> None:
    exc = NotFound("tenant 'x' not found", reason="TENANT_NOT_FOUND", metadata={"tenant": "x"})
    status = status_proto(exc)
    assert status.message == "tenant 'x' not found"
    info = error_info(status)
    assert (info.reason, dict(info.metadata)) == ("TENANT_NOT_FOUND", {"tenant": "x"})


def test_internal_errors_leak_nothing_but_an_incident_id(caplog: pytest.LogCaptureFixture) -> None:
    for exc in (RuntimeError("db password is hunter2"), StorageError("SELECT secret FROM t failed")):
        status = status_proto(exc)
        assert "hunter2" not in status.message and "SELECT" not in status.message
        incident = error_info(status).metadata["incident"]
        assert incident in status.message
        assert any(incident in record.getMessage() for record in caplog.records)  # findable in the log


def test_compile_errors_carry_every_diagnostic_as_bad_request() -> None:
    exc = PolicyCompileError(
        "does not compile", [CompileDiagnostic(3, 7, "unexpected token"), CompileDiagnostic(9, 1, "bad rule")]
    )
    status = status_proto(exc)
    info = error_info(status)
    assert (info.metadata["line"], info.metadata["column"], info.metadata["diagnostics"]) == ("3", "7", "2")
    bad = [d for d in status.details if d.Is(error_details_pb2.BadRequest.DESCRIPTOR)]
    assert len(bad) == 1
    request = error_details_pb2.BadRequest()
    bad[0].Unpack(request)
    assert [(v.field, v.description) for v in request.field_violations] == [
        ("source", "3:7: unexpected token"),
        ("source", "9:1: bad rule"),
    ]


def test_grpc_status_carries_the_details_trailer() -> None:
    status = to_grpc_status(PermissionDenied("nope", reason="ROLE_INSUFFICIENT"))
    assert status.code is grpc.StatusCode.PERMISSION_DENIED and status.details == "nope"
    ((key, value),) = status.trailing_metadata
    assert key == rpc_status.GRPC_DETAILS_METADATA_KEY
    decoded = status_pb2.Status.FromString(value)
    assert error_info(decoded).reason == "ROLE_INSUFFICIENT"
