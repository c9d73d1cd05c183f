"""Engine parity: every shipped policy decides the same under ``regopy`` (rego-cpp) and ``regorus``
(``TESSERA_POLICY_ENGINE``), on fixed and hypothesis-generated inputs; bad policies are refused by both;
every regorus failure is a deny. Both engines are the real libraries, run in process.
"""

from __future__ import annotations

import math
import re
from pathlib import Path

import pytest
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st

from authz.config import load
from authz.errors import ConfigError, InvalidArgument, PolicyCompileError
from authz.policy import POLICY_ENGINES, compile_policy
from tests.unit.test_policy_parity import INPUTS, policy_input

ROOT = Path(__file__).resolve().parents[2]
#: Every policy the project ships (the demo tenants file points at these).
SHIPPED = {str(p.relative_to(ROOT)): p.read_text() for p in sorted((ROOT / "authz").rglob("*.rego"))}

_SPRINTF = re.compile(r'sprintf\(\s*"((?:[^"\\]|\\.)*)"')
_VERB = re.compile(r"%[-+# 0-9.]*[a-zA-Z]")


def _format_values(fmt: str, text: str, *, regorus: bool) -> list[str] | None:
    """The values interpolated into ``text`` if it was rendered from sprintf format ``fmt`` (with the
    regorus rendering: the one space after each verb dropped), else None."""
    literals = _VERB.split(fmt.replace("%%", "\x00"))
    if len(literals) < 2:
        return None
    parts = [p.replace("\x00", "%") for p in literals]
    if regorus:
        parts = [parts[0]] + [p[1:] if p.startswith(" ") else p for p in parts[1:]]
    match = re.fullmatch("(.*?)".join(re.escape(p) for p in parts), text, re.DOTALL)
    return list(match.groups()) if match else None


def _same_value(a: str, b: str) -> bool:
    if a == b:
        return True
    # The engines format floats differently: regopy with 16 significant digits (148714.6637884043),
    # regorus the shortest exact form (148714.66378840432), tiny ones in full (0.000...81 vs 8.1e-38).
    try:
        return math.isclose(float(a), float(b), rel_tol=1e-15)
    except ValueError:
        return False


def same_reason(regopy: str, regorus: str, source: str) -> bool:
    """The reasons are equal, or differ only in how the engines write a float: both come from one of the
    source's sprintf formats, rendered alike (regorus' dropped space after ``%v``/``%s`` is undone by
    authz.policy._regorus.keep_spaces_after_verbs), and the interpolated values are equal as numbers."""
    if regopy == regorus:
        return True
    for fmt in _SPRINTF.findall(source):
        a = _format_values(fmt, regopy, regorus=False)
        b = _format_values(fmt, regorus, regorus=False)
        if a is not None and b is not None and all(map(_same_value, a, b)):
            return True
    return False


def assert_same(source: str, a, b, doc) -> None:
    assert (a.outcome, a.quorum, a.requires_step_up, a.error) == (
        b.outcome,
        b.quorum,
        b.requires_step_up,
        b.error,
    ), doc
    assert same_reason(a.reason, b.reason, source), (a.reason, b.reason, doc)


def test_the_reason_comparison_is_exact() -> None:
    src = 'x := sprintf("transfer of %v exceeds the %v threshold", [a, b])'
    regopy = "transfer of 50000 exceeds the 10000 threshold"
    assert same_reason(regopy, regopy, src)
    # regorus' own rendering (space after the verb dropped) no longer passes as the same reason.
    assert not same_reason(regopy, "transfer of 50000exceeds the 10000threshold", src)
    assert same_reason(
        "transfer of 8.1e-38 exceeds the 1 threshold",
        "transfer of 0.000000000000000000000000000000000000081 exceeds the 1 threshold",
        src,
    )
    assert not same_reason(regopy, "transfer of 50000 exceeds the 10000 threshold!", src)
    assert not same_reason(regopy, "transfer of 50001 exceeds the 10000 threshold", src)
    assert same_reason(
        "transfer of 148714.6637884043 exceeds the 1 threshold",
        "transfer of 148714.66378840432 exceeds the 1 threshold",
        src,
    )
    assert not same_reason(
        "transfer of 148714.6637884 exceeds the 1 threshold",
        "transfer of 148714.66378840432 exceeds the 1 threshold",
        src,
    )
    assert not same_reason(regopy, "transfer of 50000 exceeds the 10000threshold", "no format here")


@pytest.fixture(scope="module")
def engines() -> dict[str, dict]:
    return {name: {e: compile_policy(src, engine=e) for e in POLICY_ENGINES} for name, src in SHIPPED.items()}


