"""The SDK's one exception tree (see :mod:`authz.client` for the tree as a picture).

Every class carries what the gateway said: ``code`` (the JSON-RPC error code, None when there was
none), ``message``, ``data`` (the JSON-RPC ``error.data`` object, ``{}`` when absent) and, lifted out of
``data`` when the gateway sent them, ``check``, ``reason`` and ``decision_id`` (the id to look up in the
audit chain). :func:`error_from_rpc` is the one place that maps a JSON-RPC error to a class.
"""

from __future__ import annotations

from collections.abc import Mapping
from datetime import UTC, datetime
from typing import Any

CAPABILITY = -32010
INTENT = -32011
POLICY = -32012
BUDGET = -32013
PROVENANCE = -32014
UNAVAILABLE = -32018
APPROVAL = -32019


class TesseraError(Exception):
    """Base of every error the SDK raises.

    ``check`` is the pipeline stage that decided (``capability``, ``intent``, ``policy``, ``budget``,
    ``provenance``, ``unavailable``, ``approval``, ``protocol``), ``reason`` the human-readable why,
    ``decision_id`` the audit id of the decision (also taken from the ``x-tessera-decision-id`` header).
    """

    def __init__(
        self,
        code: int | None,
        message: str,
        data: Mapping[str, Any] | None = None,
        *,
        decision_id: str | None = None,
    ):
        super().__init__(code, message, data)
        self.code = code
        self.message = message
        self.data: dict[str, Any] = dict(data) if isinstance(data, Mapping) else {}
        self.check: str | None = _str(self.data.get("check"))
        self.reason: str | None = _str(self.data.get("reason"))
        self.decision_id: str | None = _str(self.data.get("decision_id")) or decision_id

    def __str__(self) -> str:
        head = self.message
        if self.reason and self.reason != self.message:
            head = f"{head}: {self.reason}"
        tags = [str(self.code)] if self.code is not None else []
        if self.check:
            tags.append(self.check)
        if self.decision_id:
            tags.append(f"decision {self.decision_id}")
        return f"{head} ({', '.join(tags)})" if tags else head

    def __repr__(self) -> str:
        return f"{type(self).__name__}(code={self.code!r}, message={self.message!r}, data={self.data!r})"

    def __reduce__(self) -> Any:  # keep subclasses picklable despite the keyword-only argument
        return (_rebuild, (type(self), self.code, self.message, self.data, self.__dict__))


def _rebuild(cls: type[TesseraError], code: Any, message: str, data: Any, state: dict) -> TesseraError:
    error = cls.__new__(cls)
    Exception.__init__(error, code, message, data)
    error.__dict__.update(state)
    return error


class CapabilityError(TesseraError):
    """-32010: the token is missing, malformed, forged, expired, not yet valid or revoked, or the call is
    outside one of its caveats (tool, argument, agent, prompt)."""


class IntentError(TesseraError):
    """-32011: the tool is forbidden by, or absent from, what the user's prompt asked for (or the tenant
    requires a prompt and none was sent)."""


class PolicyError(TesseraError):
    """-32012: the tenant's policy denied the call, or its approval was rejected, expired or used up."""


class BudgetError(TesseraError):
    """-32013: a ``max_calls``/``max_cost`` caveat or a budget rule is exhausted.

    ``scope`` names the budget (e.g. ``token:max_calls``), ``limit`` its size, ``resets_at`` when it
    refills (None: never, e.g. a token caveat).
    """

    def __init__(self, code: int | None, message: str, data: Mapping[str, Any] | None = None, **kw: Any):
        super().__init__(code, message, data, **kw)
        self.scope: str | None = _str(self.data.get("scope"))
        self.limit: int | float | None = _number(self.data.get("limit"))
        self.resets_at: datetime | None = _time(self.data.get("resets_at"))


class ProvenanceError(TesseraError):
    """-32014: a presented memory entry is unsigned or forged, or provenance is required and missing."""


class UnavailableError(TesseraError):
    """-32018: a dependency of the gateway failed and it failed closed. Safe to retry after
    ``retry_after`` seconds (None when the gateway gave no hint)."""

    def __init__(
        self,
        code: int | None,
        message: str,
        data: Mapping[str, Any] | None = None,
        *,
        retry_after: float | None = None,
        **kw: Any,
    ):
        super().__init__(code, message, data, **kw)
        ms = _number(self.data.get("retry_after_ms"))
        self.retry_after: float | None = ms / 1000 if ms is not None else retry_after


