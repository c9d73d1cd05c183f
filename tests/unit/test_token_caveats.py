"""Caveat grammar (parse_caveat) and arg: caveat semantics."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta, timezone
from decimal import Decimal

import pytest

from authz.errors import InvalidArgument
from authz.token import (
    AgentCaveat,
    ArgCaveat,
    ExpiresCaveat,
    MaxCallsCaveat,
    MaxCostCaveat,
    NotBeforeCaveat,
    PromptCaveat,
    TenantCaveat,
    ToolsCaveat,
    format_time,
    parse_caveat,
)

HEX = "ab" * 32


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("tenant = acme", TenantCaveat("tenant = acme", "acme")),
        ("agent = spiffe://acme/bot", AgentCaveat("agent = spiffe://acme/bot", "spiffe://acme/bot")),
        ("tools = a,b,c", ToolsCaveat("tools = a,b,c", frozenset({"a", "b", "c"}))),
        ("tools = a, b", ToolsCaveat("tools = a, b", frozenset({"a", "b"}))),
        ("tools = ns.tool-1", ToolsCaveat("tools = ns.tool-1", frozenset({"ns.tool-1"}))),
        (
            "expires < 2026-01-01T00:00:00Z",
            ExpiresCaveat(
                "expires < 2026-01-01T00:00:00Z", datetime(2026, 1, 1, tzinfo=UTC), "2026-01-01T00:00:00Z"
            ),
        ),
        ("max_calls = 0", MaxCallsCaveat("max_calls = 0", 0)),
        ("max_calls = 9223372036854775807", MaxCallsCaveat("max_calls = 9223372036854775807", 2**63 - 1)),
        ("max_cost = 12.50", MaxCostCaveat("max_cost = 12.50", Decimal("12.50"))),
        ("max_cost = 7", MaxCostCaveat("max_cost = 7", Decimal(7))),
        (f"prompt_sha256 = {HEX.upper()}", PromptCaveat(f"prompt_sha256 = {HEX.upper()}", HEX)),
        ("arg:amount <= 1000", ArgCaveat("arg:amount <= 1000", "amount", ("amount",), "<=", 1000)),
        (
            "arg:payee.iban = DE89",
            ArgCaveat("arg:payee.iban = DE89", "payee.iban", ("payee", "iban"), "=", "DE89"),
        ),
        ('arg:memo = "a b"', ArgCaveat('arg:memo = "a b"', "memo", ("memo",), "=", "a b")),
        (
            "arg:memo = hello world",
            ArgCaveat("arg:memo = hello world", "memo", ("memo",), "=", "hello world"),
        ),
        ("arg:x = NaN", ArgCaveat("arg:x = NaN", "x", ("x",), "=", "NaN")),
        ("arg:c in EUR,USD", ArgCaveat("arg:c in EUR,USD", "c", ("c",), "in", ("EUR", "USD"))),
        ("arg:n in 1, 2", ArgCaveat("arg:n in 1, 2", "n", ("n",), "in", (1, 2))),
        ('arg:n in [1,"x"]', ArgCaveat('arg:n in [1,"x"]', "n", ("n",), "in", (1, "x"))),
        ('arg:n in "a,b"', ArgCaveat('arg:n in "a,b"', "n", ("n",), "in", ("a,b",))),
        ("arg:n in 7", ArgCaveat("arg:n in 7", "n", ("n",), "in", (7,))),
    ],
)
def test_parse_valid(text, expected):
    assert parse_caveat(text) == expected


def test_time_offsets_and_fractions():
    plus = parse_caveat("expires < 2026-01-01T02:00:00+02:00")
    assert plus.at == datetime(2026, 1, 1, tzinfo=UTC)
    minus = parse_caveat("not_before > 2026-01-01T00:00:00-05:30")
    assert isinstance(minus, NotBeforeCaveat)
    assert minus.at == datetime(2026, 1, 1, 5, 30, tzinfo=UTC)
    frac = parse_caveat("expires < 2026-01-01t00:00:00.123456789z")
    assert frac.at == datetime(2026, 1, 1, 0, 0, 0, 123456, tzinfo=UTC)
    assert frac.text == "2026-01-01t00:00:00.123456789z"


def test_format_time():
    assert format_time(datetime(2026, 1, 1, 1, tzinfo=timezone(timedelta(hours=1)))) == "2026-01-01T00:00:00Z"
    assert format_time(datetime(2026, 1, 1, 0, 0, 0, 5, tzinfo=UTC)) == "2026-01-01T00:00:00.000005Z"
    with pytest.raises(InvalidArgument):
        format_time(datetime(2026, 1, 1))


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("foo = 1", "unknown caveat 'foo = 1'"),
        ("tenant=acme", "unknown caveat"),
        ("tenant  = acme", "malformed caveat"),
        ("tenant = ", "malformed caveat"),
        ("tenant = acme ", "malformed caveat"),
        ("tenant = a|b", "invalid tenant id"),
        ("tenant != acme", "'tenant' takes the operator '='"),
        ("agent = a b", "invalid agent id"),
        ("tools = a,,b", "invalid tool name"),
        ("tools = a b", "invalid tool name"),
        ("tools", "expected 'tools = <value>'"),
        ("expires < 2026-01-01T00:00:00", "RFC3339"),
        ("expires < 2026-01-01", "RFC3339"),
        ("expires < tomorrow", "RFC3339"),
        ("expires < 2026-13-01T00:00:00Z", "invalid timestamp"),
        ("expires < 2026-01-01T00:00:00+24:00", "invalid timestamp"),
        ("expires > 2026-01-01T00:00:00Z", "'expires' takes the operator '<'"),
        ("not_before < 2026-01-01T00:00:00Z", "'not_before' takes the operator '>'"),
        ("max_calls = -1", "integer"),
        ("max_calls = 1.5", "integer"),
        ("max_calls = 01", "integer"),
        ("max_calls = 9223372036854775808", "integer"),
        ("max_cost = 1.1234567", "decimal"),
        ("max_cost = -1", "decimal"),
        ("max_cost = 1e3", "decimal"),
        ("prompt_sha256 = abc", "64 hex digits"),
        ("arg:amount ~ 5", "unknown operator"),
        ("arg: = 5", "argument name"),
        ("arg:a..b = 1", "argument name"),
        ("arg:amount", "expected 'arg:<name> <op> <value>'"),
        ("arg:amount = ", "empty value"),
        ("arg:amount <= abc", "needs a number"),
        ("arg:amount < true", "needs a number"),
        ('arg:amount < "5"', "needs a number"),
        ("arg:amount <= 1e999", "finite"),
        ("arg:x in a,,b", "empty item"),
        ('arg:x in {"a":1}', "not an object"),
        ("tenant = a\nb", "control characters"),
        ("arg:x = " + "a" * 1100, "longer than"),
        ("tenant = \ud800", "UTF-8"),
    ],
)
def test_parse_invalid(text, message):
    with pytest.raises(InvalidArgument) as info:
        parse_caveat(text)
    assert message in info.value.message


def test_parse_refuses_non_strings():
    with pytest.raises(InvalidArgument):
        parse_caveat(b"tenant = acme")  # type: ignore[arg-type]


ARG_CASES = [
    # = compares JSON values: numbers by value, bools only with bools
    ("arg:amount = 1000", {"amount": 1000}, True),
    ("arg:amount = 1000", {"amount": 1000.0}, True),
    ("arg:amount = 1000.0", {"amount": 1000}, True),
    ("arg:amount = 1000", {"amount": 999}, False),
    ("arg:amount = 1000", {"amount": "1000"}, False),
    ("arg:flag = true", {"flag": True}, True),
    ("arg:flag = true", {"flag": 1}, False),
    ("arg:n = 1", {"n": True}, False),
    ("arg:currency = EUR", {"currency": "EUR"}, True),
    ('arg:currency = "EUR"', {"currency": "EUR"}, True),
    ("arg:currency = EUR", {"currency": "eur"}, False),
    ("arg:memo = hello world", {"memo": "hello world"}, True),
    ("arg:x = null", {"x": None}, True),
    ("arg:x = null", {"x": 0}, False),
    ('arg:opts = {"a":[1,2]}', {"opts": {"a": [1, 2.0]}}, True),
    ('arg:opts = {"a":[1,2]}', {"opts": {"a": [1, 2], "b": 1}}, False),
    ('arg:opts = {"a":[1,2]}', {"opts": {"a": [True, 2]}}, False),
    # !=
    ("arg:currency != USD", {"currency": "EUR"}, True),
    ("arg:currency != USD", {"currency": "USD"}, False),
    ("arg:n != 1", {"n": 1.0}, False),
    ("arg:n != 1", {"n": True}, True),
    # numeric comparisons
    ("arg:amount < 1000", {"amount": 999.99}, True),
    ("arg:amount < 1000", {"amount": 1000}, False),
    ("arg:amount <= 1000", {"amount": 1000}, True),
    ("arg:amount <= 1000", {"amount": 1000.5}, False),
    ("arg:amount <= 1000", {"amount": Decimal("999.5")}, True),
    ("arg:amount > 10", {"amount": 11}, True),
    ("arg:amount > 10", {"amount": 10}, False),
    ("arg:amount >= 10", {"amount": 10}, True),
    ("arg:amount >= 10", {"amount": 9.99}, False),
    ("arg:amount >= -5.5", {"amount": -5.5}, True),
    # non-numeric arguments never satisfy a comparison
    ("arg:amount <= 1000", {"amount": "500"}, False),
    ("arg:amount <= 1000", {"amount": True}, False),
    ("arg:amount >= 0", {"amount": False}, False),
    ("arg:amount <= 1000", {"amount": None}, False),
    ("arg:amount <= 1000", {"amount": [1]}, False),
    ("arg:amount <= 1000", {"amount": float("nan")}, False),
    # in
    ("arg:currency in EUR,USD", {"currency": "EUR"}, True),
    ("arg:currency in EUR,USD", {"currency": "GBP"}, False),
    ("arg:n in [1,2,3]", {"n": 2}, True),
    ("arg:n in [1,2,3]", {"n": 2.0}, True),
    ("arg:n in [1,2,3]", {"n": 4}, False),
    ("arg:n in [1,2,3]", {"n": True}, False),
    ("arg:n in [1,2,3]", {"n": "1"}, False),
    ('arg:c in ["EUR"]', {"c": "EUR"}, True),
    ("arg:code in 7", {"code": 7}, True),
    # dotted paths into objects
    ("arg:payee.iban = DE89", {"payee": {"iban": "DE89"}}, True),
    ("arg:payee.iban = DE89", {"payee": {"iban": "FR76"}}, False),
    ("arg:payee.iban = DE89", {"payee": "DE89"}, False),
    ("arg:payee.iban = DE89", {"payee.iban": "DE89"}, False),
    ("arg:a.b.c >= 1", {"a": {"b": {"c": 2}}}, True),
    ("arg:a.b.c >= 1", {"a": {"b": [2]}}, False),
    # a missing argument fails every operator, != included
    ("arg:amount = 1000", {}, False),
    ("arg:amount != 1000", {}, False),
    ("arg:amount < 1000", {"other": 1}, False),
    ("arg:amount in 1,2", {}, False),
    ("arg:x = null", {}, False),
    ("arg:payee.iban != DE89", {}, False),
    ("arg:amount != 1000", None, False),
]


@pytest.mark.parametrize(("text", "arguments", "allowed"), ARG_CASES)
def test_arg_caveat_semantics(text, arguments, allowed):
    caveat = parse_caveat(text)
    assert isinstance(caveat, ArgCaveat)
    assert (caveat.violation(arguments) is None) is allowed


def test_every_arg_operator_is_covered():
    ops = {parse_caveat(text).op for text, _, _ in ARG_CASES}
    assert ops == {"=", "!=", "<", "<=", ">", ">=", "in"}


@pytest.mark.parametrize(
    ("text", "arguments", "reason"),
    [
        (
            "arg:amount <= 1000",
            {"amount": 5000},
            "argument 'amount' = 5000 violates caveat 'arg:amount <= 1000'",
        ),
        ("arg:amount <= 1000", {}, "argument 'amount' is missing, required by caveat 'arg:amount <= 1000'"),
        (
            "arg:amount <= 1000",
            {"amount": "5000"},
            "argument 'amount' (a string of 4 characters) is not a number, "
            "required by caveat 'arg:amount <= 1000'",
        ),
        (
            "arg:payee.iban = DE89",
            {"payee": {"iban": "FR7630006000011234567890189"}},
            "argument 'payee.iban' (a string of 27 characters) violates caveat 'arg:payee.iban = DE89'",
        ),
        ("arg:ok = true", {"ok": False}, "argument 'ok' = false violates caveat 'arg:ok = true'"),
    ],
)
def test_arg_violation_reasons(text, arguments, reason):
    assert parse_caveat(text).violation(arguments) == reason
