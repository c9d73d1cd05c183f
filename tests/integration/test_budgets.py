"""Budgets through the real stack: caveat counters, nesting, tenant/agent rules, exact under concurrency."""

from __future__ import annotations

import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, datetime
from pathlib import Path

import pytest

from authz.token import attenuate
from tests.integration.conftest import Gateway, rpc_error, start_gateway

POLICY = Path(__file__).resolve().parents[2] / "authz" / "policy" / "examples" / "demo.rego"
IBAN = "DE89370400440532013000"
READ = ("read_invoice", {"invoice_id": "INV-1001"})

TENANTS = f"""
tenants:
  agents:
    policy: {POLICY}
    budget_rules:
      - {{scope: agent, window: hour, max_calls: 100}}
  whole:
    policy: {POLICY}
    budget_rules:
      - {{scope: tenant, window: minute, max_calls: 25}}
  costly:
    policy: {POLICY}
    tool_costs: {{transfer_funds: 5, read_invoice: 1}}
    budget_rules:
      - {{scope: agent, agent: spender, window: day, max_cost: 12}}
  plain:
    policy: {POLICY}
"""


@pytest.fixture(scope="module")
def budget_gateway(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Gateway]:
    workdir = tmp_path_factory.mktemp("budgets")
    tenants = workdir / "tenants.yaml"
    tenants.write_text(TENANTS)
    stack, gw = start_gateway(workdir, env={"TESSERA_TENANTS_FILE": str(tenants)})
    try:
        yield gw
    finally:
        stack.stop()


def _burst(gw: Gateway, n: int, call) -> tuple[list, list]:
    with ThreadPoolExecutor(max_workers=16) as pool:
        responses = list(pool.map(call, range(n)))
    bodies = [r.json() for r in responses]
    allowed = [b for b in bodies if "result" in b]
    denied = [b for b in bodies if "error" in b]
    assert len(allowed) + len(denied) == n
    return allowed, denied


def test_the_101st_call_this_hour_from_an_agent_budgeted_for_100_is_refused(budget_gateway: Gateway):
    gw = budget_gateway
    token = gw.token(tenant="agents", agent="bot-100")
    allowed, denied = _burst(gw, 130, lambda i: gw.call(*READ, token=token, request_id=i))
    assert len(allowed) == 100
    assert {d["error"]["code"] for d in denied} == {-32013}
    data = denied[0]["error"]["data"]
    assert data["scope"] == "agent:hour:max_calls" and data["limit"] == 100
    now = datetime.now(UTC)
    resets = datetime.fromisoformat(data["resets_at"].replace("Z", "+00:00"))
    assert resets.minute == 0 and resets.second == 0 and 0 < (resets - now).total_seconds() <= 3600
    # another agent of the same tenant has its own counter
    assert "result" in gw.call(*READ, token=gw.token(tenant="agents", agent="bot-other")).json()


def test_tenant_rule_is_shared_by_every_agent_and_exact(budget_gateway: Gateway):
    gw = budget_gateway
    tokens = [gw.token(tenant="whole", agent=f"a{i}") for i in range(5)]
    first_minute = int(time.time() // 60)
    allowed, denied = _burst(gw, 60, lambda i: gw.call(*READ, token=tokens[i % 5], request_id=i))
    if int(time.time() // 60) == first_minute:
        assert len(allowed) == 25
    else:  # the burst straddled a minute boundary: the next window adds at most 25 more
        assert 25 <= len(allowed) <= 50
    assert all(d["error"]["data"]["scope"] == "tenant:minute:max_calls" for d in denied)


def test_cost_rule_and_max_cost_caveat_count_tool_costs(budget_gateway: Gateway):
    gw = budget_gateway
    transfer = ("transfer_funds", {"amount": 10, "iban": IBAN})
    spender = gw.token(tenant="costly", agent="spender")  # rule: 12 per day, transfer costs 5
    allowed, denied = _burst(gw, 10, lambda i: gw.call(*transfer, token=spender, request_id=i))
    assert len(allowed) == 2
    assert denied[0]["error"]["data"]["scope"] == "agent:day:max_cost"
    # 2 units left: a read (cost 1) still fits twice, then no more
    assert "result" in gw.call(*READ, token=spender).json()
    assert "result" in gw.call(*READ, token=spender).json()
    assert rpc_error(gw.call(*READ, token=spender))["code"] == -32013
    capped = gw.token(tenant="costly", agent="other", max_cost=11)
    allowed, denied = _burst(gw, 8, lambda i: gw.call(*transfer, token=capped, request_id=i))
    assert len(allowed) == 2
    assert denied[0]["error"]["data"]["scope"] == "token:max_cost"


def test_a_sub_agent_cannot_exceed_its_parent(budget_gateway: Gateway):
    gw = budget_gateway
    parent = gw.token(tenant="plain", max_calls=5)
    greedy_child = attenuate(parent, ["max_calls = 50"])
    allowed, _ = _burst(gw, 20, lambda i: gw.call(*READ, token=greedy_child, request_id=i))
    assert len(allowed) == 5
    assert rpc_error(gw.call(*READ, token=parent))["code"] == -32013


def test_children_share_the_parent_counter_and_have_their_own(budget_gateway: Gateway):
    gw = budget_gateway
    parent = gw.token(tenant="plain", max_calls=6)
    child_a = attenuate(parent, ["max_calls = 2"])
    child_b = attenuate(parent, ["max_calls = 3"])
    a_allowed, _ = _burst(gw, 6, lambda i: gw.call(*READ, token=child_a, request_id=i))
    b_allowed, _ = _burst(gw, 6, lambda i: gw.call(*READ, token=child_b, request_id=i))
    assert (len(a_allowed), len(b_allowed)) == (2, 3)
    assert "result" in gw.call(*READ, token=parent).json()  # 6th unit of the parent
    assert rpc_error(gw.call(*READ, token=parent))["code"] == -32013


def test_denied_calls_consume_nothing(budget_gateway: Gateway):
    gw = budget_gateway
    token = gw.token(tenant="plain", max_calls=2)
    for _ in range(5):
        assert rpc_error(gw.call("delete_invoice", {"invoice_id": "INV-1001"}, token=token))["code"] == -32012
    assert (
        rpc_error(gw.call("transfer_funds", {"amount": 50_000, "iban": IBAN}, token=token))["code"] == -32019
    )
    assert "result" in gw.call(*READ, token=token).json()
    assert "result" in gw.call(*READ, token=token).json()
    assert rpc_error(gw.call(*READ, token=token))["code"] == -32013
