"""authz.policy: compiling, strict decision reading, the demo policy and the active set."""

from __future__ import annotations

import hashlib
import threading
import time
from types import MappingProxyType

import pytest

from authz.errors import InvalidArgument, PolicyCompileError
from authz.policy import (
    MAX_POLICY_SOURCE_BYTES,
    CompiledPolicy,
    PolicyResult,
    PolicySet,
    compile_policy,
    default_policy_source,
)

# --- compiling ---------------------------------------------------------------------------------------

LINE_7_SYNTAX_ERROR = """package tessera

import rego.v1

default decision := {"allow": false}

decision := {"allow": true} if { input.tool == }
"""


def test_syntax_error_reports_line_and_column():
    with pytest.raises(PolicyCompileError) as caught:
        compile_policy(LINE_7_SYNTAX_ERROR)
    err = caught.value
    assert err.diagnostics, "a compile error carries diagnostics"
    first = err.diagnostics[0]
    assert first.line == 7
    # the dangling "==" starts at column 45 of line 7
    assert first.column == LINE_7_SYNTAX_ERROR.splitlines()[6].index("==") + 1
    assert first.message
    assert "7:45" in str(err)
    assert err.reason == "POLICY_COMPILE_ERROR"


def test_unclosed_brace_points_at_its_line():
    source = 'package tessera\n\n\n\n\n\ndecision := {"allow": true if {\n'
    with pytest.raises(PolicyCompileError) as caught:
        compile_policy(source)
    assert caught.value.diagnostics[0].line == 7
    assert "unclosed" in caught.value.diagnostics[0].message


def test_columns_count_characters_not_bytes():
    # three 3-byte characters before the error on line 3
    source = 'package tessera\n# ✓✓\ndecision := {"✓✓✓": true} if { input.x == }\n'
    with pytest.raises(PolicyCompileError) as caught:
        compile_policy(source)
    diag = caught.value.diagnostics[0]
    assert diag.line == 3
    assert diag.column == source.splitlines()[2].index("==") + 1


def test_errors_of_later_compiler_passes_have_locations():
    source = 'package tessera\n\ndecision := {"allow": true, "reason": concat("", [input.k[_]])}\n'
    with pytest.raises(PolicyCompileError) as caught:
        compile_policy(source)
    diag = caught.value.diagnostics[0]
    assert (diag.line, diag.column) == (3, source.splitlines()[2].index("_]") + 1)


def test_several_errors_are_all_reported():
    source = 'package tessera\n\ndecision := {"allow": true} if { input.tool === "x" }\n'
    with pytest.raises(PolicyCompileError) as caught:
        compile_policy(source)
    assert len(caught.value.diagnostics) >= 2
    assert all(d.line == 3 for d in caught.value.diagnostics)
    assert "more" in str(caught.value)


def test_wrong_package_is_a_compile_error_at_the_package_line():
    with pytest.raises(PolicyCompileError) as caught:
        compile_policy('# a comment\npackage authz\n\ndecision := {"allow": true}\n')
    diag = caught.value.diagnostics[0]
    assert (diag.line, diag.column) == (2, 9)
    assert "'tessera'" in diag.message


def test_missing_decision_rule_is_a_compile_error():
    with pytest.raises(PolicyCompileError, match="no 'decision' rule"):
        compile_policy("package tessera\n\nallow := true\n")


@pytest.mark.parametrize("source", ["", "   \n\t"])
def test_empty_source_is_a_compile_error(source):
    with pytest.raises(PolicyCompileError, match="empty"):
        compile_policy(source)


