"""Canonical JSON (RFC 8785) for hashing: audit events, argument hashes, approval bindings."""

from __future__ import annotations

import json
from json.encoder import encode_basestring  # the C escaper when available (json's own choice)
from typing import Any

import orjson
import rfc8785

MAX_SAFE_INT = 2**53 - 1  # RFC 8785 (I-JSON) numbers


def canonical_json(value: Any) -> bytes:
    """RFC 8785 bytes of ``value``.

    Fast path: for JSON made only of dicts with ASCII string keys, lists, strings, booleans, null and
    integers within ±(2**53-1), RFC 8785 output is exactly ``orjson.dumps`` with sorted keys (the same
    bytes as ``json.dumps(sort_keys=True, separators=(",", ":"), ensure_ascii=False)``, about 10x
    faster: an audit append encodes one event per decision): both escape only the quote, the backslash
    and control characters (short forms for b, f, n, r, t; lowercase ``u00xx`` otherwise), code-point
    order equals UTF-16 order for ASCII keys, and there are no floats to format (orjson's float forms
    differ from ECMAScript's, so floats never take this path). orjson refuses lone surrogates, which
    then go to ``rfc8785``. ``tests/unit/test_audit_chain.py`` and ``tests/unit/test_properties.py``
    cross-check the paths. Raises ``rfc8785`` errors for values RFC 8785 cannot represent (e.g. integers
    beyond ±2**53-1 given as numbers, NaN).

    Everything else that is plain JSON (floats, non-ASCII keys: an audit event whose denial data or
    admin details hold a float) goes through :func:`_encode`, a one-pass encoder about 4x faster than
    ``rfc8785``; anything it does not handle exactly (other types, values RFC 8785 refuses) is left to
    ``rfc8785`` itself, so errors are the reference's own. ``tests/unit/test_properties.py`` proves
    both paths byte-identical to ``rfc8785`` over the audit event shapes, floats and unicode.
    """
    kind = type(value)
    if kind is PlainJSON:
        try:
            return orjson.dumps(value, option=_ORJSON_VOUCHED)
        except orjson.JSONEncodeError:  # an integer past ±(2**53-1), a lone surrogate: the full path
            value, kind = dict(value), dict
    if kind is dict and _plain(value):
        try:
            return orjson.dumps(value, option=_ORJSON_OPTIONS)
        except orjson.JSONEncodeError:  # a lone surrogate: let rfc8785 decide
            pass
    parts: list[str] = []
    try:
        _encode(value, parts.append)
        return "".join(parts).encode()
    except (_NotPlain, UnicodeEncodeError):  # UnicodeEncodeError: a lone surrogate
        return rfc8785.dumps(value)


#: Sorted keys; integers past ±(2**53-1) and subclasses of str, int, dict and list refused rather than
#: encoded (``_plain`` already admits neither; this keeps orjson from ever widening the fast path).
_ORJSON_OPTIONS = orjson.OPT_SORT_KEYS | orjson.OPT_STRICT_INTEGER | orjson.OPT_PASSTHROUGH_SUBCLASS


#: For a :class:`PlainJSON`, whose builder vouches for the types (the top level is the subclass itself).
_ORJSON_VOUCHED = orjson.OPT_SORT_KEYS | orjson.OPT_STRICT_INTEGER


class PlainJSON(dict):
    """A dict its builder vouches for: it holds only dicts with ASCII ``str`` keys, lists, ``str``,
    booleans, null and integers (never a float, tuple or other type), so :func:`canonical_json` encodes
    it without first walking it to check (for an audit event the walk cost half the encoding).

    Only a builder that knows every value's type may use it (:func:`authz.audit._events.event_from_decision`
    checks the few values it does not build itself); ``tests/unit/test_properties.py`` holds such events
    to the reference encoder. Integers past ±(2**53-1) and lone surrogates are still caught (and left to
    the full path); a float would not be, which is why nothing else may wrap a dict in this.
    """

    __slots__ = ()


