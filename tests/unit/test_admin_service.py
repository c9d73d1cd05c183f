"""The admin service in process: a real grpc.aio server on a free port over a SQLite store.

Covers what each RPC does (the integration tests cover Envoy, REST and the running stack): key
bootstrap and authentication, tokens, the policy lifecycle with diagnostics and dry-runs, approvals
with quorum and expiry, tenants and settings, budgets, audit, admin keys, and the approval webhook.
"""

from __future__ import annotations

import asyncio
import io
import json
import threading
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import grpc
import pytest
from google.protobuf import json_format
from google.rpc import error_details_pb2, status_pb2
from grpc_status import rpc_status

from authz.admin.keys import hash_key
from authz.admin.webhook import KEY_PURPOSE, ApprovalNotifier, verify_signature
from authz.api.admin.v1 import admin_key_service_pb2 as keys_pb
from authz.api.admin.v1 import admin_key_service_pb2_grpc as keys_grpc
from authz.api.admin.v1 import approval_service_pb2 as approvals_pb
from authz.api.admin.v1 import approval_service_pb2_grpc as approvals_grpc
from authz.api.admin.v1 import audit_service_pb2 as audit_pb
from authz.api.admin.v1 import audit_service_pb2_grpc as audit_grpc
from authz.api.admin.v1 import policy_service_pb2 as policy_pb
from authz.api.admin.v1 import policy_service_pb2_grpc as policy_grpc
from authz.api.admin.v1 import tenant_service_pb2 as tenants_pb
from authz.api.admin.v1 import tenant_service_pb2_grpc as tenants_grpc
from authz.api.admin.v1 import token_service_pb2 as tokens_pb
from authz.api.admin.v1 import token_service_pb2_grpc as tokens_grpc
from authz.audit import event_from_decision
from authz.budget import parse_rules, rule_reservations
from authz.check.models import Check, Decision, Outcome, new_decision_id
from authz.outbound import OutboundClient, OutboundPolicy
from authz.policy import default_policy_source, policy_hash
from authz.secrets import Secret
from authz.server.admin._common import AdminRuntime
from authz.server.admin.app import bootstrap_admin_key, build_server
from authz.server.status import error_info
from authz.storage import Approval, TenantSettings
from authz.storage.sqlite import SQLiteStore
from authz.token import KeyRing, TokenAuthenticator, mint

MASTER = "unit-admin-master-key-0123456789abcdef-0123"
ROOT = "tsk_0123456789ab_root-secret-for-unit-tests-000000000000"
POLICY = default_policy_source()
ALLOW_ALL = 'package tessera\n\nimport rego.v1\n\ndecision := {"allow": true, "reason": "everything"}\n'


@dataclass
class Admin:
    store: SQLiteStore
    keyring: KeyRing
    channel: grpc.aio.Channel
    runtime: AdminRuntime

    @property
    def tokens(self) -> tokens_grpc.TokenServiceStub:
        return tokens_grpc.TokenServiceStub(self.channel)

    @property
    def policies(self) -> policy_grpc.PolicyServiceStub:
        return policy_grpc.PolicyServiceStub(self.channel)

    @property
    def approvals(self) -> approvals_grpc.ApprovalServiceStub:
        return approvals_grpc.ApprovalServiceStub(self.channel)

    @property
    def tenants(self) -> tenants_grpc.TenantServiceStub:
        return tenants_grpc.TenantServiceStub(self.channel)

    @property
    def audit(self) -> audit_grpc.AuditServiceStub:
        return audit_grpc.AuditServiceStub(self.channel)

    @property
    def keys(self) -> keys_grpc.AdminKeyServiceStub:
        return keys_grpc.AdminKeyServiceStub(self.channel)

    async def new_key(self, role: int, tenant: str = "", name: str = "k") -> str:
        """A key for the person ``name`` (each name its own principal)."""
        created = await self.keys.CreateAdminKey(
            keys_pb.CreateAdminKeyRequest(name=name, role=role, tenant=tenant, principal=name),
            metadata=auth(ROOT),
        )
        return created.secret


def auth(key: str) -> tuple[tuple[str, str], ...]:
    return (("authorization", f"Bearer {key}"),)


async def failure(call) -> tuple[grpc.StatusCode, status_pb2.Status]:
    with pytest.raises(grpc.aio.AioRpcError) as raised:
        await call
    err = raised.value
    details = next(
        (v for k, v in err.trailing_metadata() or () if k == rpc_status.GRPC_DETAILS_METADATA_KEY), None
    )
    assert details is not None, "every error carries google.rpc.Status details"
    return err.code(), status_pb2.Status.FromString(details)


@pytest.fixture(scope="module")
async def admin(tmp_path_factory: pytest.TempPathFactory) -> AsyncIterator[Admin]:
    store = SQLiteStore(tmp_path_factory.mktemp("admin") / "tessera.db")
    await store.put_tenant("acme", TenantSettings())
    await store.put_tenant("globex", TenantSettings())
    await store.promote_policy("acme", POLICY, policy_hash(POLICY), "setup")
    keyring = KeyRing(Secret(MASTER))
    runtime = AdminRuntime(store, keyring, TokenAuthenticator(keyring))
    assert await bootstrap_admin_key(store, Secret(ROOT)) is None  # given: stored, never printed
    server, _ = build_server(runtime)
    port = server.add_insecure_port("127.0.0.1:0")
    await server.start()
    channel = grpc.aio.insecure_channel(f"127.0.0.1:{port}")
    try:
        yield Admin(store, keyring, channel, runtime)
    finally:
        await channel.close()
        await server.stop(0)
        await store.close()


