"""The admin access table: every RPC has a rule, and the rules say what the contract says."""

from __future__ import annotations

import pytest
from google.protobuf import descriptor_pb2

from authz.admin.keys import Principal, generate_key, hash_key, new_admin_key, parse_key, role_at_least
from authz.api import generate
from authz.api.admin.v1 import admin_key_service_pb2, tenant_service_pb2, token_service_pb2
from authz.errors import ConfigError, InvalidArgument, PermissionDenied
from authz.secrets import Secret
from authz.server.admin.access import RULES, Rule
from authz.token import KeyRing, mint

# The contract (issue "roles"): viewer reads; operator also decides approvals, revokes tokens and signs
# checkpoints; admin does everything; "admin*" needs the all-tenants scope.
EXPECTED = {
    "TokenService": {
        "MintToken": "admin",
        "AttenuateToken": "viewer",
        "InspectToken": "viewer",
        "RevokeToken": "operator",
        "ListRevocations": "viewer",
    },
    "PolicyService": {
        "CreateDraft": "admin",
        "UpdateDraft": "admin",
        "GetDraft": "viewer",
        "ListDrafts": "viewer",
        "DeleteDraft": "admin",
        "ValidatePolicy": "viewer",
        "DryRunPolicy": "viewer",
        "PromotePolicy": "admin",
        "RollbackPolicy": "admin",
        "GetActivePolicy": "viewer",
        "ListPolicyHistory": "viewer",
    },
    "ApprovalService": {"ListApprovals": "viewer", "GetApproval": "viewer", "DecideApproval": "operator"},
    "TenantService": {
        "CreateTenant": "admin*",
        "ListTenants": "viewer",
        "GetTenant": "viewer",
        "UpdateTenantSettings": "admin",
        "GetTenantBudgets": "viewer",
        "GetWebhookSecret": "admin",
    },
    "AuditService": {
        "QueryAuditEvents": "viewer",
        "VerifyAuditChain": "viewer",
        "ExportAuditEvents": "viewer",
        "CreateAuditCheckpoint": "operator",
        "ListAuditCheckpoints": "viewer",
    },
    "AdminKeyService": {"CreateAdminKey": "admin", "ListAdminKeys": "admin", "RevokeAdminKey": "admin"},
    "IntegrationService": {"ForwarderHealth": "viewer", "ListDeadLetters": "viewer"},
    # Public: the request carries its own credential (an OAuth access token), no admin key.
    "TokenExchangeService": {"ExchangeToken": "public"},
    "IntentService": {
        "GetIntentSettings": "viewer",
        "UpdateIntentSettings": "admin",
        "RefreshIntentCatalog": "operator",
    },
    "ForwarderConfigService": {
        "CreateSink": "admin",
        "ListSinks": "viewer",
        "GetSink": "viewer",
        "UpdateSink": "admin",
        "DeleteSink": "admin",
        "CreateNotificationRoute": "admin",
        "ListNotificationRoutes": "viewer",
        "GetNotificationRoute": "viewer",
        "UpdateNotificationRoute": "admin",
        "DeleteNotificationRoute": "admin",
        "ReplayDeadLetter": "operator",
    },
    "MemoryWriterService": {
        "RegisterMemoryWriter": "admin",
        "ListMemoryWriters": "viewer",
        "DisableMemoryWriter": "admin",
        "RotateMemoryWriter": "admin",
    },
    # Public keys: no admin key at all (a tool server fetches them with nothing but the gateway URL).
    "ReceiptKeyService": {"GetReceiptKeys": "public"},
}


def _rpcs() -> set[str]:
    files = descriptor_pb2.FileDescriptorSet.FromString(generate.DESCRIPTOR.read_bytes()).file
    return {
        f"/{f.package}.{service.name}/{method.name}"
        for f in files
        if f.package == "authz.api.admin.v1"
        for service in f.service
        for method in service.method
    }


def test_every_rpc_has_exactly_the_expected_rule() -> None:
    expected = {
        f"/authz.api.admin.v1.{s}/{m}": role for s, methods in EXPECTED.items() for m, role in methods.items()
    }
    assert _rpcs() == set(expected) == set(RULES)
    for method, role in expected.items():
        assert RULES[method].role == role.rstrip("*"), method
        assert (RULES[method].scope == "global") == role.endswith("*"), method


