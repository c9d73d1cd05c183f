"""The cost-growth rows of ``make bench`` measure what they say: the generated policy has the rules it
claims, and alternating rounds keep each case's fastest round."""

from __future__ import annotations

import asyncio

from authz.policy import compile_policy
from bench.growth import ROUNDS, _fastest, policy_source


def test_the_generated_policy_decides_by_its_nth_rule():
    policy = compile_policy(policy_source(50))
    assert policy.evaluate({"tool": "tool_49", "arguments": {"amount": 5}}).reason == "rule 49"
    assert policy.evaluate({"tool": "tool_49", "arguments": {"amount": 5}}).allowed
    assert not policy.evaluate({"tool": "tool_0", "arguments": {"amount": 5}}).allowed  # 5 > 0
    assert not policy.evaluate({"tool": "tool_50", "arguments": {"amount": 5}}).allowed  # default deny
    assert policy_source(1000).count('if input.tool == "tool_') == 1000


def test_rounds_alternate_between_cases_and_the_fastest_counts():
    order: list[str] = []
    readings = {"a": iter([5.0, 3.0, 4.0, 9.0, 6.0]), "b": iter([7.0, 8.0, 2.0, 8.0, 8.0])}

    def case(name):
        def measure():
            order.append(name)
            return next(readings[name])

        return measure

    async def slow_b():
        return case("b")()

    best = asyncio.run(_fastest({"a": case("a"), "b": slow_b}))
    assert best == {"a": 3.0, "b": 2.0}
    assert order == ["a", "b"] * ROUNDS


def test_engine_rows_time_regorus_against_regopy_on_the_same_policy(monkeypatch):
    import bench.growth as growth

    # A small stand-in for the 1,000-rule policy keeps this fast; the real size runs in make bench.
    monkeypatch.setattr(growth, "policy_source", lambda rules: policy_source(5))
    groups = asyncio.run(growth.engine_rows())
    assert [list(g) for g in groups] == [
        ["policy evaluation, demo policy, regopy", "policy evaluation, demo policy, regorus"],
        ["policy evaluation, 1,000 rules, regopy", "policy evaluation, 1,000 rules, regorus"],
    ]  # regopy first: each group's ratio is regorus' time over regopy's
    assert all(0 < micros < float("inf") for g in groups for micros in g.values())