async def admin_events(store: SQLiteStore, tenant: str) -> list[dict[str, Any]]:
    return [json.loads(r.event)["tessera"] async for r in store.iter_events(tenant) if r.decision == "admin"]


# -- bootstrap and authentication -------------------------------------------------------------------
async def test_bootstrap_prints_a_generated_key_once_and_stores_only_its_hash(tmp_path: Path) -> None:
    store = SQLiteStore(tmp_path / "boot.db")
    try:
        out = io.StringIO()
        key = await bootstrap_admin_key(store, None, out=out)
        assert key is not None and key.startswith("tsk_") and key in out.getvalue()
        assert out.getvalue().count(key) == 1
        (record,) = await store.list_admin_keys()
        assert (record.role, record.tenant, record.secret_sha256) == ("admin", None, hash_key(key))
        again = io.StringIO()
        assert await bootstrap_admin_key(store, None, out=again) is None
        assert again.getvalue() == ""
        (event,) = await admin_events(store, "_admin")
        assert event["action"] == "admin_key.create" and key not in json.dumps(event)
    finally:
        await store.close()


async def test_missing_wrong_and_revoked_keys_are_unauthenticated(admin: Admin) -> None:
    request = tenants_pb.ListTenantsRequest()
    code, status = await failure(admin.tenants.ListTenants(request))
    assert code is grpc.StatusCode.UNAUTHENTICATED and error_info(status).reason == "ADMIN_KEY_MISSING"
    for bad in ("nonsense", ROOT[:-1] + "x", "tsk_ffffffffffff_" + "a" * 40):
        code, status = await failure(admin.tenants.ListTenants(request, metadata=auth(bad)))
        assert code is grpc.StatusCode.UNAUTHENTICATED and error_info(status).reason == "ADMIN_KEY_INVALID"
    key = await admin.new_key(keys_pb.ROLE_VIEWER, name="short-lived")
    assert (await admin.tenants.ListTenants(request, metadata=auth(key))).tenants
    key_id = key.split("_")[1]
    await admin.keys.RevokeAdminKey(keys_pb.RevokeAdminKeyRequest(key_id=key_id), metadata=auth(ROOT))
    code, _ = await failure(admin.tenants.ListTenants(request, metadata=auth(key)))
    assert code is grpc.StatusCode.UNAUTHENTICATED  # at once, no cache


async def test_health_and_reflection_need_no_key(admin: Admin) -> None:
    from grpc_health.v1 import health_pb2, health_pb2_grpc

    answer = await health_pb2_grpc.HealthStub(admin.channel).Check(health_pb2.HealthCheckRequest())
    assert answer.status in (health_pb2.HealthCheckResponse.SERVING, health_pb2.HealthCheckResponse.UNKNOWN)


# -- tokens -----------------------------------------------------------------------------------------
async def test_mint_inspect_attenuate_revoke_and_list(admin: Admin) -> None:
    minted = await admin.tokens.MintToken(
        tokens_pb.MintTokenRequest(
            tenant="acme",
            agent="bot",
            tools=["read_invoice"],
            ttl_seconds=600,
            max_calls=5,
            args=["amount <= 10"],
        ),
        metadata=auth(ROOT),
    )
    assert minted.tenant == "acme" and minted.jti and minted.expires_at.seconds > time.time()
    assert "agent = bot" in minted.caveats and "max_calls = 5" in minted.caveats
    info = await admin.tokens.InspectToken(
        tokens_pb.InspectTokenRequest(token=minted.token), metadata=auth(ROOT)
    )
    assert (info.signature_valid, info.revoked, info.agent, list(info.tools)) == (
        True,
        False,
        "bot",
        ["read_invoice"],
    )

    narrower = await admin.tokens.AttenuateToken(
        tokens_pb.AttenuateTokenRequest(token=minted.token, caveats=["arg:amount <= 5"]), metadata=auth(ROOT)
    )
    assert narrower.token_id != minted.token_id and "arg:amount <= 5" in narrower.caveats

    forged = mint(KeyRing(Secret("another-master-key-entirely-0123456789")), tenant="acme")
    info = await admin.tokens.InspectToken(tokens_pb.InspectTokenRequest(token=forged), metadata=auth(ROOT))
    assert not info.signature_valid and "signature" in info.rejection

    revoked = await admin.tokens.RevokeToken(
        tokens_pb.RevokeTokenRequest(token=minted.token, reason="leaked"), metadata=auth(ROOT)
    )
    assert (revoked.revocation.kind, revoked.revocation.value) == (
        tokens_pb.REVOCATION_KIND_TOKEN_ID,
        minted.token_id,
    )
    assert revoked.revocation.revoked_by.startswith("bootstrap (key ")
    child = await admin.tokens.InspectToken(
        tokens_pb.InspectTokenRequest(token=narrower.token), metadata=auth(ROOT)
    )
    assert child.revoked  # a descendant of a revoked token is revoked
    listed = await admin.tokens.ListRevocations(
        tokens_pb.ListRevocationsRequest(tenant="acme"), metadata=auth(ROOT)
    )
    assert minted.token_id in {r.value for r in listed.revocations}

    events = await admin_events(admin.store, "acme")
    mint_event = next(e for e in events if e["action"] == "token.mint" and e["target"] == f"jti:{minted.jti}")
    assert mint_event["actor"].startswith("bootstrap (key ") and minted.token not in json.dumps(events)
    assert any(e["action"] == "token.revoke" for e in events)


