"""Echoing caller-supplied strings (tool names, argument keys, ids, caveats) in denial reasons and errors.

A reason goes back to the caller, into the audit chain and into logs, so what the caller sent is never
copied in full: :func:`echo` quotes a bounded prefix with every character outside printable ASCII
escaped (JSON string escapes), so a reason can neither grow with the input nor carry control characters,
terminal escapes, line breaks or look-alike Unicode into a log line.
"""

from __future__ import annotations

import re
from typing import Any

#: Characters of caller-supplied text a reason shows, by default.
ECHO_LIMIT = 64
#: Longest policy-authored reason passed through (a policy may interpolate its input).
REASON_LIMIT = 512

_UNSAFE = re.compile(r"[\x00-\x1f\x7f-\x9f\u2028\u2029\u200b-\u200f\u202a-\u202e\u2066-\u2069\ufeff]")


def echo(value: Any, limit: int = ECHO_LIMIT) -> str:
    """``value`` as a single-quoted prefix of at most ``limit`` characters, every character outside
    printable ASCII (and the quote and backslash) escaped Python-style, plus a note of how many were
    left out: ``'read_invoice'``, ``'caf\\xe9'``, ``'aaaa'...(+9936 chars)``."""
    text = value if isinstance(value, str) else str(value)
    shown = (
        "'"
        + "".join(ch if " " <= ch <= "~" and ch not in "'\\" else _escape(ch) for ch in text[:limit])
        + "'"
    )
    if len(text) > limit:
        shown += f"...(+{len(text) - limit} chars)"
    return shown


def _escape(ch: str) -> str:
    if ch in "'\\":
        return "\\" + ch
    code = ord(ch)
    if code < 0x100:
        return f"\\x{code:02x}"
    return f"\\u{code:04x}" if code < 0x10000 else f"\\U{code:08x}"


def bounded_reason(reason: str, limit: int = REASON_LIMIT) -> str:
    """A reason written by someone else (a policy): cut at ``limit`` characters, control and
    bidirectional-formatting characters escaped, readable text otherwise kept."""
    if len(reason) > limit:
        reason = reason[:limit] + "..."
    if _UNSAFE.search(reason):
        reason = _UNSAFE.sub(lambda m: m.group().encode("unicode_escape").decode("ascii"), reason)
    return reason
