"""Property tests (hypothesis): the parsers facing callers never raise anything but their documented
errors, and what they accept round-trips.

- caveat grammar (:func:`authz.token.parse_caveat`): any text → a Caveat or InvalidArgument; valid
  caveats keep their text; a token carrying them authenticates.
- token decoding (:meth:`TokenAuthenticator.authenticate`): any string → AuthenticatedToken or
  TokenRejection (a value, never an exception); a changed byte never authenticates.
- the MCP/JSON-RPC body (:func:`authz.server.wire.parse_request`, :func:`authz.server.body.load_bounded`):
  any bytes → messages or a protocol error, never an exception.
- RFC 8785 (:func:`authz.canonical.canonical_json`): equal to the reference encoder, idempotent.
"""

from __future__ import annotations

import base64
import json
import math
import os
from datetime import UTC, datetime, timedelta

import rfc8785
from hypothesis import HealthCheck, assume, given, settings
from hypothesis import strategies as st

from authz.audit import json_safe
from authz.canonical import MAX_SAFE_INT, canonical_json, stable_json
from authz.errors import InvalidArgument
from authz.secrets import Secret
from authz.server import body as body_limits
from authz.server import wire
from authz.token import (
    AuthenticatedToken,
    KeyRing,
    TokenAuthenticator,
    TokenRejection,
    attenuate,
    mint,
    parse_caveat,
)
from tests.unit.test_wire import request

# A bounded run in `make test`; `make fuzz` sets TESSERA_PROPERTY_EXAMPLES much higher.
PROPS = settings(
    max_examples=int(os.environ.get("TESSERA_PROPERTY_EXAMPLES", "60")),
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow],
)
KEYRING = KeyRing(Secret("property-test-master-key-0123456789abcdef"))
AUTH = TokenAuthenticator(KEYRING, cache_size=0)
BASE = mint(KEYRING, tenant="demo", agent="a", expires=datetime.now(UTC) + timedelta(days=1))
ORIGINAL = AUTH.authenticate(BASE)

# -- caveat grammar ------------------------------------------------------------------------------------
KEYS = ["tenant", "agent", "tools", "expires", "not_before", "max_calls", "max_cost", "prompt_sha256"]
OPS = ["=", "!=", "<", "<=", ">", ">=", "in", "~", ""]
name = st.from_regex(r"[A-Za-z0-9_-]{1,12}(\.[A-Za-z0-9_-]{1,8}){0,2}", fullmatch=True)
scalar = st.one_of(
    st.integers(-(10**9), 10**9).map(str),
    st.floats(allow_nan=False, allow_infinity=False, width=32).map(lambda f: json.dumps(float(f))),
    st.sampled_from(["true", "false", "null", "EUR", '"quoted"', "[1,2]", '{"a":1}']),
)
valid_caveat = st.one_of(
    st.builds(lambda n, op, v: f"arg:{n} {op} {v}", name, st.sampled_from(["=", "!="]), scalar),
    st.builds(
        lambda n, op, v: f"arg:{n} {op} {v}",
        name,
        st.sampled_from(["<", "<=", ">", ">="]),
        st.integers(-(10**6), 10**6).map(str),
    ),
    st.builds(
        lambda n, vs: f"arg:{n} in {','.join(vs)}",
        name,
        st.lists(st.sampled_from(["EUR", "USD", "1"]), min_size=1),
    ),
    st.builds("max_calls = {}".format, st.integers(0, 2**63 - 1)),
    st.builds(
        "tools = {}".format,
        st.lists(st.from_regex(r"[a-z_]{1,10}", fullmatch=True), min_size=1).map(",".join),
    ),
    st.builds("prompt_sha256 = {}".format, st.from_regex(r"[0-9a-f]{64}", fullmatch=True)),
)
any_caveat = st.one_of(
    st.text(max_size=200),
    st.builds(
        lambda k, op, v: f"{k} {op} {v}",
        st.sampled_from([*KEYS, "arg:x", "arg:", "foo"]),
        st.sampled_from(OPS),
        st.text(max_size=60),
    ),
    valid_caveat,
)


