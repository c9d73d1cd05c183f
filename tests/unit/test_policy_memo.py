"""Policy decision memoization: only for policies that decide from their input alone, keyed by the
canonical values at the input paths the policy reads, bounded, never remembering errors, cleared on
activation."""

from __future__ import annotations

import os

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import authz.policy._compiled as compiled_module
from authz.policy import PolicySet, compile_policy, default_policy_source
from authz.policy._engine import reads_no_clock_or_outside, referenced_input_paths
from tests.unit.test_policy_engines import SHIPPED, demo_inputs
from tests.unit.test_policy_parity import INPUTS, policy_input

HEADER = "package tessera\n\nimport rego.v1\n\n"


def fresh(source: str):
    """A policy whose memo is switched off: every evaluation goes to the engine."""
    policy = compile_policy(source)
    policy._memo = None
    return policy


def test_the_shipped_policy_is_memoized_and_decides_as_the_engine_does():
    memoized, plain = compile_policy(default_policy_source()), fresh(default_policy_source())
    assert memoized.memoized and not plain.memoized
    expected = [plain.evaluate(inp) for inp in INPUTS]
    first = [memoized.evaluate(inp) for inp in INPUTS]
    assert memoized.memo_hits == 0  # every parity input differs in what the policy reads
    second = [memoized.evaluate(inp) for inp in INPUTS]
    assert memoized.memo_hits == len(INPUTS)
    assert first == expected and second == expected
    assert {r.outcome for r in expected} == {"allow", "deny", "escalate"}


def test_input_the_policy_cannot_read_is_not_in_the_key():
    policy = compile_policy(default_policy_source())
    a = policy_input("read_invoice", {"invoice_id": "INV-1"})
    b = policy_input("read_invoice", {"invoice_id": "INV-1"})
    b["time"] = {"now": "2030-01-01T00:00:00Z", "unix": 1893456000}
    b["token"] = {"id": "cd" * 32, "jti": "j2", "caveats": []}
    assert policy.evaluate(a) == policy.evaluate(b)
    assert policy.memo_hits == 1
    c = policy_input("read_invoice", {"invoice_id": "INV-2"})  # an argument the policy never reads
    assert policy.evaluate(c) == policy.evaluate(a)
    assert policy.memo_hits == 3
    d = policy_input("transfer_funds", {"amount": 50, "iban": "DE01"})
    e = policy_input("transfer_funds", {"amount": 50, "iban": "DE01", "memo": "rent"})  # unread
    f = policy_input("transfer_funds", {"amount": 50000, "iban": "DE01"})  # a read argument
    assert policy.evaluate(d).outcome == "allow" and policy.evaluate(e).outcome == "allow"
    assert policy.memo_hits == 4
    assert policy.evaluate(f).outcome == "escalate"
    assert policy.memo_hits == 4


NESTED = HEADER + (
    'decision := {"allow": true, "reason": sprintf("%v", [input.arguments.a.b])} if input.arguments.a.b\n'
    'default decision := {"allow": false, "reason": "no a.b"}\n'
)


#: Every shape on the way to input.arguments.a.b: absent, not an object, and values equal in Python.
SHAPES = [
    {},
    {"a": None},
    {"a": []},
    {"a": [1]},
    {"a": "b"},
    {"a": {}},
    {"a": {"b": None}},
    {"a": {"b": False}},
    {"a": {"b": 0}},
    {"a": {"b": 1}},
    {"a": {"b": 1.0}},
    {"a": {"b": True}},
    {"a": {"b": "1"}},
    {"a": {"b": [True]}},
    {"a": {"b": {"c": True}}},
    {"a": {"b": True, "c": 2}},
]


@pytest.mark.parametrize("arguments", SHAPES)
def test_a_key_on_the_read_paths_never_hands_one_input_anothers_decision(arguments):
    # Evaluated after every other shape: whatever the memo remembered for them, this input's decision
    # is the engine's own.
    policy, plain = compile_policy(NESTED), fresh(NESTED)
    assert policy._memo_paths == (("arguments", "a", "b"),)
    for other in SHAPES:
        policy.evaluate(policy_input("t", other))
    inp = policy_input("t", arguments)
    hits = policy.memo_hits
    assert policy.evaluate(inp) == plain.evaluate(inp)
    assert policy.memo_hits == hits + 1  # the answer compared above came from the memo


TYPED = HEADER + (
    'decision := {"allow": true, "reason": sprintf("%v %v", [type_name(input.arguments.x), '
    "input.arguments.x])}\n"
)


@pytest.mark.parametrize("order", [[1, 1.0, "1", True, [1], {"1": 1}], [True, "1", 1.0, 1, {"1": 1}, [1]]])
def test_values_equal_in_python_but_not_in_json_get_their_own_decisions(order):
    # 1 == 1.0 == True in Python; the memo key must still tell them apart (and "1" from 1).
    policy, plain = compile_policy(TYPED), fresh(TYPED)
    for value in order + order:
        inp = policy_input("t", {"x": value})
        assert policy.evaluate(inp) == plain.evaluate(inp)
    assert policy.memo_hits == len(order)


