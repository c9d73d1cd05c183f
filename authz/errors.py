"""Tessera's one exception tree.

Every error Tessera raises on purpose derives from :class:`TesseraError`. The tree is what callers
catch; :mod:`authz.server.status` is the one place that maps it to gRPC status codes.

::

    TesseraError
    ├── ConfigError            bad or missing configuration (startup fails)
    ├── InvalidArgument        bad input from a caller (caveat syntax, unknown field, bad value)
    │   └── PolicyCompileError     Rego that does not compile (carries line/column diagnostics)
    ├── NotFound               the named object does not exist
    ├── AlreadyExists          the object to create exists already
    ├── FailedPrecondition     the object exists but is in the wrong state for the call
    ├── Unauthenticated        missing or unknown credential (admin API)
    ├── PermissionDenied       credential known, action outside its role or tenant scope
    ├── TooManyRequests        refused before any work: too many failed attempts (admin authentication)
    ├── StorageError           the store failed
    │   └── StoreUnavailable       transient: connection lost, timeout, database down
    └── DependencyError        another dependency (intent extractor, policy engine, webhook) failed
        └── OutboundRefused        an outbound URL names an address Tessera will not connect to

On the check path none of these reach Envoy as an error: the pipeline turns every exception into a
deny (-32018 for dependencies, see :mod:`authz.check`). A denial itself is a value, never an exception.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any


class TesseraError(Exception):
    """Base of every error Tessera raises on purpose.

    ``reason`` is a stable UPPER_SNAKE identifier (it becomes ``google.rpc.ErrorInfo.reason``);
    ``metadata`` carries small string facts for the caller; the message is for humans.
    """

    reason: str = "TESSERA_ERROR"

    def __init__(self, message: str, *, reason: str | None = None, metadata: Mapping[str, str] | None = None):
        super().__init__(message)
        self.message = message
        if reason is not None:
            self.reason = reason
        self.metadata: dict[str, str] = dict(metadata or {})


class ConfigError(TesseraError):
    reason = "CONFIG_INVALID"


class InvalidArgument(TesseraError):
    reason = "INVALID_ARGUMENT"


@dataclass(frozen=True, slots=True)
class CompileDiagnostic:
    """One compile error in a policy source, 1-based line and column (0 when unknown)."""

    line: int
    column: int
    message: str

    def __str__(self) -> str:
        return f"{self.line}:{self.column}: {self.message}"


class PolicyCompileError(InvalidArgument):
    reason = "POLICY_COMPILE_ERROR"

    def __init__(self, message: str, diagnostics: list[CompileDiagnostic] | None = None, **kw: Any):
        super().__init__(message, **kw)
        self.diagnostics: list[CompileDiagnostic] = list(diagnostics or [])


class NotFound(TesseraError):
    reason = "NOT_FOUND"


class AlreadyExists(TesseraError):
    reason = "ALREADY_EXISTS"


class FailedPrecondition(TesseraError):
    reason = "FAILED_PRECONDITION"


class Unauthenticated(TesseraError):
    reason = "UNAUTHENTICATED"


class PermissionDenied(TesseraError):
    reason = "PERMISSION_DENIED"


class TooManyRequests(TesseraError):
    reason = "TOO_MANY_REQUESTS"


class StorageError(TesseraError):
    reason = "STORAGE_ERROR"


class StoreUnavailable(StorageError):
    reason = "STORE_UNAVAILABLE"


class DependencyError(TesseraError):
    reason = "DEPENDENCY_FAILED"


class OutboundRefused(DependencyError):
    """An outbound request (webhook, extractor, forwarder) to an address the operator has not allowed:
    loopback, private, link-local, unique-local, metadata, or one of the service's own ports
    (:mod:`authz.outbound`). Raised before any connection is made; the message says which rule refused."""

    reason = "OUTBOUND_REFUSED"
