"""Streaming export of audit events as NDJSON or CSV."""

from __future__ import annotations

import csv
import json
from collections.abc import AsyncIterator
from datetime import UTC, datetime
from typing import Any, Protocol

from authz.errors import InvalidArgument
from authz.storage.protocols import AuditRecord, AuditStore

#: The CSV columns, in order.
CSV_COLUMNS = (
    "seq",
    "time",
    "tenant",
    "decision",
    "check",
    "code",
    "agent",
    "tool",
    "decision_id",
    "reason",
    "hash",
)
FORMATS = ("ndjson", "csv")
DECISIONS = ("allow", "deny", "escalate", "admin")
_FORMULA_START = ("=", "+", "-", "@", "\t", "\r")


class _Writer(Protocol):
    def write(self, text: str, /) -> Any: ...


def _iso_ms(time_ms: int) -> str:
    return (
        datetime.fromtimestamp(time_ms / 1000, UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")
    )


def _to_ms(value: datetime | int | float | None) -> int | None:
    """A datetime (naive means UTC) or epoch milliseconds → epoch milliseconds."""
    if value is None:
        return None
    if isinstance(value, datetime):
        if value.tzinfo is None:
            value = value.replace(tzinfo=UTC)
        return int(value.timestamp() * 1000)
    if isinstance(value, int | float) and not isinstance(value, bool):
        return int(value)
    raise InvalidArgument(f"a time bound must be a datetime or epoch milliseconds, not {value!r}")


async def iter_audit_events(
    store: AuditStore,
    *,
    tenant: str | None = None,
    since: datetime | int | None = None,
    until: datetime | int | None = None,
    agent: str | None = None,
    decision: str | None = None,
    batch: int = 1000,
) -> AsyncIterator[AuditRecord]:
    """Events of one tenant, or of every tenant (tenant by tenant, each in seq order), filtered.

    ``since`` is inclusive, ``until`` exclusive; both are datetimes or epoch milliseconds.
    """
    if decision is not None and decision not in DECISIONS:
        raise InvalidArgument(f"decision must be one of {', '.join(DECISIONS)}, not {decision!r}")
    since_ms, until_ms = _to_ms(since), _to_ms(until)
    tenants = [tenant] if tenant is not None else await store.audit_tenants()
    for name in tenants:
        events = store.iter_events(
            name, batch=batch, since_ms=since_ms, until_ms=until_ms, agent=agent, decision=decision
        )
        try:
            async for record in events:
                yield record
        finally:
            close = getattr(events, "aclose", None)
            if close is not None:
                await close()


def ndjson_line(record: AuditRecord) -> str:
    # The stored event text is spliced in verbatim: it is the exact RFC 8785 form that was hashed, so a
    # consumer can re-verify hash = SHA-256(prev_hash || JCS(event)) from the export alone.
    head = json.dumps(
        {"tenant": record.tenant, "seq": record.seq, "prev_hash": record.prev_hash, "hash": record.hash}
    )
    return f'{head[:-1]}, "event": {record.event}}}\n'


def _cell(value: Any) -> str:
    """Text for a CSV cell; text that a spreadsheet would run as a formula is prefixed with ``'``."""
    if value is None:
        return ""
    text = str(value)
    return "'" + text if text.startswith(_FORMULA_START) else text


def csv_row(record: AuditRecord) -> list[str]:
    try:
        tessera = json.loads(record.event).get("tessera") or {}
    except (ValueError, AttributeError):
        tessera = {}
    code = tessera.get("code")
    return [
        str(record.seq),
        _iso_ms(record.time_ms),
        _cell(record.tenant),
        _cell(record.decision),
        _cell(tessera.get("check")),
        str(code) if isinstance(code, int) else "",
        _cell(record.agent),
        _cell(tessera.get("tool") or tessera.get("action")),
        _cell(tessera.get("decision_id")),
        _cell(tessera.get("reason")),
        record.hash,
    ]


class LineBuffer:
    """Collects csv.writer output so it can be handed to ``out.write`` in one piece per batch."""

    def __init__(self) -> None:
        self.parts: list[str] = []

    def write(self, text: str) -> None:
        self.parts.append(text)

    def take(self) -> str:
        text, self.parts = "".join(self.parts), []
        return text


async def export_events(
    store: AuditStore,
    out: _Writer,
    *,
    format: str = "ndjson",
    tenant: str | None = None,
    since: datetime | int | None = None,
    until: datetime | int | None = None,
    agent: str | None = None,
    decision: str | None = None,
    batch: int = 1000,
) -> int:
    """Write matching events to ``out`` (anything with ``write(str)``) and return how many.

    ``ndjson``: one object per line, ``{"tenant", "seq", "prev_hash", "hash", "event"}`` with ``event``
    the stored OCSF event verbatim. ``csv``: a header and :data:`CSV_COLUMNS` (``time`` RFC 3339 UTC;
    cells that start with ``= + - @`` get a leading ``'`` so spreadsheets do not evaluate them). Events
    are read and written ``batch`` at a time; nothing holds the whole export in memory.
    """
    if format not in FORMATS:
        raise InvalidArgument(f"format must be one of {', '.join(FORMATS)}, not {format!r}")
    buffer = LineBuffer()
    writer = csv.writer(buffer, lineterminator="\r\n") if format == "csv" else None
    if writer is not None:
        writer.writerow(CSV_COLUMNS)
    count = 0
    records = iter_audit_events(
        store, tenant=tenant, since=since, until=until, agent=agent, decision=decision, batch=batch
    )
    try:
        async for record in records:
            if writer is None:
                buffer.write(ndjson_line(record))
            else:
                writer.writerow(csv_row(record))
            count += 1
            if count % batch == 0:
                out.write(buffer.take())
    finally:
        await records.aclose()
    out.write(buffer.take())
    return count
