"""Canonical JSON (RFC 8785) for hashing: audit events, argument hashes, approval bindings."""

from __future__ import annotations

import json
from typing import Any

import rfc8785

MAX_SAFE_INT = 2**53 - 1  # RFC 8785 (I-JSON) numbers


def canonical_json(value: Any) -> bytes:
    """RFC 8785 bytes of ``value``.

    Fast path: for JSON made only of dicts with ASCII string keys, lists, strings, booleans, null and
    integers within ±(2**53-1), RFC 8785 output is exactly ``json.dumps(sort_keys=True,
    separators=(",", ":"), ensure_ascii=False)``: both escape only the quote, the backslash and control
    characters (short forms for b, f, n, r, t; lowercase ``u00xx`` otherwise), code-point order equals
    UTF-16 order for ASCII keys, and there are no floats to format. The C encoder is about 7x faster than
    ``rfc8785``'s pure-Python one, which handles everything else (floats, non-ASCII keys, lone
    surrogates). ``tests/unit/test_audit_chain.py`` cross-checks the two. Raises ``rfc8785`` errors for
    values RFC 8785 cannot represent (e.g. integers beyond ±2**53-1 given as numbers, NaN).
    """
    if type(value) is dict and _plain(value):
        try:
            return json.dumps(value, sort_keys=True, separators=(",", ":"), ensure_ascii=False).encode()
        except UnicodeEncodeError:  # a lone surrogate: let rfc8785 decide
            pass
    return rfc8785.dumps(value)


def stable_json(value: Any) -> bytes:
    """Canonical JSON when RFC 8785 can represent ``value``; otherwise a deterministic stand-in
    (sorted keys, ASCII escapes, Python's number formatting) so hashing never fails on odd input."""
    try:
        return canonical_json(value)
    except Exception:
        return b"~" + json.dumps(value, sort_keys=True, separators=(",", ":"), default=repr).encode()


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