@PROPS
@given(any_caveat)
def test_any_caveat_text_parses_or_raises_invalid_argument(text):
    try:
        caveat = parse_caveat(text)
    except InvalidArgument as exc:
        assert exc.message and len(exc.message) < 600
    else:
        assert caveat.raw == text


@PROPS
@given(valid_caveat)
def test_valid_caveats_parse_keep_their_text_and_authenticate(text):
    assert parse_caveat(text).raw == text
    narrowed = attenuate(BASE, [text])
    result = AUTH.authenticate(narrowed)
    assert isinstance(result, AuthenticatedToken), result
    assert result.caveats[-1].raw == text


# -- token decoding ------------------------------------------------------------------------------------
def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


@PROPS
@given(st.one_of(st.text(max_size=400), st.binary(max_size=400).map(_b64)))
def test_any_token_string_is_a_value_never_an_exception(token):
    result = AUTH.authenticate(token)
    assert isinstance(result, TokenRejection | AuthenticatedToken)
    assert not isinstance(result, AuthenticatedToken) or token.rstrip("=") == BASE


@PROPS
@given(st.data())
def test_a_changed_byte_never_authenticates_as_another_token(data):
    raw = bytearray(base64.urlsafe_b64decode(BASE + "=" * (-len(BASE) % 4)))
    index = data.draw(st.integers(0, len(raw) - 1))
    raw[index] ^= data.draw(st.integers(1, 255))
    result = AUTH.authenticate(_b64(bytes(raw)))
    # Only the macaroon's location hint is outside the signature (as in every macaroon library): a
    # change there may still authenticate, but as exactly the same token; any other change is rejected.
    if isinstance(result, AuthenticatedToken):
        assert (result.token_id, result.tenant, result.jti, result.caveats) == (
            ORIGINAL.token_id,
            ORIGINAL.tenant,
            ORIGINAL.jti,
            ORIGINAL.caveats,
        )
        assert index < 2 + 1 + len(b"tessera")  # the location field, right after the version byte
    else:
        assert isinstance(result, TokenRejection)


# -- the MCP / JSON-RPC body ---------------------------------------------------------------------------
json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(max_size=20),
    lambda children: (
        st.lists(children, max_size=5) | st.dictionaries(st.text(max_size=10), children, max_size=5)
    ),
    max_leaves=30,
)
rpc = st.fixed_dictionaries(
    {
        "jsonrpc": st.sampled_from(["2.0", "1.0", 2]),
        "method": st.sampled_from(["tools/call", "ping", "x", 5]),
    },
    optional={
        "id": st.one_of(st.integers(), st.text(max_size=5), st.none(), st.floats()),
        "params": st.one_of(
            json_values, st.fixed_dictionaries({"name": json_values, "arguments": json_values})
        ),
    },
)
bodies = st.one_of(
    st.binary(max_size=300),
    json_values.map(lambda v: json.dumps(v).encode()),
    rpc.map(lambda v: json.dumps(v).encode()),
    st.lists(rpc, max_size=4).map(lambda v: json.dumps(v).encode()),
)


@PROPS
@given(bodies, st.sampled_from(["mcp", "tool-call"]))
def test_any_body_is_messages_or_a_protocol_error(body, route):
    path = "/v1/mcp" if route == "mcp" else "/v1/tool-call"
    parsed = wire.parse_request(
        request(body, path=path, route=route, headers={"Authorization": "Bearer t"}), deadline=None
    )
    assert (parsed.protocol_error is None) != (not parsed.messages)
    if parsed.protocol_error is not None:
        code, message, _ = parsed.protocol_error
        assert code in (-32700, -32600, -32602) and isinstance(message, str) and len(message) < 600


@PROPS
@given(bodies)
def test_the_bounded_loader_raises_only_body_errors(body):
    try:
        body_limits.load_bounded(body, wire.DEFAULT_LIMITS)
    except body_limits.BodyError as exc:
        assert exc.code in (-32700, -32600)