def test_only_the_token_exchange_and_the_receipt_keys_are_public() -> None:
    assert {m for m, rule in RULES.items() if rule.public} == {
        "/authz.api.admin.v1.TokenExchangeService/ExchangeToken",
        "/authz.api.admin.v1.ReceiptKeyService/GetReceiptKeys",
    }
    with pytest.raises(ValueError):
        Rule("viewer", "public")
    with pytest.raises(ValueError):
        Rule("public", "tenant")


def P(role: str, tenant: str | None) -> Principal:
    return Principal("kid", "name", role, tenant)


@pytest.mark.parametrize(
    ("role", "needed", "ok"),
    [
        ("viewer", "viewer", True),
        ("viewer", "operator", False),
        ("operator", "viewer", True),
        ("admin", "operator", True),
    ],
)
def test_roles_are_ordered(role: str, needed: str, ok: bool) -> None:
    assert role_at_least(role, needed) is ok


def test_tenant_scope_rules() -> None:
    rule = Rule("viewer", "tenant")
    rule.check(P("viewer", "acme"), "GetTenant", tenant_service_pb2.GetTenantRequest(tenant="acme"))
    rule.check(P("viewer", None), "GetTenant", tenant_service_pb2.GetTenantRequest(tenant="acme"))
    with pytest.raises(PermissionDenied) as denied:
        rule.check(P("admin", "globex"), "GetTenant", tenant_service_pb2.GetTenantRequest(tenant="acme"))
    assert denied.value.reason == "TENANT_SCOPE"
    with pytest.raises(InvalidArgument):
        rule.check(P("admin", None), "GetTenant", tenant_service_pb2.GetTenantRequest())
    with pytest.raises(PermissionDenied) as denied:
        Rule("admin", "tenant").check(
            P("operator", "acme"), "X", tenant_service_pb2.GetTenantRequest(tenant="acme")
        )
    assert denied.value.reason == "ROLE_INSUFFICIENT"


def test_global_and_key_tenant_scopes_need_all_tenants_for_global_things() -> None:
    Rule("admin", "global").check(
        P("admin", None), "CreateTenant", tenant_service_pb2.CreateTenantRequest(tenant="x")
    )
    with pytest.raises(PermissionDenied):
        Rule("admin", "global").check(
            P("admin", "x"), "CreateTenant", tenant_service_pb2.CreateTenantRequest(tenant="x")
        )
    rule = Rule("admin", "key_tenant")
    rule.check(
        P("admin", "acme"), "CreateAdminKey", admin_key_service_pb2.CreateAdminKeyRequest(tenant="acme")
    )
    with pytest.raises(PermissionDenied):
        rule.check(P("admin", "acme"), "CreateAdminKey", admin_key_service_pb2.CreateAdminKeyRequest())


def test_token_scope_reads_the_tenant_inside_the_token() -> None:
    token = mint(KeyRing(Secret("k" * 40)), tenant="acme")
    rule = Rule("viewer", "token")
    rule.check(P("viewer", "acme"), "InspectToken", token_service_pb2.InspectTokenRequest(token=token))
    with pytest.raises(PermissionDenied):
        rule.check(P("viewer", "globex"), "InspectToken", token_service_pb2.InspectTokenRequest(token=token))
    revoke = Rule("operator", "revoke")
    with pytest.raises(PermissionDenied):
        revoke.check(
            P("operator", "globex"), "RevokeToken", token_service_pb2.RevokeTokenRequest(token=token)
        )
    with pytest.raises(InvalidArgument):
        revoke.check(P("operator", None), "RevokeToken", token_service_pb2.RevokeTokenRequest(jti="j"))


def test_key_format_and_hashing() -> None:
    key_id, key = generate_key()
    assert parse_key(key) == key_id and len(key_id) == 12
    assert parse_key("tsk_short_x") is None and parse_key(key + " ") is None
    record, secret = new_admin_key("alice", "operator", "acme", "root")
    assert record.secret_sha256 == hash_key(secret) and secret not in repr(record)
    given, same = new_admin_key("boot", "admin", None, "bootstrap", key=key)
    assert (given.key_id, same) == (key_id, key)
    with pytest.raises(ConfigError):
        new_admin_key("boot", "admin", None, "bootstrap", key="not-a-key")
    with pytest.raises(InvalidArgument):
        new_admin_key("alice", "root", None, "x")
