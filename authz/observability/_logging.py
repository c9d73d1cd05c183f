"""Logs: one JSON object per line, credentials redacted at the logger.

Every record becomes ``{"time", "level", "logger", "message"}`` plus, when known, ``decision_id``,
``tenant``, ``trace_id``/``span_id`` (the active OpenTelemetry span) and ``exception``. A call site adds
the decision and tenant with ``log.warning(..., extra={"decision_id": ..., "tenant": ...})``.

Redaction happens once, in the handler's filter, not at each call site: bearer credentials, admin keys
(``tsk_<id>_<secret>`` keeps its id), capability tokens (macaroons, base64url of a V2 binary) and the
exact bytes of every :class:`~authz.secrets.Secret` registered with :meth:`Redactor.add` (the master key)
are replaced by ``[redacted]`` in the message, its arguments and the exception text.

Third-party libraries log at WARNING and above only (httpx wrote one INFO line per readiness poll).
"""

from __future__ import annotations

import json
import logging
import re
import sys
from datetime import UTC, datetime
from typing import IO, Any

from opentelemetry import trace

from authz.secrets import Secret

#: Loggers of libraries Tessera uses, held at WARNING whatever Tessera's own level.
QUIET_LOGGERS = (
    "httpx",
    "httpcore",
    "httpx2",  # the mcp SDK's HTTP client (the intent catalog's tools/list fetch)
    "httpcore2",
    "grpc",
    "grpc._cython",
    "asyncio",
    "urllib3",
    "opentelemetry",
    "psycopg",
    "psycopg.pool",
    "uvicorn",
    "uvicorn.access",
    "uvicorn.error",
    "mcp",
    "sse_starlette",
)

_PATTERNS = (
    # Authorization: Bearer <anything>
    (re.compile(r"(?i)(bearer\s+)[^\s\"',;]+"), r"\1[redacted]"),
    # admin keys: keep the key id (it names the key in the audit), drop the secret
    (re.compile(r"(tsk_[a-z0-9]{8,32}_)[A-Za-z0-9_\-]{16,128}"), r"\1[redacted]"),
    # capability tokens: macaroon V2 binary (first byte 0x02) as base64url starts "A" + [g-v]
    (re.compile(r"(?<![A-Za-z0-9_\-])A[g-v][A-Za-z0-9_\-]{40,}"), "[redacted]"),
)

_STANDARD_ATTRS = frozenset(
    logging.LogRecord("", 0, "", 0, "", (), None).__dict__.keys() | {"message", "asctime", "taskName"}
)


class Redactor(logging.Filter):
    """Scrubs credentials from every record that passes the handler."""

    def __init__(self) -> None:
        super().__init__()
        self._exact: list[str] = []

    def add(self, secret: Secret | str | bytes) -> None:
        """Redact this exact value too (e.g. the master key, which has no recognisable shape)."""
        raw = secret.reveal() if isinstance(secret, Secret) else secret
        text = raw.decode("utf-8", "replace") if isinstance(raw, bytes) else raw
        if len(text) >= 8 and text not in self._exact:
            self._exact.append(text)

    def scrub(self, text: str) -> str:
        for value in self._exact:
            if value in text:
                text = text.replace(value, "[redacted]")
        for pattern, replacement in _PATTERNS:
            text = pattern.sub(replacement, text)
        return text

    def filter(self, record: logging.LogRecord) -> bool:
        message = record.getMessage()
        if record.exc_info and not record.exc_text:
            record.exc_text = logging.Formatter().formatException(record.exc_info)
        record.msg = self.scrub(message)
        record.args = None
        if record.exc_text:
            record.exc_text = self.scrub(record.exc_text)
        record.exc_info = None  # the scrubbed exc_text is what gets written
        return True


class JsonFormatter(logging.Formatter):
    """One JSON object per line."""

    def format(self, record: logging.LogRecord) -> str:
        out: dict[str, Any] = {
            "time": datetime.fromtimestamp(record.created, UTC).isoformat(timespec="milliseconds"),
            "level": record.levelname.lower(),
            "logger": record.name,
            "message": record.getMessage(),
        }
        for key, value in record.__dict__.items():
            if key not in _STANDARD_ATTRS and not key.startswith("_"):
                out[key] = (
                    value if isinstance(value, str | int | float | bool) or value is None else str(value)
                )
        if "trace_id" not in out:
            context = trace.get_current_span().get_span_context()
            if context.is_valid:
                out["trace_id"] = format(context.trace_id, "032x")
                out["span_id"] = format(context.span_id, "016x")
        if record.exc_text:
            out["exception"] = record.exc_text
        return json.dumps(out, ensure_ascii=False, separators=(",", ":"))


class TextFormatter(logging.Formatter):
    """``time level logger: message`` for a person at a terminal (TESSERA_LOG_FORMAT=text)."""

    def __init__(self) -> None:
        super().__init__("%(asctime)s %(levelname)s %(name)s: %(message)s")


def configure_logging(level: str = "INFO", fmt: str = "json", stream: IO[str] | None = None) -> Redactor:
    """Replace the root logger's handlers with one that redacts and writes ``fmt`` (json|text) to
    ``stream`` (standard error by default). Returns the redactor, to register secrets with."""
    numeric = logging.getLevelName(level.upper())
    if not isinstance(numeric, int):
        raise ValueError(f"unknown log level {level!r}")
    if fmt not in ("json", "text"):
        raise ValueError(f"unknown log format {fmt!r} (json or text)")
    handler = logging.StreamHandler(stream if stream is not None else sys.stderr)
    redactor = Redactor()
    handler.addFilter(redactor)
    handler.setFormatter(JsonFormatter() if fmt == "json" else TextFormatter())
    root = logging.getLogger()
    for old in list(root.handlers):
        root.removeHandler(old)
    root.addHandler(handler)
    root.setLevel(numeric)
    for name in QUIET_LOGGERS:
        logging.getLogger(name).setLevel(max(numeric, logging.WARNING))
    return redactor


def redactor() -> Redactor | None:
    """The redactor :func:`configure_logging` installed on the root logger, if any."""
    for handler in logging.getLogger().handlers:
        for candidate in handler.filters:
            if isinstance(candidate, Redactor):
                return candidate
    return None