def test_bad_arguments():
    with pytest.raises(InvalidArgument):
        compile_policy(b"package tessera")  # type: ignore[arg-type]
    with pytest.raises(InvalidArgument):
        compile_policy(default_policy_source(), version=-1)
    with pytest.raises(InvalidArgument):
        compile_policy(default_policy_source(), version=True)  # type: ignore[arg-type]
    with pytest.raises(InvalidArgument, match="limit"):
        compile_policy("package tessera\n" + "#" * MAX_POLICY_SOURCE_BYTES)
    with pytest.raises(PolicyCompileError, match="NUL") as caught:
        compile_policy('package tessera\ndecision := {"allow": true}\n# \x00\n')
    assert caught.value.diagnostics[0].line == 3


def test_compiled_policy_metadata():
    source = default_policy_source()
    policy = compile_policy(source, version=7)
    assert policy.version == 7
    assert policy.source == source
    assert policy.content_hash == "sha256:" + hashlib.sha256(source.encode()).hexdigest()
    assert "version=7" in repr(policy)
    with pytest.raises(AttributeError):
        policy.version = 8  # type: ignore[misc]


# --- reading the decision strictly --------------------------------------------------------------------


def _policy(decision_rules: str) -> CompiledPolicy:
    return compile_policy(f"package tessera\n\nimport rego.v1\n\n{decision_rules}\n")


BAD_DECISIONS = [
    ("decision := true", "policy decision must be an object, got boolean"),
    ('decision := ["allow"]', "policy decision must be an object, got array"),
    ('decision := "allow"', "policy decision must be an object, got string"),
    ("decision := null", "policy decision must be an object, got null"),
    ("decision := {}", "missing the required key 'allow'"),
    ('decision := {"allow": "yes"}', "wrong type for 'allow': expected boolean, got string"),
    ('decision := {"allow": 1}', "wrong type for 'allow': expected boolean, got number"),
    ('decision := {"allow": true, "escalate": "no"}', "wrong type for 'escalate': expected boolean"),
    ('decision := {"allow": true, "reason": 5}', "wrong type for 'reason': expected string, got number"),
    (
        'decision := {"allow": true, "reason": {"a": 1}}',
        "wrong type for 'reason': expected string, got object",
    ),
    ('decision := {"allow": true, "requires_step_up": null}', "wrong type for 'requires_step_up'"),
    ('decision := {"allow": false, "escalate": true, "quorum": 0}', "invalid 'quorum': must be at least 1"),
    (
        'decision := {"allow": false, "escalate": true, "quorum": 1.5}',
        "invalid 'quorum': expected an integer",
    ),
    ('decision := {"allow": false, "escalate": true, "quorum": "2"}', "wrong type for 'quorum'"),
    ('decision := {"allow": true, "allowed": true}', "unknown key(s) 'allowed'"),
    ('decision := {"allow": true, "escalte": true, "zzz": 1}', "unknown key(s) 'escalte', 'zzz'"),
    # a multi-value rule is a set, which is not one decision
    ('decision contains {"allow": true}', "policy decision must be an object, got array"),
    # undefined: the only rule's body is false and there is no default
    ('decision := {"allow": true} if input.no_such_field', "policy returned no decision"),
    # evaluation errors
    (
        'decision := {"allow": true} if input.a\ndecision := {"allow": false} if input.b',
        "complete rules must not produce multiple outputs",
    ),
    (
        'default decision := {"allow": true}\ndecision := {"allow": false} if to_number(input.s) > 3',
        "invalid syntax",
    ),
    ('decision := {"allow": true, "quorum": 1 / input.zero}', "divide by zero"),
    ('decision := {"allow": no_such_function(1)}', "Function not found"),
    ('a := b\nb := a\ndecision := {"allow": a}', "Recursion detected"),
]


@pytest.mark.parametrize(("rules", "reason"), BAD_DECISIONS)
def test_every_bad_decision_denies_as_an_error(rules, reason):
    result = _policy(rules).evaluate({"a": True, "b": True, "s": "abc", "zero": 0})
    assert result.outcome == "deny"
    assert result.error is True
    assert reason in result.reason