def test_shipped_policies_are_found() -> None:
    assert "authz/policy/examples/demo.rego" in SHIPPED


@pytest.mark.parametrize("name", sorted(SHIPPED))
def test_shipped_policies_decide_the_same_on_fixed_inputs(engines, name) -> None:
    regopy, regorus = engines[name]["regopy"], engines[name]["regorus"]
    assert (regopy.engine, regorus.engine) == ("regopy", "regorus")
    outcomes, formatted = set(), 0
    for doc in INPUTS:
        a, b = regopy.evaluate(doc), regorus.evaluate(doc)
        assert_same(SHIPPED[name], a, b, doc)
        formatted += a.reason == b.reason and "transfer of" in a.reason
        outcomes.add(a.outcome)
    if name.endswith("demo.rego"):
        assert outcomes == {"allow", "deny", "escalate"}
        assert formatted > 0  # reasons built by sprintf("... %v ...") are really exercised, and equal


# Subnormal floats are left out: regopy cannot read them (see the test below), regorus can.
_json_scalar = (
    st.none()
    | st.booleans()
    | st.integers(min_value=-(2**63), max_value=2**63 - 1)
    | st.floats(allow_nan=False, allow_infinity=False, allow_subnormal=False)
    | st.text(max_size=12)
)
_amount = (
    st.integers(min_value=-(10**7), max_value=10**7)
    | st.floats(min_value=-1e7, max_value=1e7, allow_nan=False, allow_subnormal=False)
    | st.sampled_from([0, 1, 10000, 10000.0, 10001, 100000, 100001, "100", None, True])
    | _json_scalar
)
_iban = st.sampled_from(["DE89370400440532013000", "GB82WEST12345698765432"]) | st.text(max_size=8)


@st.composite
def demo_inputs(draw) -> dict:
    tool = draw(
        st.sampled_from(["read_invoice", "list_invoices", "delete_invoice", "transfer_funds"])
        | st.text(max_size=10)
    )
    arguments = draw(st.dictionaries(st.text(max_size=6), _json_scalar, max_size=3))
    if draw(st.booleans()):
        arguments["amount"] = draw(_amount)
    if draw(st.booleans()):
        arguments["iban"] = draw(_iban)
    approval = draw(
        st.none()
        | st.builds(
            lambda s: {"id": "a1", "status": s},
            st.sampled_from(["pending", "approved", "rejected", "expired"]) | st.text(max_size=5),
        )
    )
    doc = policy_input(tool, arguments, approval)
    doc["phase"] = draw(st.sampled_from(["call", "list"]))
    if draw(st.booleans()):
        entries = draw(
            st.lists(
                st.fixed_dictionaries(
                    {"verified": st.booleans(), "content": _iban.map(lambda s: f"pay {s}")}
                ),
                max_size=3,
            )
        )
        doc["provenance"] = {
            "presented": True,
            "verified": any(e["verified"] for e in entries),
            "entries": entries,
        }
    return doc


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(doc=demo_inputs())
@example(doc=policy_input("transfer_funds", {"amount": 8.13323738118193e-38}))
@example(doc=policy_input("transfer_funds", {"amount": 148714.66378840432}))
@example(
    doc=policy_input(
        "transfer_funds", {"amount": 123456789.5, "iban": "DE"}, {"id": "a", "status": "approved"}
    )
)
def test_shipped_policies_decide_the_same_on_generated_inputs(engines, doc) -> None:
    for name, source in SHIPPED.items():
        assert_same(
            source, engines[name]["regopy"].evaluate(doc), engines[name]["regorus"].evaluate(doc), doc
        )


def test_a_subnormal_number_is_the_one_known_decision_difference() -> None:
    # rego-cpp's number parser refuses subnormal floats, so regopy fails closed (deny, error) where
    # regorus decides as OPA would; found by the generated inputs above. Both are safe.
    source = SHIPPED["authz/policy/examples/demo.rego"]
    doc = policy_input("transfer_funds", {"amount": 2.2250738585e-313})
    regopy, regorus = (compile_policy(source, engine=e).evaluate(doc) for e in POLICY_ENGINES)
    assert regopy.outcome == "deny" and regopy.error
    assert regorus.allowed and same_reason(
        "transfer of 2.2250738585e-313 is within the 10000 limit", regorus.reason, source
    )


BAD_POLICIES = {
    "syntax error": 'package tessera\n\nimport rego.v1\n\ndecision := {"allow": true} if {\n',
    "no package": 'import rego.v1\n\ndecision := {"allow": true}\n',
    "another package": 'package other\n\nimport rego.v1\n\ndecision := {"allow": true}\n',
    "no decision rule": "package tessera\n\nimport rego.v1\n\nallow := true\n",
    "unterminated string": 'package tessera\n\nimport rego.v1\n\ndecision := {"allow": true, "reason": "x}\n',
    "empty": "   \n",
    "NUL": 'package tessera\n\nimport rego.v1\n\ndecision := {"allow": true}\x00\n',
}


