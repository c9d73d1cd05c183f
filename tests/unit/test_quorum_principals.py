"""A quorum counts people, not keys (issue 13 §4), through the real admin gRPC service on SQLite.

The reproduction: with quorum 2, one admin created two operator keys and approved alone. Keys now
carry the principal they belong to (the creator's own unless one is named), shown in the key record
and the audit chain, and an approval needs that many distinct principals."""

from __future__ import annotations

import grpc

from authz.api.admin.v1 import admin_key_service_pb2 as keys_pb
from authz.api.admin.v1 import approval_service_pb2 as approvals_pb
from tests.unit.test_admin_service import (  # noqa: F401  (admin is the fixture the tests take)
    ROOT,
    admin,
    admin_events,
    an_approval,
    auth,
    failure,
)


async def _key(admin, name: str, principal: str = "", key: str = ROOT) -> keys_pb.CreateAdminKeyResponse:  # noqa: F811
    return await admin.keys.CreateAdminKey(
        keys_pb.CreateAdminKeyRequest(
            name=name, role=keys_pb.ROLE_OPERATOR, tenant="acme", principal=principal
        ),
        metadata=auth(key),
    )


def _approve(approval_id: str) -> approvals_pb.DecideApprovalRequest:
    return approvals_pb.DecideApprovalRequest(
        tenant="acme", approval_id=approval_id, verdict=approvals_pb.VERDICT_APPROVE
    )


async def test_two_keys_made_by_one_admin_for_itself_are_one_approver(admin) -> None:  # noqa: F811
    await admin.store.create_approval(an_approval("transfer-200k", quorum=2))
    one, two = await _key(admin, "sock-1"), await _key(admin, "sock-2")
    # No principal named: both keys are the creating admin's own.
    assert one.key.principal == two.key.principal == "bootstrap"
    first = await admin.approvals.DecideApproval(_approve("transfer-200k"), metadata=auth(one.secret))
    assert first.approval.status == approvals_pb.APPROVAL_STATUS_PENDING
    assert first.approval.decisions[0].principal == "bootstrap"
    code, status = await failure(
        admin.approvals.DecideApproval(_approve("transfer-200k"), metadata=auth(two.secret))
    )
    assert code is grpc.StatusCode.FAILED_PRECONDITION
    assert "principal 'bootstrap' has already decided" in status.message
    code, _ = await failure(admin.approvals.DecideApproval(_approve("transfer-200k"), metadata=auth(ROOT)))
    assert code is grpc.StatusCode.FAILED_PRECONDITION  # the admin's own key is the same person too
    still = await admin.store.get_approval("acme", "transfer-200k")
    assert still.status == "pending"


async def test_distinct_principals_reach_the_quorum_and_the_audit_names_them(admin) -> None:  # noqa: F811
    await admin.store.create_approval(an_approval("transfer-ok", quorum=2))
    alice = await _key(admin, "alice-laptop", "alice@example.com")
    bob = await _key(admin, "bob-ci", "bob@example.com")
    await admin.approvals.DecideApproval(_approve("transfer-ok"), metadata=auth(alice.secret))
    done = await admin.approvals.DecideApproval(_approve("transfer-ok"), metadata=auth(bob.secret))
    assert done.approval.status == approvals_pb.APPROVAL_STATUS_APPROVED and done.approval.approvals == 2
    assert [d.principal for d in done.approval.decisions] == ["alice@example.com", "bob@example.com"]
    assert done.approval.decisions[0].operator.endswith("principal alice@example.com)")
    events = await admin_events(admin.store, "acme")
    created = [e for e in events if e["action"] == "admin_key.create" and e["details"]["name"] == "bob-ci"]
    assert created[0]["details"]["principal"] == "bob@example.com"
    assert created[0]["details"]["created_by_principal"] == "bootstrap"
    decided = [e for e in events if e["action"] == "approval.decide"][-1]
    assert decided["details"]["principal"] == "bob@example.com" and decided["details"]["approvals"] == 2
    listed = await admin.keys.ListAdminKeys(keys_pb.ListAdminKeysRequest(), metadata=auth(ROOT))
    assert {k.name: k.principal for k in listed.keys}["alice-laptop"] == "alice@example.com"


async def test_principal_names_are_validated(admin) -> None:  # noqa: F811
    code, status = await failure(_key(admin, "bad", "alice smith"))
    assert code is grpc.StatusCode.INVALID_ARGUMENT and "principal" in status.message