def test_undefined_decision_reason_is_exact():
    result = _policy('decision := {"allow": true} if input.never').evaluate({})
    assert result == PolicyResult(
        "deny", "policy returned no decision (data.tessera.decision is undefined)", error=True
    )


GOOD_DECISIONS = [
    ('{"allow": true}', "allow", "allowed by policy"),
    ('{"allow": true, "escalate": false}', "allow", "allowed by policy"),
    ('{"allow": true, "escalate": true}', "escalate", "policy requires human approval"),
    ('{"allow": false, "escalate": true}', "escalate", "policy requires human approval"),
    ('{"allow": false}', "deny", "denied by policy"),
    ('{"allow": false, "escalate": false, "reason": "  "}', "deny", "denied by policy"),
    ('{"allow": false, "reason": "over budget"}', "deny", "over budget"),
]


@pytest.mark.parametrize(("decision", "outcome", "reason"), GOOD_DECISIONS)
def test_decision_outcomes(decision, outcome, reason):
    result = _policy(f"decision := {decision}").evaluate({})
    assert (result.outcome, result.reason, result.error) == (outcome, reason, False)


def test_optional_fields_pass_through():
    result = _policy(
        'decision := {"allow": false, "escalate": true, "quorum": 2.0, "requires_step_up": true, '
        '"reason": "big"}'
    ).evaluate({})
    assert result == PolicyResult("escalate", "big", requires_step_up=True, quorum=2)
    assert result.escalated and not result.allowed and not result.denied
    plain = _policy('decision := {"allow": true}').evaluate({})
    assert (plain.quorum, plain.requires_step_up) == (None, False)


def test_long_reasons_are_cut():
    result = _policy('decision := {"allow": false, "reason": concat("", [input.r, input.r])}').evaluate(
        {"r": "x" * 800}
    )
    assert len(result.reason) == 1000
    assert result.reason.endswith("…")


def test_policy_result_is_a_validated_frozen_value():
    with pytest.raises(ValueError):
        PolicyResult("maybe", "x")
    with pytest.raises(ValueError):
        PolicyResult("allow", "x", error=True)
    result = PolicyResult.deny("no", error=True)
    with pytest.raises(AttributeError):
        result.outcome = "allow"  # type: ignore[misc]
    assert hash(result) == hash(PolicyResult("deny", "no", error=True))


# --- the input reaches the policy exactly -------------------------------------------------------------


def test_strings_cannot_inject_into_the_decision():
    policy = _policy('decision := {"allow": false, "reason": sprintf("tool %s denied", [input.tool])}')
    tool = 'x", "allow": true, "escalate": true, "y": "'
    result = policy.evaluate({"tool": tool})
    assert result == PolicyResult("deny", f"tool {tool} denied")


def test_integers_beyond_int64_are_not_wrapped():
    policy = _policy(
        'default decision := {"allow": false}\ndecision := {"allow": true} if input.amount <= 10000'
    )
    assert policy.evaluate({"amount": 2**64 + 5}).outcome == "deny"
    assert policy.evaluate({"amount": -(2**70)}).outcome == "allow"
    assert policy.evaluate({"amount": 10000}).outcome == "allow"


def test_small_and_precise_floats_survive():
    policy = _policy('default decision := {"allow": false}\ndecision := {"allow": true} if input.x > 0')
    assert policy.evaluate({"x": 1e-7}).outcome == "allow"
    exact = _policy(
        'default decision := {"allow": false}\ndecision := {"allow": true} if input.x == 3.141592653589793'
    )
    assert exact.evaluate({"x": 3.141592653589793}).outcome == "allow"
    assert exact.evaluate({"x": 3.141593}).outcome == "deny"


STRINGS = [
    "plain",
    'quote " inside',
    "back\\slash",
    "new\nline and\ttab",
    "ctrl \x01\x1f and nul \x00",
    "unicode é ✓ 😀 \u2028",
    "{braces} [brackets] (parens) /slash/",
    "(error 5:fake)",
]