@pytest.mark.parametrize(
    "source",
    [
        HEADER + 'decision := {"allow": time.now_ns() > 0}\n',
        HEADER + 'decision := {"allow": input.time.unix > 0}\n',
        HEADER + 'decision := {"allow": input["time"].unix > 0}\n',
        HEADER + 'decision := {"allow": count(opa.runtime()) >= 0}\n',
        HEADER + 'decision := {"allow": rand.intn("x", 10) >= 0}\n',
        HEADER + 'decision := {"allow": count(uuid.rfc4122("x")) > 0}\n',
        HEADER + 'decision := {"allow": r.status_code == 200} if { r := http.send({"method": "get", '
        '"url": input.arguments.url}) }\ndefault decision := {"allow": false}\n',
        HEADER + 'decision := {"allow": object.get(input, "tool", "") == "t"}\n',  # the whole input
    ],
)
def test_a_policy_reading_the_clock_or_outside_data_is_never_memoized(source):
    assert not reads_no_clock_or_outside(source)
    policy = compile_policy(source)
    assert not policy.memoized
    inp = policy_input("t", {"url": "http://127.0.0.1:9/"})
    policy.evaluate(inp)
    policy.evaluate(inp)
    assert policy.memo_hits == 0


def test_the_clock_in_a_comment_is_enough_to_turn_memoization_off():
    assert not reads_no_clock_or_outside(HEADER + '# compare with time.now_ns\ndecision := {"allow": true}\n')
    assert reads_no_clock_or_outside(HEADER + 'decision := {"allow": input.tool == "t"}\n')


def test_errors_are_never_remembered():
    source = HEADER + (
        'decision := {"allow": true} if input.tool == "t"\n'
        'decision := {"allow": false} if input.tool == "t"\n'
    )
    policy = compile_policy(source)
    assert policy.memoized
    inp = policy_input("t", {})
    first, second = policy.evaluate(inp), policy.evaluate(inp)
    assert first.error and second.error and first.outcome == "deny"
    assert policy.memo_hits == 0


def test_the_memo_is_bounded(monkeypatch):
    monkeypatch.setattr(compiled_module, "MEMO_ENTRIES", 8)
    monkeypatch.setattr(compiled_module, "MEMO_MAX_KEY_CHARS", 400)
    policy = compile_policy(default_policy_source())
    for i in range(50):
        policy.evaluate(policy_input("transfer_funds", {"amount": i + 1, "iban": "DE01"}))
    assert len(policy._memo) == 8
    policy.forget_decisions()
    big = policy_input("read_invoice", {"iban": "x" * 500})  # key longer than the bound
    assert policy.evaluate(big).allowed and policy.evaluate(big).allowed
    assert policy.memo_hits == 0 and not policy._memo


def test_activation_clears_what_the_policy_remembered():
    policy = compile_policy(default_policy_source())
    policy.evaluate(policy_input("read_invoice", {}))
    assert policy._memo
    PolicySet().activate("demo", policy)
    assert not policy._memo


def test_a_promoted_source_decides_with_its_own_memo():
    allow = HEADER + 'decision := {"allow": input.tool == "t"}\n'
    deny = HEADER + 'decision := {"allow": false, "reason": "v2 denies"}\n'
    policies = PolicySet()
    inp = policy_input("t", {})
    policies.activate("demo", compile_policy(allow, version=1))
    assert policies.get("demo").evaluate(inp).allowed
    assert policies.get("demo").evaluate(inp).allowed  # remembered
    policies.activate("demo", compile_policy(deny, version=2))
    assert policies.get("demo").evaluate(inp).reason == "v2 denies"


def test_unencodable_input_goes_to_the_engine_and_is_not_remembered():
    policy = compile_policy(TYPED)
    inp = policy_input("t", {"x": float("nan")})
    result = policy.evaluate(inp)
    assert result.error and result.outcome == "deny"
    assert not policy._memo


# A bounded run in `make test`; `make fuzz` sets TESSERA_PROPERTY_EXAMPLES much higher.
_MEMOIZED = {name: compile_policy(source) for name, source in SHIPPED.items()}
_PLAIN = {name: fresh(source) for name, source in SHIPPED.items()}


@settings(
    max_examples=int(os.environ.get("TESSERA_PROPERTY_EXAMPLES", "150")),
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow],
)
@given(docs=st.lists(demo_inputs(), min_size=1, max_size=6))
def test_the_shipped_policies_memoized_decide_generated_inputs_as_the_engine_does(docs):
    # One memo per shipped policy across all examples: each input meets what earlier ones left there.
    for name in SHIPPED:
        assert _MEMOIZED[name].memoized, name
        for doc in docs + docs:
            assert _MEMOIZED[name].evaluate(doc) == _PLAIN[name].evaluate(doc), (name, doc)


@pytest.mark.parametrize(
    ("source", "paths"),
    [
        ("x := input.a.b\ny := input.c", {("a", "b"), ("c",)}),
        ('x := input["a"].b["c d"]\ny := input.a[`raw`]', {("a", "b", "c d"), ("a", "raw")}),
        ("x := input.a.b\ny := input.a", {("a",)}),  # the whole a is read: it covers a.b
        ("x := input.a.b[k]", {("a", "b")}),  # a variable index reads all of b
        ("args := input.arguments\nx := args.amount", {("arguments",)}),
        ('x := object.get(input.arguments, "amount", 0)', {("arguments",)}),
        ("x := input.a .b", {("a",)}),  # past whitespace the chain is not followed
        ('x := input.a["b\\q"]', {("a",)}),  # a key it cannot read exactly stops the chain
        ("import input.arguments\nx := arguments.amount", {("arguments",)}),
        ("x := input", None),
        ("x := input[k].b", None),
        ("x := f with input as {}", None),
    ],
)
def test_the_paths_a_policy_reads_are_found_conservatively(source, paths):
    assert referenced_input_paths(source) == (None if paths is None else frozenset(paths))
