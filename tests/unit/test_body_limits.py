"""``authz.server.body.load_bounded``: the orjson fast path gives exactly what the checked ``json`` parse
gives (documents, types, errors), and is taken for the common call body, not for one it cannot prove."""

from __future__ import annotations

import json
import math
import os

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from authz.config import BodyLimitsConfig
from authz.server import body

LIMITS = BodyLimitsConfig()
PROPS = settings(
    max_examples=int(os.environ.get("TESSERA_PROPERTY_EXAMPLES", "200")),
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow],
)
CALL = (
    b'{"jsonrpc": "2.0", "id": 42, "method": "tools/call", "params": {"name": "read_invoice", '
    b'"arguments": {"invoice_id": "INV-1001", "include_lines": true}, "_meta": {"progressToken": "p-1"}}}'
)


def reference(raw: bytes, limits=LIMITS):
    """What load_bounded answered before the fast path: the checked json parse, then the shape walk."""
    if len(raw) > limits.max_bytes:
        raise body.BodyError(body.INVALID_REQUEST, f"request body larger than {limits.max_bytes} bytes")
    doc = body._load_checked(raw, limits)
    body._check_shape(doc, limits)
    return doc


def typed(value):
    """A value with every type made explicit (1, 1.0 and True compare equal in Python)."""
    if isinstance(value, dict):
        return ("dict", [(k, typed(v)) for k, v in value.items()])
    if isinstance(value, list):
        return ("list", [typed(v) for v in value])
    if isinstance(value, float):
        return ("float", "nan" if math.isnan(value) else value.hex())
    return (type(value).__name__, value)


def outcome(load, raw: bytes, limits=LIMITS):
    try:
        return ("doc", typed(load(raw, limits)))
    except body.BodyError as exc:
        return ("error", exc.code, exc.message)


scalars = (
    st.none()
    | st.booleans()
    | st.integers()
    | st.integers(min_value=2**62, max_value=2**70).flatmap(lambda n: st.sampled_from([n, -n]))
    | st.floats()
    | st.text(max_size=12)
    | st.sampled_from(["a:b", "é", "\ud800", "\x00", '"', "\\", "http://x/y"])
)
values = st.recursive(
    scalars,
    lambda children: (
        st.lists(children, max_size=4)
        | st.dictionaries(
            st.text(max_size=6) | st.sampled_from(["id", "a:b", "method"]), children, max_size=4
        )
    ),
    max_leaves=25,
)


def encodings(value):
    return st.sampled_from(
        [
            json.dumps(value).encode(),
            json.dumps(value, separators=(",", ":"), ensure_ascii=False).encode("utf-8", "surrogatepass"),
            json.dumps(value, indent=1).encode(),
            json.dumps(value, separators=(" , ", " : ")).encode(),
        ]
    )


def _twice(key: str, first, second) -> bytes:
    """An object naming ``key`` twice (json.dumps cannot write one)."""
    k = json.dumps(key)
    return f'{{"k":1,{k}:{json.dumps(first)},{k} :{json.dumps(second)}}}'.encode()


duplicated = st.tuples(st.text(max_size=4), values, values).map(lambda t: _twice(*t))
bodies = st.one_of(
    values.flatmap(encodings),
    duplicated,
    st.binary(max_size=200),
    st.sampled_from(
        [b"\xef\xbb\xbf{}", b'"\xed\xa0\x80"', b"[NaN, Infinity]", b"1e999", b"[" * 70 + b"]" * 70]
    ),
)


@PROPS
@given(bodies)
def test_the_fast_path_answers_exactly_like_the_checked_parse(raw):
    assert outcome(body.load_bounded, raw) == outcome(reference, raw)


@PROPS
@given(values.flatmap(encodings), st.integers(min_value=0, max_value=8))
def test_the_key_limit_holds_on_the_fast_path(raw, max_keys):
    limits = BodyLimitsConfig(max_keys=max_keys)
    assert outcome(body.load_bounded, raw, limits) == outcome(reference, raw, limits)


def test_a_plain_tool_call_takes_the_fast_path():
    assert body._load_fast(CALL, LIMITS.max_keys) == json.loads(CALL)


@pytest.mark.parametrize(
    "raw",
    [
        b'{"id":1,"id":2}',  # a duplicate: orjson would keep the last
        b'{"uri":"file:///a"}',  # a colon inside a string: the key count proves nothing
        b'{"n":18446744073709551616}',  # orjson reads it as a float
        b'{"n":NaN}',
        b'"\\ud800"',
    ],
)
def test_what_the_fast_path_cannot_prove_goes_to_the_checked_parse(raw):
    assert body._load_fast(raw, LIMITS.max_keys) is body._UNDECIDED
    assert outcome(body.load_bounded, raw) == outcome(reference, raw)


def test_duplicate_keys_are_still_refused():
    with pytest.raises(body.BodyError, match="duplicate key 'method'"):
        body.load_bounded(b'{"jsonrpc":"2.0","method":"ping","method":"tools/call"}', LIMITS)


@settings(max_examples=1000, deadline=None)
@given(st.lists(st.floats(allow_nan=False, allow_infinity=False), min_size=1, max_size=20))
def test_floats_read_by_the_fast_path_are_the_same_doubles(numbers):
    raw = json.dumps(numbers).encode()  # a long mantissa may go to the checked parse: fine either way
    assert outcome(body.load_bounded, raw) == outcome(reference, raw)