@pytest.mark.parametrize("text", STRINGS)
def test_both_input_paths_agree_on_strings(text):
    # A big integer in the input forces the exact JSON-term path; otherwise the fast native
    # builder runs. Both must deliver the same string to the policy.
    policy = _policy(
        "force := input.force\n"
        'decision := {"allow": input.s == input.copy[0], '
        '"reason": concat("|", [input.s, concat("", object.keys(input.k))])}'
    )
    fast = policy.evaluate({"s": text, "copy": [text], "k": {text: 1}})
    exact = policy.evaluate({"s": text, "copy": [text], "k": {text: 1}, "force": 2**70})
    assert fast == exact
    assert fast.outcome == "allow", fast.reason


def test_reason_round_trips_strings():
    policy = _policy('force := input.force\ndecision := {"allow": false, "reason": input.s}')
    for text in STRINGS:
        for extra in ({}, {"force": 2**70}):
            assert policy.evaluate({"s": text, **extra}).reason == text.strip()


@pytest.mark.parametrize(
    ("value", "reason"),
    [
        ({"x": {1, 2}}, "not JSON-compatible"),
        ({"x": float("nan")}, "non-finite"),
        ({"x": float("inf")}, "non-finite"),
        ({"x": object()}, "not JSON-compatible"),
        ({"x": b"bytes"}, "not JSON-compatible"),
        ({"x": "unpaired \ud800 surrogate"}, "surrogate"),
        ({"x": "unpaired \ud800 surrogate", "force": 2**70}, "surrogate"),
    ],
)
def test_unusable_input_denies_as_an_error(value, reason):
    result = _policy('decision := {"allow": true} if { input.x; input.force }').evaluate(value)
    assert result.outcome == "deny" and result.error
    assert reason in result.reason


def test_deeply_nested_input_denies():
    value: dict = {}
    for _ in range(200):
        value = {"n": value}
    result = _policy('decision := {"allow": true} if input.n').evaluate(value)
    assert result.error and "nested" in result.reason
    # the same through the JSON-term path
    result = _policy('decision := {"allow": true} if input.deep').evaluate({"force": 2**70, "deep": value})
    assert result.error and "nested" in result.reason
    # a key the policy never reads is not marshalled at all
    assert _policy('decision := {"allow": true}').evaluate({"junk": {1, 2}}).outcome == "allow"


def test_mappings_and_tuples_are_accepted():
    policy = _policy('decision := {"allow": input.m.k == "v", "reason": sprintf("%v", [count(input.t)])}')
    result = policy.evaluate(MappingProxyType({"m": MappingProxyType({"k": "v"}), "t": (1, 2, 3)}))
    assert (result.outcome, result.reason) == ("allow", "3")


@pytest.mark.parametrize(
    ("source", "keys"),
    [
        ("x := input.a.b\ny := input.c", {"a", "c"}),
        ('x := input["odd-key"]\ny := input[`raw`]', {"odd-key", "raw"}),
        ('x := input["a\\"q"].b', {'a"q'}),
        ("import input.tool\nx := tool", {"tool"}),
        ("x := data.input.z\ny := my_input", set()),
        ("x := input", None),
        ("x := input[k]", None),
        ('x := object.get(input, "a", 1)', None),
        ("x := f with input as {}", None),
        ("import input as i", None),
        ("# mentions the input in a comment\nx := input.a", None),
    ],
)
def test_referenced_input_keys_is_conservative(source, keys):
    from authz.policy._engine import referenced_input_keys

    result = referenced_input_keys(source)
    assert result == (None if keys is None else frozenset(keys))