async def test_token_requests_are_validated(admin: Admin) -> None:
    for request, field in (
        (tokens_pb.MintTokenRequest(tenant="nobody"), None),
        (tokens_pb.MintTokenRequest(tenant="acme", caveats=["frobnicate = 1"]), None),
        (tokens_pb.MintTokenRequest(tenant="acme", max_cost="lots"), None),
    ):
        code, _ = await failure(admin.tokens.MintToken(request, metadata=auth(ROOT)))
        assert code in (grpc.StatusCode.INVALID_ARGUMENT, grpc.StatusCode.NOT_FOUND), (request, field)
    code, _ = await failure(
        admin.tokens.RevokeToken(
            tokens_pb.RevokeTokenRequest(tenant="acme", jti="a", token_id="b"), metadata=auth(ROOT)
        )
    )
    assert code is grpc.StatusCode.INVALID_ARGUMENT
    code, _ = await failure(
        admin.tokens.InspectToken(tokens_pb.InspectTokenRequest(token="!!"), metadata=auth(ROOT))
    )
    assert code is grpc.StatusCode.INVALID_ARGUMENT


# -- policies ---------------------------------------------------------------------------------------
BROKEN = 'package tessera\n\nimport rego.v1\n\ndecision := {"allow": true\n'


async def test_validate_reports_line_and_column_and_promote_refuses(admin: Admin) -> None:
    result = await admin.policies.ValidatePolicy(
        policy_pb.ValidatePolicyRequest(tenant="acme", source=BROKEN), metadata=auth(ROOT)
    )
    assert not result.valid and result.diagnostics
    assert result.diagnostics[0].line >= 5 and result.diagnostics[0].message
    good = await admin.policies.ValidatePolicy(
        policy_pb.ValidatePolicyRequest(tenant="acme", source=ALLOW_ALL), metadata=auth(ROOT)
    )
    assert good.valid and not good.diagnostics and good.content_hash == policy_hash(ALLOW_ALL)

    before = await admin.policies.GetActivePolicy(
        policy_pb.GetActivePolicyRequest(tenant="acme"), metadata=auth(ROOT)
    )
    code, status = await failure(
        admin.policies.PromotePolicy(
            policy_pb.PromotePolicyRequest(tenant="acme", source=BROKEN), metadata=auth(ROOT)
        )
    )
    assert code is grpc.StatusCode.INVALID_ARGUMENT
    info = error_info(status)
    assert info.reason == "POLICY_COMPILE_ERROR" and int(info.metadata["line"]) >= 5
    assert any(d.Is(error_details_pb2.BadRequest.DESCRIPTOR) for d in status.details)
    after = await admin.policies.GetActivePolicy(
        policy_pb.GetActivePolicyRequest(tenant="acme"), metadata=auth(ROOT)
    )
    assert after.policy.version == before.policy.version  # nothing changed


async def test_draft_lifecycle(admin: Admin) -> None:
    create = policy_pb.CreateDraftRequest(tenant="globex", name="v-next", source=BROKEN)
    draft = (await admin.policies.CreateDraft(create, metadata=auth(ROOT))).draft
    assert draft.content_hash == policy_hash(BROKEN) and draft.updated_by.startswith("bootstrap")
    code, _ = await failure(admin.policies.CreateDraft(create, metadata=auth(ROOT)))
    assert code is grpc.StatusCode.ALREADY_EXISTS
    check = await admin.policies.ValidatePolicy(
        policy_pb.ValidatePolicyRequest(tenant="globex", draft="v-next"), metadata=auth(ROOT)
    )
    assert not check.valid

    stale = policy_pb.UpdateDraftRequest(
        tenant="globex", name="v-next", source=ALLOW_ALL, expected_hash="sha256:0"
    )
    code, _ = await failure(admin.policies.UpdateDraft(stale, metadata=auth(ROOT)))
    assert code is grpc.StatusCode.FAILED_PRECONDITION
    update = policy_pb.UpdateDraftRequest(
        tenant="globex", name="v-next", source=ALLOW_ALL, expected_hash=draft.content_hash
    )
    updated = (await admin.policies.UpdateDraft(update, metadata=auth(ROOT))).draft
    assert updated.content_hash == policy_hash(ALLOW_ALL)
    listed = await admin.policies.ListDrafts(
        policy_pb.ListDraftsRequest(tenant="globex"), metadata=auth(ROOT)
    )
    assert [(d.name, d.source) for d in listed.drafts] == [("v-next", "")]
    got = await admin.policies.GetDraft(
        policy_pb.GetDraftRequest(tenant="globex", name="v-next"), metadata=auth(ROOT)
    )
    assert got.draft.source == ALLOW_ALL

    promoted = await admin.policies.PromotePolicy(
        policy_pb.PromotePolicyRequest(tenant="globex", draft="v-next"), metadata=auth(ROOT)
    )
    assert (promoted.policy.version, promoted.previous_version, promoted.policy.active) == (1, 0, True)
    await admin.policies.DeleteDraft(
        policy_pb.DeleteDraftRequest(tenant="globex", name="v-next"), metadata=auth(ROOT)
    )
    code, _ = await failure(
        admin.policies.GetDraft(
            policy_pb.GetDraftRequest(tenant="globex", name="v-next"), metadata=auth(ROOT)
        )
    )
    assert code is grpc.StatusCode.NOT_FOUND
    actions = [e["action"] for e in await admin_events(admin.store, "globex")]
    for action in ("policy.draft.create", "policy.draft.update", "policy.promote", "policy.draft.delete"):
        assert action in actions
    code, _ = await failure(
        admin.policies.CreateDraft(
            policy_pb.CreateDraftRequest(tenant="globex", name="bad name!", source="x"), metadata=auth(ROOT)
        )
    )
    assert code is grpc.StatusCode.INVALID_ARGUMENT