class _NotPlain(Exception):
    """A value :func:`_encode` leaves to ``rfc8785`` (which encodes it the same way or refuses it)."""


def _encode(value: Any, out) -> None:
    """RFC 8785 text of plain JSON values (exact types only), appended piecewise to ``out``."""
    kind = type(value)
    if kind is str:
        out(encode_basestring(value))  # escapes exactly ", \\, and controls (short forms, else \\u00xx)
    elif kind is dict:
        if not value:
            out("{}")
            return
        keys = list(value)
        for key in keys:
            if type(key) is not str:
                raise _NotPlain
        if "".join(keys).isascii():
            keys.sort()
        else:  # RFC 8785 §3.2.3: keys ordered by their UTF-16 code units, not code points
            keys.sort(key=_utf16)
        sep = "{"
        for key in keys:
            out(sep)
            out(encode_basestring(key))
            out(":")
            _encode(value[key], out)
            sep = ","
        out("}")
    elif kind is list:
        if not value:
            out("[]")
            return
        sep = "["
        for item in value:
            out(sep)
            _encode(item, out)
            sep = ","
        out("]")
    elif value is None:
        out("null")
    elif kind is bool:
        out("true" if value else "false")
    elif kind is int:
        if not -MAX_SAFE_INT <= value <= MAX_SAFE_INT:
            raise _NotPlain
        out(str(value))
    elif kind is float:
        out(_number(value))
    else:
        raise _NotPlain


def _utf16(key: str) -> bytes:
    return key.encode("utf-16-be", "surrogatepass")


def _number(value: float) -> str:
    """ECMAScript's Number::toString (RFC 8785 §3.2.2.3) from Python's shortest round-trip digits."""
    if value != value or value in (_INF, -_INF):
        raise _NotPlain  # NaN and infinities: rfc8785 refuses them
    if value == 0:
        return "0"  # and -0
    sign = ""
    if value < 0:
        sign, value = "-", -value
    mantissa, _, exponent = repr(value).partition("e")
    whole, _, fraction = mantissa.partition(".")
    significant = (whole + fraction).lstrip("0")
    # value = 0.DIGITS * 10**point: each leading zero dropped moves the point one place left
    point = len(whole) + int(exponent or 0) - (len(whole) + len(fraction) - len(significant))
    digits = significant.rstrip("0")
    count = len(digits)
    if count <= point <= 21:
        return sign + digits + "0" * (point - count)
    if 0 < point <= 21:
        return sign + digits[:point] + "." + digits[point:]
    if -6 < point <= 0:
        return sign + "0." + "0" * -point + digits
    power = point - 1
    tail = f"e{'+' if power > 0 else '-'}{abs(power)}"
    if count == 1:
        return sign + digits + tail
    return sign + digits[0] + "." + digits[1:] + tail


_INF = float("inf")


def stable_json(value: Any) -> bytes:
    """Canonical JSON when RFC 8785 can represent ``value``; otherwise a deterministic stand-in
    (sorted keys, ASCII escapes, Python's number formatting) so hashing never fails on odd input."""
    try:
        return canonical_json(value)
    except Exception:
        return b"~" + json.dumps(value, sort_keys=True, separators=(",", ":"), default=repr).encode()


def plain_json(value: Any) -> bool:
    """True when ``value`` holds only what :class:`PlainJSON` may hold (see :func:`canonical_json`)."""
    return _plain(value)


def _plain(root: Any) -> bool:
    """True when ``root`` holds only what the fast path encodes exactly like RFC 8785 (iterative walk)."""
    stack = [root]
    while stack:
        value = stack.pop()
        kind = type(value)
        if kind is dict:
            try:
                if not "".join(value).isascii():  # keys; a non-str key raises TypeError
                    return False
            except TypeError:
                return False
            stack.extend(value.values())
        elif kind is list:
            stack.extend(value)
        elif kind is str or kind is bool or value is None:
            continue
        elif kind is int:
            if not -MAX_SAFE_INT <= value <= MAX_SAFE_INT:
                return False
        else:
            return False
    return True