def test_only_referenced_keys_reach_the_engine_and_whole_input_users_see_all():
    pruned = _policy('decision := {"allow": input.tool == "t", "reason": sprintf("%v", [input.secret])}')
    assert pruned.input_keys == frozenset({"tool", "secret"})
    value = {"tool": "t", "secret": 1, "big": list(range(1000))}
    assert pruned.evaluate(value) == PolicyResult("allow", "1")
    whole = _policy('decision := {"allow": count(input) == 3, "reason": sprintf("%v", [count(input.big)])}')
    assert whole.input_keys is None
    assert whole.evaluate(value) == PolicyResult("allow", "1000")
    assert compile_policy(default_policy_source()).input_keys == frozenset(
        {"phase", "tool", "arguments", "approval", "provenance"}
    )


def test_one_policy_evaluates_many_inputs_without_leaking_state():
    policy = _policy(
        'default decision := {"allow": false, "reason": "no flag"}\n'
        'decision := {"allow": true, "reason": input.name} if input.flag'
    )
    for i in range(300):
        if i % 2:
            assert policy.evaluate({"flag": True, "name": f"n{i}"}) == PolicyResult("allow", f"n{i}")
        else:
            assert policy.evaluate({"name": f"n{i}"}) == PolicyResult("deny", "no flag")