async def test_dry_run_with_given_inputs_reports_what_changes(admin: Admin) -> None:
    deny_deletes_only = (
        "package tessera\n\nimport rego.v1\n\n"
        'default decision := {"allow": true}\n\n'
        'decision := {"allow": false, "reason": "no deletes"} if input.tool == "delete_invoice"\n'
    )
    inputs = [
        {"tool": "read_invoice", "arguments": {"invoice_id": "1"}},
        {"tool": "delete_invoice", "arguments": {"invoice_id": "1"}},
        {"tool": "transfer_funds", "arguments": {"amount": 50000}},
        {"tool": "unknown_tool"},
    ]
    request = policy_pb.DryRunPolicyRequest(tenant="acme", source=deny_deletes_only)
    for item in inputs:
        json_format.ParseDict(item, request.inputs.add())
    result = await admin.policies.DryRunPolicy(request, metadata=auth(ROOT))
    assert (result.evaluated, result.changed, result.replayed, result.active_version >= 1) == (
        4,
        2,
        False,
        True,
    )
    changed = {(c.input["tool"], c.active_outcome, c.candidate_outcome) for c in result.changes}
    assert changed == {
        ("transfer_funds", policy_pb.POLICY_OUTCOME_ESCALATE, policy_pb.POLICY_OUTCOME_ALLOW),
        ("unknown_tool", policy_pb.POLICY_OUTCOME_DENY, policy_pb.POLICY_OUTCOME_ALLOW),
    }
    assert len(result.results) == 4 and result.results[0].input["tenant"] == "acme"  # completed input


async def test_dry_run_surfaces_evaluation_errors(admin: Admin) -> None:
    # Compiles, but fails when evaluated: two different values for one complete rule.
    conflicting = (
        "package tessera\n\nimport rego.v1\n\n"
        'decision := {"allow": true} if input.tool != ""\n'
        'decision := {"allow": false} if input.tool == "read_invoice"\n'
    )
    request = policy_pb.DryRunPolicyRequest(tenant="acme", source=conflicting)
    json_format.ParseDict({"tool": "read_invoice"}, request.inputs.add())
    result = await admin.policies.DryRunPolicy(request, metadata=auth(ROOT))
    assert result.candidate_errors == 1 and result.changes[0].candidate_error
    assert result.changes[0].candidate_outcome == policy_pb.POLICY_OUTCOME_DENY


def decision(
    tool: str, outcome: Outcome, check: Check | None, *, keys=("invoice_id",), tenant: str = "acme"
) -> Decision:
    return Decision(
        decision_id=new_decision_id(),
        outcome=outcome,
        check=check,
        reason="r",
        tenant=tenant,
        agent="agent-7",
        token_id="t" * 64,
        jti="j1",
        tool=tool,
        rpc_method="tools/call",
        arguments_sha256="0" * 64,
        argument_keys=keys,
    )


async def test_dry_run_replays_audited_calls_with_argument_keys_only(admin: Admin) -> None:
    now_ms = int(time.time() * 1000)
    decisions = [
        decision("read_invoice", Outcome.ALLOW, None),
        decision("delete_invoice", Outcome.DENY, Check.POLICY),
        decision("read_invoice", Outcome.DENY, Check.CAPABILITY),  # never reached the policy: skipped
        decision("transfer_funds", Outcome.DENY, Check.POLICY, keys=("amount", "iban")),
    ]
    await admin.store.append_events([("acme", event_from_decision(d, time_ms=now_ms)) for d in decisions])
    allow_all = await admin.policies.DryRunPolicy(
        policy_pb.DryRunPolicyRequest(tenant="acme", source=ALLOW_ALL, replay_last=3), metadata=auth(ROOT)
    )
    assert allow_all.replayed and allow_all.evaluated == 3 and not allow_all.results
    changed = {c.input["tool"]: c for c in allow_all.changes}
    assert set(changed) == {"delete_invoice", "transfer_funds"}
    transfer = changed["transfer_funds"]
    assert dict(transfer.input["arguments"]) == {"amount": None, "iban": None}  # keys, never values
    assert transfer.recorded_decision == "deny" and transfer.audit_seq > 0 and transfer.decision_id
    assert transfer.input["agent"] == "agent-7"


async def test_promote_history_and_rollback(admin: Admin) -> None:
    await admin.store.put_tenant("rolling", TenantSettings())
    for source in (POLICY, ALLOW_ALL):
        await admin.policies.PromotePolicy(
            policy_pb.PromotePolicyRequest(tenant="rolling", source=source), metadata=auth(ROOT)
        )
    history = await admin.policies.ListPolicyHistory(
        policy_pb.ListPolicyHistoryRequest(tenant="rolling"), metadata=auth(ROOT)
    )
    assert [(v.version, v.active, v.source) for v in history.versions] == [(2, True, ""), (1, False, "")]
    rolled = await admin.policies.RollbackPolicy(
        policy_pb.RollbackPolicyRequest(tenant="rolling"), metadata=auth(ROOT)
    )
    assert (rolled.policy.version, rolled.previous_version, rolled.policy.content_hash) == (
        1,
        2,
        policy_hash(POLICY),
    )
    active = await admin.policies.GetActivePolicy(
        policy_pb.GetActivePolicyRequest(tenant="rolling"), metadata=auth(ROOT)
    )
    assert active.policy.version == 1 and active.policy.source == POLICY
    code, _ = await failure(
        admin.policies.RollbackPolicy(policy_pb.RollbackPolicyRequest(tenant="rolling"), metadata=auth(ROOT))
    )
    assert code is grpc.StatusCode.FAILED_PRECONDITION  # nothing below v1
    code, _ = await failure(
        admin.policies.RollbackPolicy(
            policy_pb.RollbackPolicyRequest(tenant="rolling", version=9), metadata=auth(ROOT)
        )
    )
    assert code is grpc.StatusCode.NOT_FOUND
    again = await admin.policies.RollbackPolicy(
        policy_pb.RollbackPolicyRequest(tenant="rolling", version=2), metadata=auth(ROOT)
    )
    assert again.policy.version == 2
    code, _ = await failure(
        admin.policies.GetActivePolicy(
            policy_pb.GetActivePolicyRequest(tenant="globex2"), metadata=auth(ROOT)
        )
    )
    assert code is grpc.StatusCode.NOT_FOUND


