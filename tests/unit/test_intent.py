"""authz.intent: the Intent value, settings and the judging rule of the intent stage."""

from __future__ import annotations

import dataclasses

import pytest

from authz.errors import InvalidArgument
from authz.intent import (
    INTENT_MODES,
    UNDETERMINED_REASON,
    CatalogExtractor,
    HttpExtractor,
    Intent,
    IntentExtractor,
    IntentSettings,
    IntentVerdict,
    judge_intent,
)


def intent(allowed=(), forbidden=(), confidence=0.9) -> Intent:
    return Intent(frozenset(allowed), frozenset(forbidden), confidence, "test", "catalog", "summary")


# --- Intent --------------------------------------------------------------------------------------------


def test_intent_to_policy_input_is_sorted_and_complete():
    value = Intent(frozenset({"b", "a"}), frozenset({"z", "c"}), 0.5, "why", "http", "what")
    assert value.to_policy_input() == {
        "allowed_tools": ["a", "b"],
        "forbidden_tools": ["c", "z"],
        "confidence": 0.5,
        "rationale": "why",
        "source": "http",
        "summary": "what",
        "determined": True,
        "terms": [],
    }


def test_forbidden_is_removed_from_allowed():
    value = intent(allowed={"read", "delete"}, forbidden={"delete"})
    assert value.allowed_tools == frozenset({"read"})
    assert value.forbidden_tools == frozenset({"delete"})


def test_intent_is_frozen_and_hashable():
    value = intent(allowed={"a"})
    with pytest.raises(AttributeError):
        value.confidence = 1.0  # type: ignore[misc]
    assert hash(value) == hash(intent(allowed={"a"}))
    assert Intent(["a"], [], 1, "", "catalog").allowed_tools == frozenset({"a"})  # type: ignore[arg-type]


@pytest.mark.parametrize(
    "kwargs",
    [
        {"confidence": 1.5},
        {"confidence": -0.1},
        {"confidence": float("nan")},
        {"confidence": True},
        {"confidence": "high"},
        {"source": "llm"},
        {"allowed_tools": "read_invoice"},
        {"allowed_tools": frozenset({""})},
        {"forbidden_tools": frozenset({3})},
        {"rationale": None},
    ],
)
def test_intent_validation(kwargs):
    base = {
        "allowed_tools": frozenset(),
        "forbidden_tools": frozenset(),
        "confidence": 0.5,
        "rationale": "",
        "source": "catalog",
    }
    with pytest.raises(InvalidArgument):
        Intent(**{**base, **kwargs})


def test_empty_intent():
    value = Intent.empty("catalog", "nothing")
    assert (value.allowed_tools, value.forbidden_tools, value.confidence) == (frozenset(), frozenset(), 0.0)


def test_extractors_satisfy_the_protocol():
    assert isinstance(CatalogExtractor({}), IntentExtractor)
    assert isinstance(HttpExtractor("http://127.0.0.1:1", timeout=1), IntentExtractor)


# --- settings ------------------------------------------------------------------------------------------


def test_settings_defaults_and_validation():
    assert IntentSettings() == IntentSettings("off", False)
    assert not IntentSettings().extracts and IntentSettings("advisory").extracts
    for mode in INTENT_MODES:
        IntentSettings(mode, True)
    with pytest.raises(InvalidArgument, match="mode"):
        IntentSettings("strict")
    with pytest.raises(InvalidArgument, match="require_prompt"):
        IntentSettings("enforce", "yes")  # type: ignore[arg-type]


def test_settings_judge_delegates():
    settings = IntentSettings("enforce", require_prompt=True)
    assert settings.judge(prompt=None, intent=None, tool="x") == IntentVerdict(
        False, "intent prompt required but missing"
    )


# --- judge_intent: the whole table ---------------------------------------------------------------------

READ_ONLY = intent(allowed={"read_invoice", "list_invoices"}, forbidden={"delete_invoice"})
NOTHING = intent()  # nothing recognized: undetermined
UNDERSTOOD_NONE = Intent(frozenset(), frozenset(), 0.6, "test", "http", "", determined=True)

