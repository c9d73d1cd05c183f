"""The check path with ``TESSERA_POLICY_ENGINE=regorus``: a real Envoy asks the real check service, whose
demo tenant's policy runs on the regorus engine (the reason texts show which engine rendered them)."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from tests.integration.conftest import Gateway, rpc_error, start_gateway

IBAN = "DE89370400440532013000"


@pytest.fixture(scope="module")
def regorus_gateway(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Gateway]:
    stack, gateway = start_gateway(
        tmp_path_factory.mktemp("regorus"), env={"TESSERA_POLICY_ENGINE": "regorus"}
    )
    try:
        yield gateway
    finally:
        stack.stop()


def test_the_demo_policy_decides_on_regorus_end_to_end(regorus_gateway: Gateway) -> None:
    gateway = regorus_gateway
    allowed = gateway.call("read_invoice", {"invoice_id": "INV-1001"}, gateway.token())
    assert allowed.status_code == 200 and "result" in allowed.json(), allowed.text
    denied = rpc_error(gateway.call("delete_invoice", {"invoice_id": "INV-1001"}, gateway.token()))
    assert denied["code"] == -32012 and "retained for audit" in denied["data"]["reason"]
    escalated = rpc_error(gateway.call("transfer_funds", {"amount": 25000, "iban": IBAN}, gateway.token()))
    assert escalated["code"] == -32019 and escalated["data"]["check"] == "approval"
    # regorus' sprintf would drop the space after "%v"; Tessera's format rewrite keeps the reason as
    # regopy writes it (that the policy ran on regorus shows in the next test's "too large" reason).
    assert "transfer of 25000 exceeds the 10000 threshold" in escalated["data"]["reason"], escalated


def test_an_input_regorus_cannot_hold_exactly_is_denied(regorus_gateway: Gateway) -> None:
    gateway = regorus_gateway
    error = rpc_error(gateway.call("transfer_funds", {"amount": 2**70, "iban": IBAN}, gateway.token()))
    assert error["code"] == -32012 and error["data"]["check"] == "policy"
    assert "too large" in error["data"]["reason"], error
