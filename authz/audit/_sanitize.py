"""What makes any value safe to put in an audit event: RFC 8785-encodable, bounded, valid UTF-8."""

from __future__ import annotations

import math
from collections.abc import Mapping
from enum import Enum
from typing import Any

from authz.canonical import MAX_SAFE_INT as _MAX_SAFE_INT  # larger integers are exported as strings

#: The chain that holds decisions made before a tenant was known (malformed token, protocol error).
#: Tenant creation must refuse this name (a leading underscore is reserved).
GATEWAY_TENANT = "_gateway"

_MAX_DEPTH = 8
_MAX_ITEMS = 256


def json_safe(value: Any, *, max_len: int = 2048, _depth: int = 0) -> Any:
    """A copy of ``value`` that RFC 8785 can always encode, so one odd value cannot fail a whole batch.

    Strings lose lone surrogates (replaced by U+FFFD) and are cut at ``max_len`` characters; integers
    outside ±(2**53-1) become strings; non-finite floats become null; enums become their value;
    containers are cut at 256 items and 8 levels; anything else becomes its ``str``.
    """
    kind = type(value)  # the common exact types first: an audit event passes several per decision
    if kind is str:
        return clean_text(value, max_len)
    if kind is int:
        return value if -_MAX_SAFE_INT <= value <= _MAX_SAFE_INT else str(value)
    if value is None or isinstance(value, bool):
        return value
    if isinstance(value, Enum):
        value = value.value
    if isinstance(value, int):
        value = int(value)
        return value if -_MAX_SAFE_INT <= value <= _MAX_SAFE_INT else str(value)
    if isinstance(value, float):
        return value if math.isfinite(value) else None
    if isinstance(value, str):
        return clean_text(value, max_len)
    if _depth >= _MAX_DEPTH:
        return clean_text(str(value), max_len)
    if isinstance(value, Mapping):
        out: dict[str, Any] = {}
        for key, item in list(value.items())[:_MAX_ITEMS]:
            out[clean_text(str(key), 256)] = json_safe(item, max_len=max_len, _depth=_depth + 1)
        return out
    if isinstance(value, (list, tuple)):
        return [json_safe(item, max_len=max_len, _depth=_depth + 1) for item in value[:_MAX_ITEMS]]
    return clean_text(str(value), max_len)


def clean_text(text: str, max_len: int = 2048) -> str:
    """``text`` as a plain ``str`` that encodes as UTF-8 (lone surrogates → U+FFFD), at most ``max_len``."""
    if type(text) is str and len(text) <= max_len and text.isascii():  # nothing to cut or replace
        return text
    text = str.__str__(text) if isinstance(text, str) else str(text)
    if len(text) > max_len:
        text = text[: max_len - 1] + "…"
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        text = "".join("\ufffd" if "\ud800" <= ch <= "\udfff" else ch for ch in text)
    return text