# -- approvals --------------------------------------------------------------------------------------
def an_approval(
    approval_id: str, *, quorum: int = 1, expires_in: float = 900, tenant: str = "acme"
) -> Approval:
    now = time.time()
    return Approval(
        approval_id=approval_id,
        tenant=tenant,
        agent="agent-1",
        tool="transfer_funds",
        arguments_sha256="ab" * 32,
        reason="big transfer",
        status="pending",
        quorum=quorum,
        created_at=now,
        expires_at=now + expires_in,
        decision_id="d-" + approval_id,
    )


async def test_quorum_needs_distinct_operators(admin: Admin) -> None:
    await admin.store.create_approval(an_approval("q2", quorum=2))
    op1 = await admin.new_key(keys_pb.ROLE_OPERATOR, "acme", "op-one")
    op2 = await admin.new_key(keys_pb.ROLE_OPERATOR, "acme", "op-two")
    approve = approvals_pb.DecideApprovalRequest(
        tenant="acme", approval_id="q2", verdict=approvals_pb.VERDICT_APPROVE, note="ok"
    )
    first = await admin.approvals.DecideApproval(approve, metadata=auth(op1))
    assert (first.approval.status, first.approval.approvals) == (approvals_pb.APPROVAL_STATUS_PENDING, 1)
    code, _ = await failure(admin.approvals.DecideApproval(approve, metadata=auth(op1)))
    assert code is grpc.StatusCode.FAILED_PRECONDITION  # the same operator twice does not count
    second = await admin.approvals.DecideApproval(approve, metadata=auth(op2))
    assert second.approval.status == approvals_pb.APPROVAL_STATUS_APPROVED
    assert [d.operator.split(" ")[0] for d in second.approval.decisions] == ["op-one", "op-two"]
    code, _ = await failure(admin.approvals.DecideApproval(approve, metadata=auth(ROOT)))
    assert code is grpc.StatusCode.FAILED_PRECONDITION  # decided already
    event = [e for e in await admin_events(admin.store, "acme") if e["action"] == "approval.decide"][-1]
    assert event["details"]["status"] == "approved" and event["actor"].startswith("op-two")


async def test_reject_expiry_listing_and_validation(admin: Admin) -> None:
    await admin.store.create_approval(an_approval("rej"))
    await admin.store.create_approval(an_approval("old", expires_in=-1))
    reject = approvals_pb.DecideApprovalRequest(
        tenant="acme", approval_id="rej", verdict=approvals_pb.VERDICT_REJECT, note="no"
    )
    rejected = await admin.approvals.DecideApproval(reject, metadata=auth(ROOT))
    assert rejected.approval.status == approvals_pb.APPROVAL_STATUS_REJECTED
    late = approvals_pb.DecideApprovalRequest(
        tenant="acme", approval_id="old", verdict=approvals_pb.VERDICT_APPROVE
    )
    code, status = await failure(admin.approvals.DecideApproval(late, metadata=auth(ROOT)))
    assert code is grpc.StatusCode.FAILED_PRECONDITION and "expired" in status.message
    got = await admin.approvals.GetApproval(
        approvals_pb.GetApprovalRequest(tenant="acme", approval_id="old"), metadata=auth(ROOT)
    )
    assert got.approval.status == approvals_pb.APPROVAL_STATUS_EXPIRED

    expired = await admin.approvals.ListApprovals(
        approvals_pb.ListApprovalsRequest(tenant="acme", status=approvals_pb.APPROVAL_STATUS_EXPIRED),
        metadata=auth(ROOT),
    )
    assert "old" in {a.approval_id for a in expired.approvals}
    assert all(a.status == approvals_pb.APPROVAL_STATUS_EXPIRED for a in expired.approvals)
    pending = await admin.approvals.ListApprovals(
        approvals_pb.ListApprovalsRequest(status=approvals_pb.APPROVAL_STATUS_PENDING), metadata=auth(ROOT)
    )
    assert "old" not in {a.approval_id for a in pending.approvals}

    no_verdict = approvals_pb.DecideApprovalRequest(tenant="acme", approval_id="rej")
    code, _ = await failure(admin.approvals.DecideApproval(no_verdict, metadata=auth(ROOT)))
    assert code is grpc.StatusCode.INVALID_ARGUMENT
    missing = approvals_pb.GetApprovalRequest(tenant="acme", approval_id="nope")
    code, _ = await failure(admin.approvals.GetApproval(missing, metadata=auth(ROOT)))
    assert code is grpc.StatusCode.NOT_FOUND