class ApprovalRequired(TesseraError):
    """-32019: a human must approve this call. Repeat the same call with ``approval_id`` once approved
    (``tool_call(..., approval_id=e.approval_id)``), or let the SDK wait (``wait_for_approval=``).

    ``expires_at`` is when the approval lapses (an expired approval answers :class:`PolicyError`).
    """

    def __init__(self, code: int | None, message: str, data: Mapping[str, Any] | None = None, **kw: Any):
        super().__init__(code, message, data, **kw)
        self.approval_id: str | None = _str(self.data.get("approval_id"))
        self.expires_at: datetime | None = _time(self.data.get("expires_at"))
        self.resume_header: str = _str(self.data.get("resume_header")) or "X-Approval-Id"


class ProtocolError(TesseraError):
    """Any other JSON-RPC error (malformed request -32700/-32600/-32602, an error from the tool server
    itself such as an unknown method), or a reply that is JSON but not a valid JSON-RPC response
    (``code`` None)."""


class GatewayError(TesseraError):
    """The gateway could not be reached or did not answer properly: a connection failure or timeout
    (``http_status`` None, the transport exception is ``__cause__``), a non-2xx HTTP status, or a body
    that is not JSON. ``retry_after`` comes from a ``Retry-After`` header when there is one."""

    def __init__(
        self,
        message: str,
        *,
        http_status: int | None = None,
        body: str | None = None,
        retry_after: float | None = None,
        code: int | None = None,
        data: Mapping[str, Any] | None = None,
        decision_id: str | None = None,
    ):
        super().__init__(code, message, data, decision_id=decision_id)
        self.http_status = http_status
        self.body = body
        self.retry_after = retry_after

    def __str__(self) -> str:
        text = super().__str__()
        return f"{text} [HTTP {self.http_status}]" if self.http_status is not None else text


#: JSON-RPC code -> class; every other code is a :class:`ProtocolError`.
ERRORS_BY_CODE: dict[int, type[TesseraError]] = {
    CAPABILITY: CapabilityError,
    INTENT: IntentError,
    POLICY: PolicyError,
    BUDGET: BudgetError,
    PROVENANCE: ProvenanceError,
    UNAVAILABLE: UnavailableError,
    APPROVAL: ApprovalRequired,
}


def error_from_rpc(
    error: Any, *, decision_id: str | None = None, retry_after: float | None = None
) -> TesseraError:
    """The typed exception for a JSON-RPC ``error`` object (a mapping with code, message, data).

    Anything that is not a well-formed error object becomes a :class:`ProtocolError` with code None.
    """
    if not isinstance(error, Mapping):
        return ProtocolError(None, f"malformed JSON-RPC error: {_excerpt(error)}", decision_id=decision_id)
    code = error.get("code")
    if not isinstance(code, int) or isinstance(code, bool):
        return ProtocolError(None, f"malformed JSON-RPC error: {_excerpt(error)}", decision_id=decision_id)
    message = error.get("message")
    message = message if isinstance(message, str) else "error"
    data = error.get("data")
    if not isinstance(data, Mapping):
        data = {} if data is None else {"value": data}
    cls = ERRORS_BY_CODE.get(code, ProtocolError)
    if cls is UnavailableError:
        return UnavailableError(code, message, data, retry_after=retry_after, decision_id=decision_id)
    return cls(code, message, data, decision_id=decision_id)


def _str(value: Any) -> str | None:
    return value if isinstance(value, str) and value else None


def _number(value: Any) -> int | float | None:
    return value if isinstance(value, int | float) and not isinstance(value, bool) else None


def _time(value: Any) -> datetime | None:
    if isinstance(value, int | float) and not isinstance(value, bool):
        return datetime.fromtimestamp(value, UTC)
    if not isinstance(value, str):
        return None
    try:
        return datetime.fromisoformat(value.replace("z", "Z"))
    except ValueError:
        return None


def _excerpt(value: Any, limit: int = 200) -> str:
    text = repr(value)
    return text if len(text) <= limit else text[: limit - 3] + "..."