@PROPS
@given(st.text(min_size=1, max_size=30), json_values)
def test_a_well_formed_tools_call_keeps_its_tool_and_arguments(tool, arguments):
    assume(isinstance(arguments, dict))
    body = json.dumps(
        {"jsonrpc": "2.0", "id": 1, "method": "tools/call", "params": {"name": tool, "arguments": arguments}}
    )
    parsed = wire.parse_request(request(body.encode()), deadline=None)
    if parsed.protocol_error is None:  # e.g. duplicate keys after NFC, limits: refused, never guessed
        (message,) = parsed.messages
        assert message.input.tool == tool and dict(message.input.arguments) == arguments


# -- RFC 8785 ------------------------------------------------------------------------------------------
canonical_values = st.recursive(
    st.none()
    | st.booleans()
    | st.integers(-MAX_SAFE_INT, MAX_SAFE_INT)
    | st.floats(allow_nan=False, allow_infinity=False)
    | st.text(max_size=20),
    lambda children: (
        st.lists(children, max_size=5) | st.dictionaries(st.text(max_size=8), children, max_size=5)
    ),
    max_leaves=40,
)


@PROPS
@given(canonical_values)
def test_canonical_json_equals_the_reference_and_is_idempotent(value):
    try:
        expected = rfc8785.dumps(value)
    except rfc8785.CanonicalizationError as refused:  # e.g. 2.0**53: outside I-JSON's exact range
        try:
            canonical_json(value)
        except rfc8785.CanonicalizationError as exc:
            assert type(exc) is type(refused)
            return
        raise AssertionError("canonical_json encoded what RFC 8785 refuses") from None
    encoded = canonical_json(value)
    assert encoded == expected
    # Read back as I-JSON does (numbers are doubles): 2.0**53 is written "9007199254740992", which is
    # a float again, not an integer outside the exact range.
    again = json.loads(encoded, parse_int=lambda s: int(s) if abs(int(s)) <= MAX_SAFE_INT else float(s))
    assert canonical_json(again) == encoded


@PROPS
@given(st.dictionaries(st.text(max_size=6), st.integers(0, 9), min_size=2, max_size=8))
def test_canonical_keys_are_sorted_by_utf16_code_units(mapping):
    keys = list(json.loads(canonical_json(mapping)))
    assert keys == sorted(mapping, key=lambda k: k.encode("utf-16-be"))


@PROPS
@given(
    st.recursive(
        st.none() | st.booleans() | st.integers() | st.floats() | st.text(max_size=10),
        lambda c: st.lists(c, max_size=4) | st.dictionaries(st.text(max_size=6), c, max_size=4),
        max_leaves=20,
    )
)
def test_stable_json_and_json_safe_never_fail(value):
    assert isinstance(stable_json(value), bytes)
    safe = json_safe(value)
    canonical_json(safe) if not (isinstance(safe, float) and math.isnan(safe)) else None


# The audit event shapes (what the chain hashes): decisions with every optional part, admin events with
# nested details, and the values that stress an encoder: floats at ECMAScript's notation boundaries,
# subnormals, -0, integers at and past ±(2**53-1), non-ASCII and astral keys (UTF-16 order), control
# characters, lone surrogates.
EDGE_FLOATS = [
    0.0,
    -0.0,
    5e-324,
    1e-7,
    1e-6,
    1.5e-7,
    0.000001234,
    1e16,
    1.5e16,
    1e20,
    1e21,
    1.7976931348623157e308,
]
any_text = st.text(st.characters(blacklist_categories=()), max_size=12) | st.sampled_from(
    ["\u00e9t\u00e9", "\U0001f600", "\ufb01", "\ue000", "\x00\x1f\x7f", '"\\', "\ud800"]
)
edge_numbers = (
    st.floats()
    | st.sampled_from(EDGE_FLOATS)
    | st.integers()
    | st.sampled_from([MAX_SAFE_INT, -MAX_SAFE_INT, MAX_SAFE_INT + 1, 2**64])
)
event_scalars = st.none() | st.booleans() | edge_numbers | any_text
event_json = st.recursive(
    event_scalars,
    lambda c: st.lists(c, max_size=4) | st.dictionaries(any_text, c, max_size=4),
    max_leaves=16,
)
optional_text = st.none() | any_text


_NO_FLOATS = st.nothing()


