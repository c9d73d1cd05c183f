"""The SDK's exception tree: one class per JSON-RPC code, the gateway's data lifted into attributes."""

from __future__ import annotations

import pickle
from datetime import UTC, datetime

import pytest

from authz.client import (
    ApprovalRequired,
    BudgetError,
    CapabilityError,
    GatewayError,
    IntentError,
    PolicyError,
    ProtocolError,
    ProvenanceError,
    TesseraError,
    UnavailableError,
    error_from_rpc,
)

ALL = [
    CapabilityError,
    IntentError,
    PolicyError,
    BudgetError,
    ProvenanceError,
    UnavailableError,
    ApprovalRequired,
    ProtocolError,
    GatewayError,
]


def rpc(code, message="denied", **data):
    return {
        "code": code,
        "message": message,
        "data": {"check": "x", "reason": "why", "decision_id": "d1", **data},
    }


@pytest.mark.parametrize(
    ("code", "cls"),
    [
        (-32010, CapabilityError),
        (-32011, IntentError),
        (-32012, PolicyError),
        (-32013, BudgetError),
        (-32014, ProvenanceError),
        (-32018, UnavailableError),
        (-32019, ApprovalRequired),
        (-32700, ProtocolError),
        (-32600, ProtocolError),
        (-32602, ProtocolError),
        (-32601, ProtocolError),
        (-32603, ProtocolError),
        (-32000, ProtocolError),
        (1, ProtocolError),
    ],
)
def test_each_code_maps_to_its_class(code, cls):
    error = error_from_rpc(rpc(code))
    assert type(error) is cls
    assert (error.code, error.message, error.check, error.reason, error.decision_id) == (
        code,
        "denied",
        "x",
        "why",
        "d1",
    )
    assert isinstance(error, TesseraError)


def test_every_class_derives_from_the_base_and_nothing_else_is_shared():
    for cls in ALL:
        assert issubclass(cls, TesseraError)
        assert cls.__bases__ == (TesseraError,)


def test_budget_fields():
    error = error_from_rpc(rpc(-32013, scope="token:max_calls", limit=1, used=1, resets_at=None))
    assert (error.scope, error.limit, error.resets_at) == ("token:max_calls", 1, None)
    later = error_from_rpc(rpc(-32013, scope="tenant:day", limit=2.5, resets_at=1_700_000_000))
    assert later.resets_at == datetime.fromtimestamp(1_700_000_000, UTC)


def test_unavailable_retry_after_from_data_or_header():
    assert error_from_rpc(rpc(-32018, retry_after_ms=1500)).retry_after == 1.5
    assert error_from_rpc(rpc(-32018), retry_after=3.0).retry_after == 3.0
    assert error_from_rpc(rpc(-32018)).retry_after is None


def test_approval_fields():
    error = error_from_rpc(
        rpc(-32019, approval_id="ap-1", expires_at="2030-01-02T03:04:05Z", resume_header="X-Approval-Id")
    )
    assert error.approval_id == "ap-1"
    assert error.expires_at == datetime(2030, 1, 2, 3, 4, 5, tzinfo=UTC)
    assert error.resume_header == "X-Approval-Id"
    bare = error_from_rpc({"code": -32019, "message": "approval required"})
    assert (bare.approval_id, bare.expires_at, bare.data, bare.check) == (None, None, {}, None)


def test_decision_id_falls_back_to_the_header_value():
    error = error_from_rpc({"code": -32012, "message": "denied by policy"}, decision_id="hdr")
    assert error.decision_id == "hdr"
    assert error_from_rpc(rpc(-32012), decision_id="hdr").decision_id == "d1"


@pytest.mark.parametrize(
    "bad", [None, "oops", [1], {"message": "no code"}, {"code": "x"}, {"code": True, "message": "m"}]
)
def test_malformed_error_objects_are_protocol_errors_without_code(bad):
    error = error_from_rpc(bad)
    assert type(error) is ProtocolError and error.code is None


def test_non_object_data_is_kept():
    error = error_from_rpc({"code": -32602, "message": "bad", "data": "detail"})
    assert error.data == {"value": "detail"}


def test_str_names_code_check_reason_and_decision():
    text = str(error_from_rpc(rpc(-32012, reason="deletes are denied")))
    assert text == "denied: deletes are denied (-32012, x, decision d1)"
    gateway = GatewayError("the gateway answered HTTP 500", http_status=500)
    assert str(gateway) == "the gateway answered HTTP 500 [HTTP 500]"


@pytest.mark.parametrize(
    "error",
    [
        error_from_rpc(rpc(-32013, scope="s", limit=3)),
        error_from_rpc(rpc(-32018, retry_after_ms=10)),
        error_from_rpc(rpc(-32019, approval_id="a")),
        GatewayError("down", http_status=503, body="x", retry_after=2.0),
    ],
)
def test_errors_survive_pickling(error):
    copy = pickle.loads(pickle.dumps(error))
    assert type(copy) is type(error)
    assert copy.__dict__ == error.__dict__
