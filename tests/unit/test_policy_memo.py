"""Policy decision memoization: only for policies that decide from their input alone, keyed by the
full canonical engine input, bounded, never remembering errors, cleared on activation."""

from __future__ import annotations

import pytest

import authz.policy._compiled as compiled_module
from authz.policy import PolicySet, compile_policy, default_policy_source
from authz.policy._engine import reads_no_clock_or_outside
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
    c = policy_input("read_invoice", {"invoice_id": "INV-2"})  # arguments are read: a new key
    policy.evaluate(c)
    assert policy.memo_hits == 1


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
        policy.evaluate(policy_input("read_invoice", {"invoice_id": f"INV-{i}"}))
    assert len(policy._memo) == 8
    policy.forget_decisions()
    big = policy_input("read_invoice", {"invoice_id": "x" * 500})  # key longer than the bound
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
