"""Budget rules: parsing, windows and the counters a call is charged."""

from __future__ import annotations

import pytest

from authz.budget import BudgetRule, parse_rules, rule_reservations, window_bounds
from authz.errors import InvalidArgument

NOW = 1_800_000_123.5  # some instant inside an hour


def test_windows_are_fixed_utc_intervals():
    start, end = window_bounds("hour", NOW)
    assert start % 3600 == 0 and end - start == 3600 and start <= NOW < end
    start, end = window_bounds("day", NOW)
    assert start % 86400 == 0 and start <= NOW < end


@pytest.mark.parametrize(
    "raw",
    [
        {"scope": "team", "window": "hour", "max_calls": 1},
        {"scope": "agent", "window": "week", "max_calls": 1},
        {"scope": "agent", "window": "hour"},
        {"scope": "tenant", "agent": "a", "window": "hour", "max_calls": 1},
        {"scope": "agent", "window": "hour", "max_calls": -1},
        {"scope": "agent", "window": "hour", "max_calls": True},
        {"scope": "agent", "window": "hour", "max_calls": 1, "extra": 1},
    ],
)
def test_bad_rules_are_refused(raw):
    with pytest.raises(InvalidArgument):
        BudgetRule.parse(raw)


def test_agent_rules_count_per_agent_and_tenant_rules_once():
    rules = parse_rules(
        [
            {"scope": "tenant", "window": "minute", "max_calls": 25},
            {"scope": "agent", "window": "hour", "max_calls": 100, "max_cost": 40},
            {"scope": "agent", "agent": "billing", "window": "day", "max_cost": 5},
        ]
    )
    a = rule_reservations("t", "alpha", rules, 2.0, NOW)
    b = rule_reservations("t", "beta", rules, 2.0, NOW)
    billing = rule_reservations("t", "billing", rules, 2.0, NOW)
    assert len(a) == 3 and len(billing) == 4
    assert a[0].key == b[0].key  # the tenant counter is shared
    assert a[1].key != b[1].key  # agent counters are not
    cost = next(r for r in a if r.key.endswith("/cost"))
    assert cost.amount == 2.0 and cost.limit == 40 and cost.scope == "agent:hour:max_cost"
    assert all(r.resets_at == window_bounds(r.scope.split(":")[1], NOW)[1] for r in a)


def test_two_rules_on_one_counter_charge_it_once_with_the_tighter_limit():
    rules = parse_rules(
        [
            {"scope": "agent", "window": "hour", "max_calls": 100},
            {"scope": "agent", "window": "hour", "max_calls": 50},
        ]
    )
    (only,) = rule_reservations("t", "alpha", rules, 1.0, NOW)
    assert only.limit == 50 and only.amount == 1.0