@pytest.mark.parametrize("engine", POLICY_ENGINES)
@pytest.mark.parametrize("case", sorted(BAD_POLICIES))
def test_bad_policies_are_refused_by_both_engines(engine, case) -> None:
    with pytest.raises(PolicyCompileError) as refused:
        compile_policy(BAD_POLICIES[case], engine=engine)
    assert refused.value.diagnostics
    assert "/tmp" not in str(refused.value)  # no engine temp path leaks into diagnostics


def test_a_syntax_error_points_at_its_line_under_regorus() -> None:
    with pytest.raises(PolicyCompileError) as refused:
        compile_policy(BAD_POLICIES["unterminated string"], engine="regorus")
    assert refused.value.diagnostics[0].line == 5


BROKEN_AT_EVALUATION = {
    "failing built-in": 'decision := {"allow": to_number(input.tool) > 0}',
    "conflicting values": (
        'decision := {"allow": true} if input.tool\ndecision := {"allow": false} if input.tool'
    ),
    "not an object": 'decision := "allow"',
    "unknown key": 'decision := {"allow": true, "allowed": true}',
    "undefined": 'decision := {"allow": true} if input.tool == "never"',
}


@pytest.mark.parametrize("case", sorted(BROKEN_AT_EVALUATION))
def test_a_policy_broken_at_evaluation_denies_with_error_under_both(case) -> None:
    source = f"package tessera\n\nimport rego.v1\n\n{BROKEN_AT_EVALUATION[case]}\n"
    doc = policy_input("read_invoice", {})
    results = [compile_policy(source, engine=e).evaluate(doc) for e in POLICY_ENGINES]
    for result in results:
        assert result.outcome == "deny" and result.error, result
    assert "/tmp" not in results[1].reason


def test_regorus_denies_an_integer_it_cannot_hold_exactly() -> None:
    source = SHIPPED["authz/policy/examples/demo.rego"]
    policy = compile_policy(source, engine="regorus")
    doc = policy_input("transfer_funds", {"amount": 2**64 + 5})
    result = policy.evaluate(doc)
    assert result.outcome == "deny" and result.error and "too large" in result.reason
    assert policy.evaluate(policy_input("transfer_funds", {"amount": 2**63 - 1})).escalated


@pytest.mark.parametrize(
    ("value", "reason"),
    [
        ({1, 2}, "not JSON-compatible"),
        (float("nan"), "non-finite"),
        (float("-inf"), "non-finite"),
        (b"bytes", "not JSON-compatible"),
        ("unpaired \ud800 surrogate", "surrogate"),
    ],
)
def test_regorus_denies_unusable_input_with_a_clear_reason(value, reason) -> None:
    policy = compile_policy(SHIPPED["authz/policy/examples/demo.rego"], engine="regorus")
    result = policy.evaluate(policy_input("transfer_funds", {"amount": 5, "iban": value}))  # a read path
    assert result.outcome == "deny" and result.error and reason in result.reason, result


@pytest.mark.parametrize("engine", ["regopy", "regorus"])
def test_values_off_the_paths_a_policy_reads_never_reach_the_engine(engine) -> None:
    # The demo policy reads arguments.amount and .iban: an argument beside them, even one the engine
    # could not take, is not passed, and the call is decided on what the policy reads.
    policy = compile_policy(SHIPPED["authz/policy/examples/demo.rego"], engine=engine)
    for unread in ({1, 2}, float("nan"), b"bytes", 2**70, "unpaired \ud800 surrogate"):
        result = policy.evaluate(policy_input("transfer_funds", {"amount": 5, "x": unread}))
        assert (result.outcome, result.error) == ("allow", False), (unread, result)


def test_regorus_denies_input_nested_too_deep() -> None:
    policy = compile_policy(SHIPPED["authz/policy/examples/demo.rego"], engine="regorus")
    deep: object = 1
    for _ in range(100):
        deep = [deep]
    result = policy.evaluate(policy_input("transfer_funds", {"amount": deep}))
    assert result.outcome == "deny" and result.error


def test_the_memo_applies_under_regorus() -> None:
    policy = compile_policy(SHIPPED["authz/policy/examples/demo.rego"], engine="regorus")
    assert policy.memoized
    doc = policy_input("transfer_funds", {"amount": 50})
    first = policy.evaluate(doc)
    assert policy.evaluate(doc) is first and policy.memo_hits == 1