@st.composite
def decisions(draw, decision_ids=any_text, odd_floats=_NO_FLOATS):
    """Decisions as the pipeline makes them, with any text; ``odd_floats`` for the numbers the
    recorder's vouched events must refuse to vouch for."""
    from authz.check.models import Check, Decision, Outcome

    return Decision(
        decision_id=draw(decision_ids),
        outcome=draw(st.sampled_from(list(Outcome))),
        check=draw(st.none() | st.sampled_from(list(Check))),
        reason=draw(any_text),
        data=draw(st.dictionaries(any_text, event_scalars, max_size=5)),
        tenant=draw(optional_text),
        agent=draw(optional_text),
        token_id=draw(optional_text),
        jti=draw(optional_text),
        tool=draw(optional_text),
        rpc_method=draw(optional_text),
        arguments_sha256=draw(optional_text),
        argument_keys=tuple(draw(st.lists(any_text, max_size=4))),
        prompt_sha256=draw(optional_text),
        policy_version=draw(st.none() | st.integers(0, 2**60) | odd_floats),
        policy_hash=draw(optional_text),
        approval_id=draw(optional_text),
        latency_us=draw(st.integers(0, 2**40) | odd_floats),
        trace_id=draw(optional_text),
        intent_terms=tuple(draw(st.lists(any_text, max_size=3))),
        intent_determined=draw(st.none() | st.booleans()),
        memory_writers=tuple(draw(st.lists(any_text, max_size=2))),
        server=draw(optional_text),
    )


@st.composite
def audit_events(draw):
    from authz.audit import admin_event, event_from_decision

    time_ms = draw(st.integers(0, 2**41))
    if draw(st.booleans()):
        return admin_event(
            draw(any_text),
            draw(any_text),
            draw(any_text),
            draw(any_text),
            draw(st.dictionaries(any_text, event_json, max_size=4)),
            time_ms=time_ms,
        )
    decision = draw(decisions())
    return event_from_decision(decision, time_ms=time_ms)


def _same_as_reference(value) -> None:
    # rfc8785 refuses with CanonicalizationError, or UnicodeEncodeError for a lone surrogate in a key.
    refusals = (rfc8785.CanonicalizationError, UnicodeEncodeError)
    try:
        expected = rfc8785.dumps(value)
    except refusals as refused:
        try:
            canonical_json(value)
        except refusals as exc:
            assert type(exc) is type(refused)
            return
        raise AssertionError("canonical_json encoded what RFC 8785 refuses") from None
    assert canonical_json(value) == expected


@PROPS
@given(audit_events())
def test_audit_events_encode_byte_identical_to_rfc8785(event):
    _same_as_reference(event)


@PROPS
@given(
    decisions(
        decision_ids=st.text(st.characters(blacklist_categories=("Cs",)), max_size=12),
        odd_floats=st.floats(0, 1e9),
    ),
    st.integers(0, 2**41),
)
def test_the_recorders_vouched_events_encode_byte_identical_to_rfc8785(decision, time_ms):
    from authz.audit._events import vouched_event_from_decision
    from authz.canonical import PlainJSON

    event = vouched_event_from_decision(decision, time_ms=time_ms)
    # What json_safe keeps as a float (non-finite ones become null), or a key that is not ASCII.
    numbers = [decision.latency_us, decision.policy_version, *decision.data.values()]
    floats = any(isinstance(v, float) and math.isfinite(v) for v in numbers)
    vouchable = not floats and "".join(map(str, decision.data)).isascii()
    assert (type(event) is PlainJSON) == vouchable, event
    _same_as_reference(event)


@PROPS
@given(event_json)
def test_edge_values_encode_byte_identical_to_rfc8785(value):
    _same_as_reference(value)
    _same_as_reference({"value": value, "list": [value], "\U0001f600": value, "\ue000": 1})


def test_number_forms_at_the_notation_boundaries():
    for value in EDGE_FLOATS + [-x for x in EDGE_FLOATS] + [0.1, 1 / 3, 123.456, 2.0**53, 1e22]:
        assert canonical_json([value]) == rfc8785.dumps([value]), value