def test_concurrent_evaluation_from_threads_is_safe():
    policy = compile_policy(default_policy_source())
    errors: list[str] = []

    def worker(n: int) -> None:
        for i in range(150):
            amount = 5000 + (i * 97 + n) % 10000
            result = policy.evaluate({"tool": "transfer_funds", "arguments": {"amount": amount}})
            expected = "allow" if amount <= 10000 else "escalate"
            if result.outcome != expected:
                errors.append(f"{amount}: {result}")

    threads = [threading.Thread(target=worker, args=(n,)) for n in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert errors == []


# --- the demo policy ----------------------------------------------------------------------------------


def demo_input(tool: str, arguments: dict | None = None, approval: dict | None = None) -> dict:
    """A full policy input, shaped as the pipeline builds it."""
    return {
        "tenant": "demo",
        "agent": "invoice-bot",
        "token": {"id": "ab" * 32, "jti": "j-1", "caveats": ["tenant = demo", "agent = invoice-bot"]},
        "request": {"transport": "mcp", "method": "POST", "path": "/v1/mcp", "source_ip": "127.0.0.1"},
        "tool": tool,
        "arguments": arguments or {},
        "intent": {
            "allowed_tools": [tool],
            "forbidden_tools": [],
            "confidence": 0.85,
            "rationale": "test",
            "source": "catalog",
            "summary": "",
        },
        "provenance": {"presented": False, "verified": False, "entries": []},
        "approval": approval,
        "time": {"now": "2025-06-01T12:00:00Z", "unix": 1748779200},
    }


@pytest.fixture(scope="module")
def demo() -> CompiledPolicy:
    return compile_policy(default_policy_source(), version=1)


def test_demo_source_is_shipped():
    source = default_policy_source()
    assert "package tessera" in source
    assert "transfer_threshold := 10000" in source


@pytest.mark.parametrize("tool", ["read_invoice", "list_invoices"])
def test_demo_reads_are_allowed(demo, tool):
    result = demo.evaluate(demo_input(tool, {"invoice_id": "INV-1"}))
    assert result.outcome == "allow" and not result.error


def test_demo_transfer_at_threshold_is_allowed(demo):
    result = demo.evaluate(demo_input("transfer_funds", {"amount": 10000, "iban": "DE89"}))
    assert result.outcome == "allow"


def test_demo_transfer_above_threshold_escalates(demo):
    result = demo.evaluate(demo_input("transfer_funds", {"amount": 10001, "iban": "DE89"}))
    assert result.outcome == "escalate"
    assert "10001" in result.reason and "10000" in result.reason
    assert result.quorum == 1 and not result.error


def test_demo_large_transfer_needs_two_approvers(demo):
    result = demo.evaluate(demo_input("transfer_funds", {"amount": 250000}))
    assert (result.outcome, result.quorum) == ("escalate", 2)


def test_demo_approved_transfer_is_allowed(demo):
    approval = {"id": "apr_1", "status": "approved"}
    result = demo.evaluate(demo_input("transfer_funds", {"amount": 20000}, approval))
    assert result.outcome == "allow"
    assert "approved" in result.reason


@pytest.mark.parametrize("status", ["pending", "rejected", "expired"])
def test_demo_unapproved_transfer_still_escalates(demo, status):
    result = demo.evaluate(demo_input("transfer_funds", {"amount": 20000}, {"id": "apr_1", "status": status}))
    assert result.outcome == "escalate"


def test_demo_approval_does_not_override_a_deny(demo):
    approval = {"id": "apr_1", "status": "approved"}
    assert demo.evaluate(demo_input("delete_invoice", {"invoice_id": "INV-1"}, approval)).outcome == "deny"
    assert demo.evaluate(demo_input("transfer_funds", {"amount": -5}, approval)).outcome == "deny"


def test_demo_delete_is_denied_with_its_reason(demo):
    result = demo.evaluate(demo_input("delete_invoice", {"invoice_id": "INV-1"}))
    assert result.outcome == "deny" and not result.error
    assert result.reason == "delete_invoice is not permitted: invoices are retained for audit"


@pytest.mark.parametrize("tool", ["drop_database", "", "READ_INVOICE"])
def test_demo_unknown_tools_are_denied_by_default(demo, tool):
    result = demo.evaluate(demo_input(tool))
    assert result.outcome == "deny" and not result.error
    assert "default deny" in result.reason


@pytest.mark.parametrize(
    "arguments", [{}, {"amount": "20000"}, {"amount": None}, {"amount": 0}, {"amount": -1}]
)
def test_demo_transfer_needs_a_positive_number(demo, arguments):
    result = demo.evaluate(demo_input("transfer_funds", arguments))
    assert result.outcome == "deny" and not result.error


def test_demo_evaluation_cost(demo):
    """Report the per-call cost; the bound is loose (shared CI machines), the print is the measurement."""
    value = demo_input("transfer_funds", {"amount": 20000, "iban": "DE89370400440532013000", "memo": "Q2"})
    for _ in range(200):
        demo.evaluate(value)
    rounds = 2000
    start = time.perf_counter()
    for _ in range(rounds):
        demo.evaluate(value)
    per_call_us = (time.perf_counter() - start) / rounds * 1e6
    print(f"demo policy evaluation: {per_call_us:.0f} µs per call")
    assert per_call_us < 5000


# --- the active set -----------------------------------------------------------------------------------


def test_policy_set_swaps_atomically():
    first = compile_policy(default_policy_source(), version=1)
    second = compile_policy(default_policy_source(), version=2)
    policies = PolicySet()
    assert policies.get("demo") is None and len(policies) == 0
    assert policies.activate("demo", first) is None
    before = policies.snapshot()
    assert policies.activate("demo", second) is first
    assert policies.get("demo") is second
    assert before["demo"] is first, "an earlier snapshot is never mutated"
    with pytest.raises(TypeError):
        before["demo"] = second  # type: ignore[index]
    policies.activate("other", first)
    assert set(policies) == {"demo", "other"} and "other" in policies
    assert policies.deactivate("other") is first
    assert policies.deactivate("other") is None
    assert policies.get("other") is None
    with pytest.raises(InvalidArgument):
        policies.activate("demo", "not compiled")  # type: ignore[arg-type]


def test_policy_set_concurrent_writers_lose_nothing():
    compiled = compile_policy(default_policy_source())
    policies = PolicySet()

    def writer(prefix: str) -> None:
        for i in range(200):
            policies.activate(f"{prefix}{i}", compiled)

    threads = [threading.Thread(target=writer, args=(p,)) for p in "abcd"]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert len(policies) == 800


def test_policy_set_initial_mapping():
    compiled = compile_policy(default_policy_source())
    policies = PolicySet({"demo": compiled})
    assert policies.get("demo") is compiled