# -- tenants and budgets ----------------------------------------------------------------------------
async def test_create_tenant_and_update_settings(admin: Admin) -> None:
    settings = tenants_pb.TenantSettings(
        intent_mode=tenants_pb.INTENT_MODE_ENFORCE,
        require_prompt=True,
        tool_costs={"transfer_funds": 5},
        budget_rules=[
            tenants_pb.BudgetRule(
                scope=tenants_pb.BUDGET_SCOPE_AGENT, window=tenants_pb.BUDGET_WINDOW_HOUR, max_calls=100
            )
        ],
    )
    settings.catalog.tools["read_invoice"].CopyFrom(
        tenants_pb.CatalogTool(description="read", verbs=["read", "show"], keywords=["invoice"])
    )
    created = await admin.tenants.CreateTenant(
        tenants_pb.CreateTenantRequest(tenant="initech", settings=settings), metadata=auth(ROOT)
    )
    assert created.tenant.name == "initech" and created.tenant.active_policy_version == 0
    stored = await admin.store.get_tenant("initech")
    assert stored.intent_mode == "enforce" and stored.budget_rules == (
        {"scope": "agent", "window": "hour", "max_calls": 100},
    )
    assert stored.catalog["tools"]["read_invoice"]["verbs"] == ["read", "show"]
    code, _ = await failure(
        admin.tenants.CreateTenant(tenants_pb.CreateTenantRequest(tenant="initech"), metadata=auth(ROOT))
    )
    assert code is grpc.StatusCode.ALREADY_EXISTS
    for name in ("_gateway", "has space", ""):
        code, _ = await failure(
            admin.tenants.CreateTenant(tenants_pb.CreateTenantRequest(tenant=name), metadata=auth(ROOT))
        )
        assert code is grpc.StatusCode.INVALID_ARGUMENT, name

    patch = tenants_pb.UpdateTenantSettingsRequest(
        tenant="initech",
        settings=tenants_pb.TenantSettings(intent_mode=tenants_pb.INTENT_MODE_ADVISORY, require_prompt=False),
    )
    patch.update_mask.paths.append("intent_mode")
    updated = await admin.tenants.UpdateTenantSettings(patch, metadata=auth(ROOT))
    assert updated.settings.intent_mode == tenants_pb.INTENT_MODE_ADVISORY
    assert updated.settings.require_prompt  # not in the mask: unchanged
    assert (await admin.store.get_tenant("initech")).tool_costs == {"transfer_funds": 5.0}

    bad_rule = tenants_pb.UpdateTenantSettingsRequest(
        tenant="initech",
        settings=tenants_pb.TenantSettings(
            budget_rules=[
                tenants_pb.BudgetRule(
                    scope=tenants_pb.BUDGET_SCOPE_TENANT, window=tenants_pb.BUDGET_WINDOW_DAY
                )
            ]
        ),
    )
    bad_rule.update_mask.paths.append("budget_rules")
    code, status = await failure(admin.tenants.UpdateTenantSettings(bad_rule, metadata=auth(ROOT)))
    assert code is grpc.StatusCode.INVALID_ARGUMENT and "max_calls or max_cost" in status.message
    for field, value in (("approval_webhook_url", "ftp://x"), ("nonsense", None)):
        request = tenants_pb.UpdateTenantSettingsRequest(tenant="initech")
        if value:
            setattr(request.settings, field, value)
        request.update_mask.paths.append(field)
        code, _ = await failure(admin.tenants.UpdateTenantSettings(request, metadata=auth(ROOT)))
        assert code is grpc.StatusCode.INVALID_ARGUMENT
    actions = [e["action"] for e in await admin_events(admin.store, "initech")]
    assert actions == ["tenant.create", "tenant.settings.update"]


async def test_list_tenants_summarizes_policy_approvals_and_recent_decisions(admin: Admin) -> None:
    await admin.store.put_tenant("summary", TenantSettings())
    await admin.store.promote_policy("summary", ALLOW_ALL, policy_hash(ALLOW_ALL), "setup")
    await admin.store.create_approval(an_approval("s1", tenant="summary"))
    await admin.store.create_approval(
        an_approval("s2", tenant="summary", expires_in=-1)
    )  # expired: not counted
    now_ms = int(time.time() * 1000)
    outcomes = [(Outcome.ALLOW, None), (Outcome.ALLOW, None), (Outcome.DENY, Check.POLICY)]
    await admin.store.append_events(
        [
            ("summary", event_from_decision(decision("read_invoice", o, c, tenant="summary"), time_ms=now_ms))
            for o, c in outcomes
        ]
    )
    listed = await admin.tenants.ListTenants(tenants_pb.ListTenantsRequest(), metadata=auth(ROOT))
    summary = next(t for t in listed.tenants if t.name == "summary")
    assert (summary.active_policy_version, summary.active_policy_hash) == (1, policy_hash(ALLOW_ALL))
    assert summary.pending_approvals == 1
    assert (summary.last_hour.allow, summary.last_hour.deny, summary.last_hour.escalate) == (2, 1, 0)
    assert not summary.HasField("settings")
    scoped = await admin.new_key(keys_pb.ROLE_VIEWER, "summary", "summary-viewer")
    only = await admin.tenants.ListTenants(tenants_pb.ListTenantsRequest(), metadata=auth(scoped))
    assert [t.name for t in only.tenants] == ["summary"]


