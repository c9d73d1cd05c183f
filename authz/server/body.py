"""Bounded reading of agent request bodies (JSON) on the check path.

The body of a tool call is attacker-controlled and reaches the check service before the token has been
judged, so the work spent on it is bounded twice:

* **Before authentication** (:meth:`BodyLimits.preauth_bytes`): a caller whose bearer token does not
  authenticate gets its body parsed only if it is small (16 KiB by default), just far enough to echo the
  JSON-RPC id in the denial; a larger body is not parsed at all (the denial then carries ``id: null``).
* **Always**: body bytes, nesting depth, object keys (counted as each object completes, so a body of
  many objects is abandoned at the first one past the limit), array elements and batch size are
  capped. A body over a limit is answered -32600 (with the request id when it could be read) instead
  of raising ``RecursionError`` deep inside the parser.

The limits come from :class:`authz.config.BodyLimitsConfig` (``TESSERA_BODY_*``); see docs there.
"""

from __future__ import annotations

import json
import re
from typing import Any, Protocol

import orjson


class Limits(Protocol):
    """What :func:`load_bounded` needs (satisfied by :class:`authz.config.BodyLimitsConfig`)."""

    max_bytes: int
    max_depth: int
    max_keys: int
    max_elements: int
    max_batch: int
    preauth_bytes: int


class BodyError(ValueError):
    """The body is not acceptable: ``code`` is the JSON-RPC code (-32700 or -32600)."""

    def __init__(self, code: int, message: str, doc: Any = None):
        super().__init__(message)
        self.code, self.message, self.doc = code, message, doc


PARSE_ERROR = -32700
INVALID_REQUEST = -32600


class _TooMany(Exception):
    pass


class _DuplicateKey(Exception):
    pass


def load_bounded(body: bytes, limits: Limits) -> Any:
    """Parse ``body`` as JSON within ``limits``; raise :class:`BodyError` otherwise.

    Duplicate object keys are refused too: parsers disagree on which duplicate wins, and were Tessera to
    read ``"method": "ping"`` while the upstream reads a later ``"method": "tools/call"``, a tool call
    would pass as a token-only message.
    """
    if len(body) > limits.max_bytes:
        raise BodyError(INVALID_REQUEST, f"request body larger than {limits.max_bytes} bytes")
    doc = _load_fast(body, limits.max_keys)
    if doc is _UNDECIDED:
        doc = _load_checked(body, limits)
    # A body with fewer brackets than the depth limit and fewer commas than the element limit cannot
    # exceed either (brackets and commas inside strings only make this estimate larger): the common
    # small call skips the walk. These counts run at C speed.
    containers = body.count(b"[") + body.count(b"{")
    if containers > limits.max_depth or body.count(b",") + containers > limits.max_elements:
        _check_shape(doc, limits)
    return doc


_UNDECIDED = object()
#: An integer literal of 19 digits or more may not fit 64 bits, which orjson reads as a float.
_LONG_DIGITS = re.compile(rb"[0-9]{19}")


def _load_fast(body: bytes, max_keys: int) -> Any:
    """``body`` parsed by orjson when that provably gives what :func:`_load_checked` gives, else
    ``_UNDECIDED`` (and the checked parse decides, errors included).

    Each object key in JSON text is followed by a colon, so the colons of ``body`` bound its keys: when
    the parsed document holds as many keys as there are colons, no colon sat inside a string and no
    key was lost to a duplicate (orjson keeps the last); and no more keys than ``max_keys`` can be
    there. Whatever orjson refuses (NaN, lone surrogates, UTF-16, a byte-order mark, deep nesting) is
    left to ``json``, which accepts some of it; an integer that orjson would turn into a float is too.
    ``tests/unit/test_body_limits.py`` holds the two parses equal on generated bodies.
    """
    colons = body.count(b":")
    if colons > max_keys or _LONG_DIGITS.search(body) is not None:
        return _UNDECIDED
    try:
        doc = orjson.loads(body)
    except orjson.JSONDecodeError:
        return _UNDECIDED
    keys = 0
    stack = [doc]
    while stack:
        value = stack.pop()
        kind = type(value)
        if kind is dict:
            keys += len(value)
            stack.extend(value.values())
        elif kind is list:
            stack.extend(value)
    return doc if keys == colons else _UNDECIDED


def _load_checked(body: bytes, limits: Limits) -> Any:
    """``json`` with every key counted and duplicates refused (:func:`load_bounded`'s reference)."""
    keys = 0

    def pairs_hook(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
        nonlocal keys
        keys += len(pairs)
        if keys > limits.max_keys:
            raise _TooMany
        obj = dict(pairs)
        if len(obj) != len(pairs):
            seen: set[str] = set()
            for key, _ in pairs:
                if key in seen:
                    raise _DuplicateKey(key)
                seen.add(key)
        return obj

    try:
        doc = json.loads(body, object_pairs_hook=pairs_hook)
    except _TooMany:
        raise BodyError(
            INVALID_REQUEST, f"request body has more than {limits.max_keys} object keys"
        ) from None
    except _DuplicateKey as exc:
        raise BodyError(INVALID_REQUEST, f"invalid request: duplicate key {exc.args[0]!r}") from None
    except RecursionError:
        raise BodyError(
            INVALID_REQUEST, f"request body nested deeper than {limits.max_depth} levels"
        ) from None
    except (ValueError, UnicodeDecodeError):
        raise BodyError(PARSE_ERROR, "parse error: request body is not valid JSON") from None
    return doc


def _check_shape(doc: Any, limits: Limits) -> None:
    """Depth and element count, walked iteratively (no recursion), stopping at the first excess."""
    elements = 0
    stack: list[tuple[Any, int]] = [(doc, 1)]
    while stack:
        value, depth = stack.pop()
        if isinstance(value, dict):
            children = value.values()
        elif isinstance(value, list):
            elements += len(value)
            if elements > limits.max_elements:
                raise BodyError(
                    INVALID_REQUEST, f"request body has more than {limits.max_elements} array elements", doc
                )
            children = value
        else:
            continue
        if depth > limits.max_depth:
            raise BodyError(
                INVALID_REQUEST, f"request body nested deeper than {limits.max_depth} levels", doc
            )
        for child in children:
            if isinstance(child, dict | list):
                stack.append((child, depth + 1))