def test_the_engine_comes_from_tessera_policy_engine(tmp_path) -> None:
    base = {"TESSERA_MASTER_KEY": "k" * 32, "TESSERA_VAR_DIR": str(tmp_path)}
    assert load(base).check.policy_engine == "regopy"
    assert load({**base, "TESSERA_POLICY_ENGINE": "regorus"}).check.policy_engine == "regorus"
    with pytest.raises(ConfigError, match="TESSERA_POLICY_ENGINE"):
        load({**base, "TESSERA_POLICY_ENGINE": "opa"})
    with pytest.raises(InvalidArgument):
        compile_policy(SHIPPED["authz/policy/examples/demo.rego"], engine="opa")


async def test_admin_validation_compiles_on_the_configured_engine(tmp_path) -> None:
    from authz.api.admin.v1 import policy_service_pb2 as policy_pb
    from authz.server.admin.app import build_admin_runtime
    from authz.server.admin.policies import PolicyService

    no_v1 = 'package tessera\n\ndecision := {"allow": true} if input.tool == "read_invoice"\n'
    env = {
        "TESSERA_MASTER_KEY": "k" * 32,
        "TESSERA_VAR_DIR": str(tmp_path),
        "TESSERA_DATABASE_URL": f"sqlite:///{tmp_path / 'admin.db'}",
    }
    # A v1 policy without `import rego.v1` is valid on both (regorus gets the import added).
    for engine, valid in (("regopy", True), ("regorus", True)):
        runtime = await build_admin_runtime(load({**env, "TESSERA_POLICY_ENGINE": engine}))
        try:
            assert runtime.policy_engine == engine
            answer = await PolicyService(runtime).ValidatePolicy(
                policy_pb.ValidatePolicyRequest(tenant="demo", source=no_v1), None
            )
        finally:
            await runtime.store.close()
        assert answer.valid is valid, (engine, answer)


SPRINTF_POLICY = """package tessera

import rego.v1

decision := {"allow": false, "reason": concat("|", [
    sprintf("tool %s denied", [input.tool]),
    sprintf("%v is %v  two %s\\tx %s", ["x", 5, "y", "z"]),
    sprintf("%v%%  ok %s", [5, "z"]),
    sprintf(`%s raw %v`, ["r", 1.5]),
    sprintf("%s %s %s", ["a", "b", "c"]),
])}
"""


def test_sprintf_with_s_and_v_renders_the_same_on_both_engines() -> None:
    doc = {"tool": 'x" %s y'}
    regopy, regorus = (compile_policy(SPRINTF_POLICY, engine=e).evaluate(doc) for e in POLICY_ENGINES)
    assert regopy.reason == 'tool x" %s y denied|x is 5  two y\tx z|5%  ok z|r raw 1.5|a b c'
    assert regorus.reason == regopy.reason


def test_numeric_verbs_before_a_space_still_render_differently_on_regorus() -> None:
    # The known residual difference (authz/policy/_regorus.py): regorus reads the space after %d as
    # its space flag (" 5two"; reasons are stripped). Pinned so a fixed opa-eval shows up here.
    rule = 'decision := {"allow": false, "reason": sprintf("%d two", [5])}'
    source = f"package tessera\n\nimport rego.v1\n\n{rule}\n"
    regopy, regorus = (compile_policy(source, engine=e).evaluate({}) for e in POLICY_ENGINES)
    assert regopy.reason == "5 two"
    assert regorus.reason == "5two"


def test_a_v1_policy_without_the_import_decides_the_same_on_both_engines() -> None:
    # Without the import regorus would read Rego v0 ("if", "in", "contains" as plain names).
    source = (
        "# header comment\npackage tessera # trailing comment\n\n"
        'default decision := {"allow": false, "reason": "no"}\n'
        'decision := {"allow": true, "reason": "listed"} if input.tool in {"a", "b"}\n'
        "names contains n if some n in [1, 2]\n"
    )
    for doc in ({"tool": "a"}, {"tool": "z"}):
        regopy, regorus = (compile_policy(source, engine=e).evaluate(doc) for e in POLICY_ENGINES)
        assert regopy == regorus, doc
    # Line numbers still point at the author's lines: the import goes on the package line.
    broken = 'package tessera\n\ndecision := {"allow": true} if {\n'
    lines = {e: _first_line(broken, e) for e in POLICY_ENGINES}
    assert lines["regorus"] >= 3, lines


def _first_line(source: str, engine: str) -> int:
    with pytest.raises(PolicyCompileError) as caught:
        compile_policy(source, engine=engine)
    return caught.value.diagnostics[0].line