async def test_budgets_show_rules_and_current_usage(admin: Admin) -> None:
    rules = (
        {"scope": "tenant", "window": "hour", "max_calls": 1000},
        {"scope": "agent", "window": "day", "max_calls": 50, "max_cost": 500},
        {"scope": "agent", "agent": "vip", "window": "minute", "max_cost": 10},
    )
    await admin.store.put_tenant(
        "budgeted", TenantSettings(tool_costs={"transfer_funds": 5.0}, budget_rules=rules)
    )
    parsed = parse_rules(rules)
    now = time.time()
    for agent, cost in (("a1", 5.0), ("a1", 5.0), ("a2", 1.0), ("vip", 1.0)):
        result = await admin.store.reserve(rule_reservations("budgeted", agent, parsed, cost, now))
        assert result.ok
    answer = await admin.tenants.GetTenantBudgets(
        tenants_pb.GetTenantBudgetsRequest(tenant="budgeted"), metadata=auth(ROOT)
    )
    assert answer.tool_costs == {"transfer_funds": 5.0}
    tenant_rule, agent_rule, vip_rule = answer.rules
    assert [(u.kind, u.used, u.limit, u.agent) for u in tenant_rule.usage] == [("calls", 4.0, 1000.0, "")]
    assert tenant_rule.window_end.seconds - tenant_rule.window_start.seconds == 3600
    usage = {(u.agent, u.kind): u.used for u in agent_rule.usage}
    assert usage[("a1", "calls")] == 2 and usage[("a1", "cost")] == 10 and usage[("a2", "cost")] == 1
    assert [(u.agent, u.kind, u.used) for u in vip_rule.usage] == [("vip", "cost", 1.0)]
    one = await admin.tenants.GetTenantBudgets(
        tenants_pb.GetTenantBudgetsRequest(tenant="budgeted", agent="a2"), metadata=auth(ROOT)
    )
    assert {(u.agent, u.kind, u.used) for u in one.rules[1].usage} == {
        ("a2", "calls", 1.0),
        ("a2", "cost", 1.0),
    }


# -- audit ------------------------------------------------------------------------------------------
async def test_audit_query_paging_verify_export_and_checkpoints(admin: Admin) -> None:
    await admin.store.put_tenant("audited", TenantSettings())
    now_ms = int(time.time() * 1000)
    events = []
    for i in range(7):
        outcome, check = (Outcome.ALLOW, None) if i % 2 else (Outcome.DENY, Check.POLICY)
        d = decision("read_invoice", outcome, check, tenant="audited")
        events.append(("audited", event_from_decision(d, time_ms=now_ms + i)))
    await admin.store.append_events(events)

    seqs, token = [], ""
    while True:
        page = await admin.audit.QueryAuditEvents(
            audit_pb.QueryAuditEventsRequest(tenant="audited", page_size=3, page_token=token),
            metadata=auth(ROOT),
        )
        seqs += [e.seq for e in page.events]
        token = page.next_page_token
        if not token:
            break
    assert seqs == list(range(1, 8))
    denies = await admin.audit.QueryAuditEvents(
        audit_pb.QueryAuditEventsRequest(tenant="audited", decision=audit_pb.AUDIT_DECISION_DENY),
        metadata=auth(ROOT),
    )
    assert [e.seq for e in denies.events] == [1, 3, 5, 7]
    assert denies.events[0].event["tessera"]["tool"] == "read_invoice"

    verified = await admin.audit.VerifyAuditChain(
        audit_pb.VerifyAuditChainRequest(tenant="audited"), metadata=auth(ROOT)
    )
    assert verified.ok and verified.results[0].events_checked == 7

    ndjson = b"".join(
        [
            c.data
            async for c in admin.audit.ExportAuditEvents(
                audit_pb.ExportAuditEventsRequest(tenant="audited"), metadata=auth(ROOT)
            )
        ]
    )
    lines = ndjson.decode().splitlines()
    assert len(lines) == 7 and json.loads(lines[0])["seq"] == 1
    chunks = [
        c
        async for c in admin.audit.ExportAuditEvents(
            audit_pb.ExportAuditEventsRequest(tenant="audited", format=audit_pb.EXPORT_FORMAT_CSV),
            metadata=auth(ROOT),
        )
    ]
    assert chunks[0].content_type.startswith("text/csv")
    csv_text = b"".join(c.data for c in chunks).decode()
    assert csv_text.startswith("seq,time,tenant") and len(csv_text.strip().splitlines()) == 8

    checkpoint = (
        await admin.audit.CreateAuditCheckpoint(
            audit_pb.CreateAuditCheckpointRequest(tenant="audited"), metadata=auth(ROOT)
        )
    ).checkpoint
    assert checkpoint.seq == 7 and checkpoint.signature
    listed = await admin.audit.ListAuditCheckpoints(
        audit_pb.ListAuditCheckpointsRequest(tenant="audited"), metadata=auth(ROOT)
    )
    assert [c.seq for c in listed.checkpoints] == [7]
    pinned = await admin.audit.VerifyAuditChain(
        audit_pb.VerifyAuditChainRequest(tenant="audited", checkpoint=checkpoint.exported),
        metadata=auth(ROOT),
    )
    assert pinned.ok and pinned.results[0].checkpoints_checked >= 1
    everything = await admin.audit.VerifyAuditChain(audit_pb.VerifyAuditChainRequest(), metadata=auth(ROOT))
    assert everything.ok and {"_admin", "audited", "acme"} <= {r.tenant for r in everything.results}
    code, _ = await failure(
        admin.audit.CreateAuditCheckpoint(
            audit_pb.CreateAuditCheckpointRequest(tenant="empty-chain"), metadata=auth(ROOT)
        )
    )
    assert code is grpc.StatusCode.NOT_FOUND