# (mode, require_prompt, prompt, intent, tool, allowed, reason fragment)
TABLE = [
    # off: always allowed, whatever else is given
    ("off", False, None, None, "delete_invoice", True, "off"),
    ("off", True, None, None, "delete_invoice", True, "off"),
    ("off", True, "delete it", READ_ONLY, "delete_invoice", True, "off"),
    # advisory: always allowed, the intent only feeds the policy
    ("advisory", False, None, None, "delete_invoice", True, "advisory"),
    ("advisory", True, None, None, "delete_invoice", True, "advisory"),
    ("advisory", True, "read", READ_ONLY, "delete_invoice", True, "advisory"),
    ("advisory", False, "read", NOTHING, "transfer_funds", True, "advisory"),
    # enforce, no prompt
    ("enforce", True, None, None, "read_invoice", False, "intent prompt required but missing"),
    ("enforce", True, "   ", None, "read_invoice", False, "intent prompt required but missing"),
    ("enforce", False, None, None, "read_invoice", True, "no intent prompt"),
    ("enforce", False, "", None, "delete_invoice", True, "no intent prompt"),
    # enforce, prompt but no intent: never fail open
    ("enforce", False, "read invoice 4", None, "read_invoice", False, "no intent was extracted"),
    # enforce: forbidden wins
    ("enforce", False, "p", READ_ONLY, "delete_invoice", False, "forbidden by the intent"),
    ("enforce", True, "p", READ_ONLY, "delete_invoice", False, "forbidden by the intent"),
    # enforce: a non-empty allow list must contain the tool
    ("enforce", False, "p", READ_ONLY, "read_invoice", True, "matches the intent"),
    ("enforce", True, "p", READ_ONLY, "list_invoices", True, "matches the intent"),
    (
        "enforce",
        False,
        "p",
        READ_ONLY,
        "transfer_funds",
        False,
        "tool 'transfer_funds' is absent from the intent extracted from the prompt "
        "(allowed: list_invoices, read_invoice)",
    ),
    # enforce: an empty allow list denies too (the prompt asked for nothing this tool does)
    (
        "enforce",
        False,
        "p",
        UNDERSTOOD_NONE,
        "read_invoice",
        False,
        "absent from the intent extracted from the prompt (allowed: none)",
    ),
    ("enforce", False, "p", intent(forbidden={"x"}), "read_invoice", False, "absent from the intent"),
    # enforce: nothing understood has its own reason (the default `undetermined: deny`)
    ("enforce", False, "p", NOTHING, "read_invoice", False, "intent undetermined: nothing in the prompt"),
]


@pytest.mark.parametrize(("mode", "require_prompt", "prompt", "value", "tool", "allowed", "reason"), TABLE)
def test_judge_intent_table(mode, require_prompt, prompt, value, tool, allowed, reason):
    verdict = judge_intent(mode=mode, require_prompt=require_prompt, prompt=prompt, intent=value, tool=tool)
    assert verdict.allowed is allowed
    assert reason in verdict.reason


def test_judge_forbidden_reason_is_exact():
    verdict = judge_intent(
        mode="enforce", require_prompt=False, prompt="p", intent=READ_ONLY, tool="delete_invoice"
    )
    assert verdict == IntentVerdict(
        False, "tool 'delete_invoice' is forbidden by the intent extracted from the prompt", "forbidden"
    )


def test_undetermined_denies_with_its_own_reason_or_leaves_it_to_the_policy():
    denied = judge_intent(mode="enforce", require_prompt=False, prompt="p", intent=NOTHING, tool="t")
    assert denied == IntentVerdict(False, UNDETERMINED_REASON, "undetermined")
    absent = judge_intent(mode="enforce", require_prompt=False, prompt="p", intent=UNDERSTOOD_NONE, tool="t")
    assert absent.intent == "absent" and absent.reason != UNDETERMINED_REASON
    to_policy = judge_intent(
        mode="enforce", require_prompt=False, prompt="p", intent=NOTHING, tool="t", undetermined="policy"
    )
    assert to_policy.allowed and to_policy.intent is None
    # "policy" only concerns prompts nothing of which was understood
    forbidden = judge_intent(
        mode="enforce",
        require_prompt=False,
        prompt="p",
        intent=READ_ONLY,
        tool="delete_invoice",
        undetermined="policy",
    )
    assert not forbidden.allowed and forbidden.intent == "forbidden"
    assert NOTHING.to_policy_input()["determined"] is False
    settings = IntentSettings(mode="enforce", undetermined="policy")
    assert settings.judge(prompt="p", intent=NOTHING, tool="t").allowed
    with pytest.raises(InvalidArgument):
        IntentSettings(mode="enforce", undetermined="allow")


def test_judge_unknown_mode_raises():
    with pytest.raises(InvalidArgument):
        judge_intent(mode="strict", require_prompt=False, prompt=None, intent=None, tool="x")


def test_verdict_is_a_frozen_value():
    verdict = IntentVerdict(True, "ok")
    with pytest.raises(AttributeError):
        verdict.allowed = False  # type: ignore[misc]


def test_an_intent_from_the_extractor_is_a_frozen_intent_like_any_other():
    """Intent.trusted (the extractor's fast constructor) gives the same value as the validating one: an
    Intent, equal, hashable and as frozen."""
    values = (
        frozenset({"read_invoice"}),
        frozenset({"pay_invoice"}),
        0.75,
        "why",
        "catalog",
        "summary",
        True,
        ("t",),
    )
    fast, checked = Intent.trusted(*values), Intent(*values)
    assert type(fast) is Intent and fast == checked and hash(fast) == hash(checked)
    assert fast.to_policy_input() == checked.to_policy_input()
    with pytest.raises(dataclasses.FrozenInstanceError):
        fast.confidence = 1.0  # type: ignore[misc]

    class Named(Intent):
        __slots__ = ()

    assert type(Named.trusted(*values)) is Named and Named.trusted(*values).summary == "summary"