# -- admin keys -------------------------------------------------------------------------------------
async def test_admin_keys_lifecycle_and_scope(admin: Admin) -> None:
    created = await admin.keys.CreateAdminKey(
        keys_pb.CreateAdminKeyRequest(name="globex-admin", role=keys_pb.ROLE_ADMIN, tenant="globex"),
        metadata=auth(ROOT),
    )
    secret = created.secret
    assert secret.startswith(f"tsk_{created.key.key_id}_") and created.key.tenant == "globex"
    stored = await admin.store.get_admin_key(created.key.key_id)
    assert stored.secret_sha256 == hash_key(secret) and secret not in repr(stored)
    listed = await admin.keys.ListAdminKeys(keys_pb.ListAdminKeysRequest(), metadata=auth(secret))
    assert {k.tenant for k in listed.keys} == {"globex"}  # a tenant admin sees its tenant's keys
    code, _ = await failure(
        admin.keys.CreateAdminKey(
            keys_pb.CreateAdminKeyRequest(name="x", role=keys_pb.ROLE_ADMIN), metadata=auth(secret)
        )
    )
    assert code is grpc.StatusCode.PERMISSION_DENIED  # an all-tenants key needs an all-tenants caller
    root_id = ROOT.split("_")[1]
    code, _ = await failure(
        admin.keys.RevokeAdminKey(keys_pb.RevokeAdminKeyRequest(key_id=root_id), metadata=auth(secret))
    )
    assert code is grpc.StatusCode.PERMISSION_DENIED
    code, status = await failure(
        admin.keys.RevokeAdminKey(keys_pb.RevokeAdminKeyRequest(key_id=root_id), metadata=auth(ROOT))
    )
    assert code is grpc.StatusCode.FAILED_PRECONDITION and "last" in status.message
    for bad in (
        keys_pb.CreateAdminKeyRequest(name="x"),
        keys_pb.CreateAdminKeyRequest(name="bad name", role=keys_pb.ROLE_VIEWER),
    ):
        code, _ = await failure(admin.keys.CreateAdminKey(bad, metadata=auth(ROOT)))
        assert code is grpc.StatusCode.INVALID_ARGUMENT
    events = await admin_events(admin.store, "globex")
    assert any(e["action"] == "admin_key.create" and secret not in json.dumps(e) for e in events)


# -- approval webhook -------------------------------------------------------------------------------
class Receiver:
    """A local HTTP endpoint that records what it gets; ``fail`` makes it answer 500."""

    def __init__(self) -> None:
        self.received: list[tuple[dict[str, str], bytes]] = []
        self.fail = False
        outer = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                body = self.rfile.read(int(self.headers["content-length"]))
                outer.received.append(({k.lower(): v for k, v in self.headers.items()}, body))
                self.send_response(500 if outer.fail else 204)
                self.end_headers()

            def log_message(self, *args: Any) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}/hook"
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self.thread.start()

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


#: Webhook receivers in these tests listen on loopback, which only an operator allowlist permits.
LOOPBACK = OutboundPolicy.build(["127.0.0.0/8"])


async def test_webhook_posts_pending_approvals_signed_at_least_once(admin: Admin) -> None:
    receiver = Receiver()
    try:
        await admin.store.put_tenant("hooked", TenantSettings(approval_webhook_url=receiver.url))
        secret = await admin.tenants.GetWebhookSecret(
            tenants_pb.GetWebhookSecretRequest(tenant="hooked"), metadata=auth(ROOT)
        )
        key = bytes.fromhex(secret.secret_hex)
        assert key == admin.keyring.derive_subkey(KEY_PURPOSE, "hooked")
        clock = [time.time()]
        notifier = ApprovalNotifier(
            admin.store,
            lambda t: admin.keyring.derive_subkey(KEY_PURPOSE, t),
            retry_s=5,
            clock=lambda: clock[0],
            outbound=OutboundClient(LOOPBACK, timeout_s=5),  # the receiver listens on loopback
        )
        await admin.store.create_approval(an_approval("hook-1", tenant="hooked"))
        receiver.fail = True
        assert await notifier.poll_once() == 0 and len(receiver.received) == 1
        assert await notifier.poll_once() == 0 and len(receiver.received) == 1  # backing off
        receiver.fail = False
        clock[0] += 6
        assert await notifier.poll_once() == 1 and len(receiver.received) == 2
        clock[0] += 600
        assert await notifier.poll_once() == 0 and len(receiver.received) == 2  # delivered: done
        headers, body = receiver.received[-1]
        assert verify_signature(key, body, headers[secret.header])
        assert not verify_signature(key, body + b" ", headers[secret.header])
        payload = json.loads(body)
        assert (payload["type"], payload["approval_id"], payload["tenant"]) == (
            "approval.pending",
            "hook-1",
            "hooked",
        )
        assert headers["x-tessera-delivery"] == "hook-1"
    finally:
        receiver.close()


async def test_webhook_failures_never_escape_the_notifier(admin: Admin) -> None:
    await admin.store.put_tenant(
        "deadhook", TenantSettings(approval_webhook_url="http://127.0.0.1:9/nothing")
    )
    await admin.store.create_approval(an_approval("dead-1", tenant="deadhook"))
    notifier = ApprovalNotifier(
        admin.store,
        lambda t: b"k" * 32,
        poll_interval_s=0.01,
        outbound=OutboundClient(OutboundPolicy.build(["127.0.0.1:9"]), timeout_s=0.5),
    )
    task = asyncio.create_task(notifier.run())
    await asyncio.sleep(0.3)
    assert not task.done() and notifier.failed >= 1
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
