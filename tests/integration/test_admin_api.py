"""The admin API on the running stack: one table of cases over gRPC and over REST through Envoy, the
role/scope matrix, REST specifics (transcoder), and ``buf curl`` with server reflection."""

from __future__ import annotations

import base64
import json
import secrets
import shutil
import subprocess
import sys
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import grpc
import httpx
import pytest

from authz.api.admin.v1 import token_service_pb2, token_service_pb2_grpc
from authz.policy import default_policy_source
from authz.server.admin.access import RULES
from authz.server.status import HTTP_STATUS

if TYPE_CHECKING:
    from tests.integration.admin_support import AdminGateway

# The session stack (admin_gateway fixture), shared with the other test_admin* modules.
pytest_plugins = ["tests.integration.admin_support"]

OK = grpc.StatusCode.OK
ALLOW_ALL = 'package tessera\n\nimport rego.v1\n\ndecision := {"allow": true, "reason": "all"}\n'
BROKEN = 'package tessera\n\nimport rego.v1\n\ndecision := {"allow": true\n'


@pytest.fixture(scope="module")
def env(admin_gateway: AdminGateway) -> dict[str, Any]:
    """Tenants and keys the cases refer to by name."""
    gw = admin_gateway
    for tenant in ("cases", "matrix", "other"):
        gw.ok("TenantService/CreateTenant", {"tenant": tenant})
    gw.ok("PolicyService/PromotePolicy", {"tenant": "matrix", "source": default_policy_source()})
    gw.ok("PolicyService/PromotePolicy", {"tenant": "matrix", "source": ALLOW_ALL})
    gw.ok("PolicyService/CreateDraft", {"tenant": "matrix", "name": "base", "source": ALLOW_ALL})
    keys = {
        "root": gw.root,
        "viewer@demo": gw.new_key("viewer", "demo", "demo-viewer"),
        "admin@other": gw.new_key("admin", "other", "other-admin"),
        "viewer@matrix": gw.new_key("viewer", "matrix", "matrix-viewer"),
        "operator@matrix": gw.new_key("operator", "matrix", "matrix-operator"),
        "admin@matrix": gw.new_key("admin", "matrix", "matrix-admin"),
        "none": None,
        "wrong": "tsk_000000000000_" + "x" * 40,
    }
    tokens = {
        "demo": gw.ok("TokenService/MintToken", {"tenant": "demo", "agent": "a", "ttl_seconds": 3600}).token,
        "matrix": gw.ok(
            "TokenService/MintToken", {"tenant": "matrix", "agent": "a", "ttl_seconds": 3600}
        ).token,
    }
    return {"keys": keys, "tokens": tokens}


# -- one table, two transports ------------------------------------------------------------------------
@dataclass(frozen=True)
class Case:
    name: str
    rpc: str
    request: dict[str, Any] | Callable[[dict[str, Any], str], dict[str, Any]]
    code: grpc.StatusCode = OK
    http: int = 200
    key: str = "root"
    reason: str | None = None
    same_answer: bool = False  # deterministic read: REST and gRPC must answer alike

    def build(self, env: dict[str, Any], transport: str) -> dict[str, Any]:
        return self.request(env, transport) if callable(self.request) else self.request


C = grpc.StatusCode
# A public address literal: vetted by the outbound rules without DNS, never connected to.
PUBLIC_URL = "https://93.184.216.34/tessera"
CASES = [
    Case("list tenants", "TenantService/ListTenants", {}, same_answer=True),
    Case("get tenant", "TenantService/GetTenant", {"tenant": "demo"}, same_answer=True),
    Case(
        "unknown tenant",
        "TenantService/GetTenant",
        {"tenant": "nobody"},
        C.NOT_FOUND,
        404,
        reason="TENANT_NOT_FOUND",
    ),
    Case("malformed tenant", "TenantService/GetTenant", {"tenant": "a|b"}, C.INVALID_ARGUMENT, 400),
    Case(
        "create existing tenant",
        "TenantService/CreateTenant",
        {"tenant": "demo"},
        C.ALREADY_EXISTS,
        409,
        reason="TENANT_EXISTS",
    ),
    Case(
        "create reserved tenant",
        "TenantService/CreateTenant",
        {"tenant": "_gateway"},
        C.INVALID_ARGUMENT,
        400,
    ),
    Case(
        "settings: unknown field in mask",
        "TenantService/UpdateTenantSettings",
        {"tenant": "cases", "update_mask": "nonsense"},
        C.INVALID_ARGUMENT,
        400,
    ),
    Case(
        "settings: bad budget rule",
        "TenantService/UpdateTenantSettings",
        {
            "tenant": "cases",
            "settings": {"budget_rules": [{"scope": "BUDGET_SCOPE_TENANT", "window": "BUDGET_WINDOW_DAY"}]},
            "update_mask": "budgetRules",
        },
        C.INVALID_ARGUMENT,
        400,
    ),
    Case("budgets", "TenantService/GetTenantBudgets", {"tenant": "demo"}),
    Case(
        "no key",
        "TenantService/ListTenants",
        {},
        C.UNAUTHENTICATED,
        401,
        key="none",
        reason="ADMIN_KEY_MISSING",
    ),
    Case(
        "unknown key",
        "TenantService/ListTenants",
        {},
        C.UNAUTHENTICATED,
        401,
        key="wrong",
        reason="ADMIN_KEY_INVALID",
    ),
    Case(
        "viewer cannot mint",
        "TokenService/MintToken",
        {"tenant": "demo"},
        C.PERMISSION_DENIED,
        403,
        key="viewer@demo",
        reason="ROLE_INSUFFICIENT",
    ),
    Case(
        "key of another tenant",
        "TenantService/GetTenant",
        {"tenant": "demo"},
        C.PERMISSION_DENIED,
        403,
        key="admin@other",
        reason="TENANT_SCOPE",
    ),
    Case(
        "mint",
        "TokenService/MintToken",
        {"tenant": "demo", "agent": "x", "ttl_seconds": 60, "tools": ["read_invoice"]},
    ),
    Case(
        "mint with a bad caveat",
        "TokenService/MintToken",
        {"tenant": "demo", "caveats": ["frobnicate = 1"]},
        C.INVALID_ARGUMENT,
        400,
    ),
    Case("mint for an unknown tenant", "TokenService/MintToken", {"tenant": "nobody"}, C.NOT_FOUND, 404),
    Case(
        "inspect", "TokenService/InspectToken", lambda e, t: {"token": e["tokens"]["demo"]}, same_answer=True
    ),
    Case("inspect garbage", "TokenService/InspectToken", {"token": "garbage!"}, C.INVALID_ARGUMENT, 400),
    Case("revoke needs one target", "TokenService/RevokeToken", {"tenant": "demo"}, C.INVALID_ARGUMENT, 400),
    Case("revocations", "TokenService/ListRevocations", {"tenant": "demo"}, same_answer=True),
    Case("active policy", "PolicyService/GetActivePolicy", {"tenant": "demo"}, same_answer=True),
    Case(
        "no active policy",
        "PolicyService/GetActivePolicy",
        {"tenant": "cases"},
        C.NOT_FOUND,
        404,
        reason="NO_ACTIVE_POLICY",
    ),
    Case(
        "policy history",
        "PolicyService/ListPolicyHistory",
        {"tenant": "demo", "include_source": True},
        same_answer=True,
    ),
    Case(
        "validate a broken policy",
        "PolicyService/ValidatePolicy",
        {"tenant": "demo", "source": BROKEN},
        same_answer=True,
    ),
    Case(
        "validate needs a source", "PolicyService/ValidatePolicy", {"tenant": "demo"}, C.INVALID_ARGUMENT, 400
    ),
    Case(
        "promote a broken policy",
        "PolicyService/PromotePolicy",
        {"tenant": "cases", "source": BROKEN},
        C.INVALID_ARGUMENT,
        400,
        reason="POLICY_COMPILE_ERROR",
    ),
    Case(
        "rollback without history",
        "PolicyService/RollbackPolicy",
        {"tenant": "cases"},
        C.FAILED_PRECONDITION,
        400,
    ),
    Case(
        "create draft",
        "PolicyService/CreateDraft",
        lambda e, t: {"tenant": "cases", "name": f"d-{t}", "source": ALLOW_ALL},
    ),
    Case(
        "create draft twice",
        "PolicyService/CreateDraft",
        lambda e, t: {"tenant": "cases", "name": f"d-{t}", "source": "x"},
        C.ALREADY_EXISTS,
        409,
    ),
    Case(
        "missing draft",
        "PolicyService/GetDraft",
        {"tenant": "cases", "name": "none"},
        C.NOT_FOUND,
        404,
        reason="DRAFT_NOT_FOUND",
    ),
    Case(
        "dry-run",
        "PolicyService/DryRunPolicy",
        {
            "tenant": "demo",
            "source": ALLOW_ALL,
            "inputs": [
                {"tool": "delete_invoice", "time": {"now": "2030-01-01T00:00:00Z", "unix": 1893456000}}
            ],
        },
        same_answer=True,
    ),
    Case(
        "pending approvals",
        "ApprovalService/ListApprovals",
        {"tenant": "demo", "status": "APPROVAL_STATUS_PENDING"},
    ),
    Case(
        "unknown approval",
        "ApprovalService/DecideApproval",
        {"tenant": "demo", "approval_id": "nope", "verdict": "VERDICT_APPROVE"},
        C.NOT_FOUND,
        404,
        reason="APPROVAL_NOT_FOUND",
    ),
    Case(
        "decide without verdict",
        "ApprovalService/DecideApproval",
        {"tenant": "demo", "approval_id": "nope"},
        C.INVALID_ARGUMENT,
        400,
    ),
    Case("audit page", "AuditService/QueryAuditEvents", {"tenant": "demo", "page_size": 3}, same_answer=True),
    Case(
        "audit page too large",
        "AuditService/QueryAuditEvents",
        {"tenant": "demo", "page_size": 5000},
        C.INVALID_ARGUMENT,
        400,
    ),
    Case("verify chain", "AuditService/VerifyAuditChain", {"tenant": "cases"}),
    Case("checkpoints", "AuditService/ListAuditCheckpoints", {"tenant": "demo"}, same_answer=True),
    Case("list keys", "AdminKeyService/ListAdminKeys", {}, same_answer=True),
    Case("forwarder health", "IntegrationService/ForwarderHealth", {"tenant": "demo"}, same_answer=True),
    Case("dead letters", "IntegrationService/ListDeadLetters", {}, same_answer=True),
    Case("intent settings", "IntentService/GetIntentSettings", {"tenant": "cases"}, same_answer=True),
    Case(
        "intent refresh interval too short",
        "IntentService/UpdateIntentSettings",
        {"tenant": "cases", "settings": {"refresh_interval_s": 3}, "update_mask": "refreshIntervalS"},
        C.INVALID_ARGUMENT,
        400,
    ),
    Case(
        "refresh without tools_url",
        "IntentService/RefreshIntentCatalog",
        {"tenant": "cases"},
        C.FAILED_PRECONDITION,
        400,
        reason="NO_TOOLS_URL",
    ),
    Case(
        "intent settings of a server the tenant lacks",
        "IntentService/GetIntentSettings",
        {"tenant": "cases", "server": "payroll"},
        C.NOT_FOUND,
        404,
        reason="SERVER_NOT_FOUND",
    ),
    Case(
        "refresh of a server the tenant lacks",
        "IntentService/RefreshIntentCatalog",
        {"tenant": "cases", "server": "payroll"},
        C.NOT_FOUND,
        404,
        reason="SERVER_NOT_FOUND",
    ),
    Case(
        "create a sink",
        "ForwarderConfigService/CreateSink",
        lambda e, t: {
            "tenant": "cases",
            "sink": {
                "name": f"soc-{t}",
                "kind": "webhook",
                "options": {"url": PUBLIC_URL},
                "secret": "soc-key",
            },
        },
    ),
    Case(
        "a sink of an unknown kind",
        "ForwarderConfigService/CreateSink",
        {"tenant": "cases", "sink": {"name": "x", "kind": "kafka", "secret": "k"}},
        C.INVALID_ARGUMENT,
        400,
        reason="FORWARDER_CONFIG_INVALID",
    ),
    Case(
        "a sink URL the outbound rules refuse",
        "ForwarderConfigService/CreateSink",
        {
            "tenant": "cases",
            "sink": {
                "name": "x",
                "kind": "splunk",
                "options": {"url": "http://10.0.0.1:8088"},
                "secret": "k",
            },
        },
        C.INVALID_ARGUMENT,
        400,
        reason="OUTBOUND_REFUSED",
    ),
    Case(
        "missing sink",
        "ForwarderConfigService/GetSink",
        {"tenant": "cases", "name": "none"},
        C.NOT_FOUND,
        404,
        reason="SINK_NOT_FOUND",
    ),
    Case(
        "create a notification route",
        "ForwarderConfigService/CreateNotificationRoute",
        lambda e, t: {
            "tenant": "cases",
            "route": {
                "name": f"oncall-{t}",
                "kind": "slack",
                "secret": "slack-url",
                "match": {"decisions": ["deny"], "codes": [-32010]},
                "rate": {"more_than": 5, "minutes": 10},
            },
        },
    ),
    Case(
        "replay an unknown dead letter",
        "ForwarderConfigService/ReplayDeadLetter",
        {"tenant": "cases", "id": 987654},
        C.NOT_FOUND,
        404,
        reason="DEAD_LETTER_NOT_FOUND",
    ),
    Case(
        "revoke the last admin key",
        "AdminKeyService/RevokeAdminKey",
        lambda e, t: {"key_id": e["keys"]["root"].split("_")[1]},
        C.FAILED_PRECONDITION,
        400,
    ),
    Case("revoke an unknown key", "AdminKeyService/RevokeAdminKey", {"key_id": "nope"}, C.NOT_FOUND, 404),
    Case(
        "create key without role",
        "AdminKeyService/CreateAdminKey",
        {"name": "x", "tenant": "cases"},
        C.INVALID_ARGUMENT,
        400,
    ),
]


def test_the_table_names_one_http_status_per_code() -> None:
    for case in CASES:
        assert HTTP_STATUS[case.code] == case.http if case.code is not OK else case.http == 200, case.name


@pytest.mark.parametrize("transport", ["grpc", "rest"])
@pytest.mark.parametrize("case", CASES, ids=[c.name for c in CASES])
def test_admin_case(admin_gateway: AdminGateway, env: dict[str, Any], case: Case, transport: str) -> None:
    result = admin_gateway.call(transport, case.rpc, case.build(env, transport), env["keys"][case.key])
    assert result.code is case.code, (result.code, result.status, result.raw)
    if transport == "rest":
        assert result.http == case.http, result.raw
    if case.code is not OK:
        assert result.status is not None and result.status.message
        assert result.reason is not None  # every error carries google.rpc.ErrorInfo, on REST too
        if case.reason:
            assert result.reason == case.reason


@pytest.mark.parametrize(
    "case", [c for c in CASES if c.same_answer], ids=[c.name for c in CASES if c.same_answer]
)
def test_rest_and_grpc_give_the_same_answer(
    admin_gateway: AdminGateway, env: dict[str, Any], case: Case
) -> None:
    key = env["keys"][case.key]
    over_grpc = admin_gateway.grpc(case.rpc, case.build(env, "grpc"), key)
    over_rest = admin_gateway.rest(case.rpc, case.build(env, "rest"), key)
    assert over_grpc.code is over_rest.code is OK
    assert over_rest.message == over_grpc.message


def test_the_demo_tenant_derives_its_catalog_from_the_stacks_demo_server(admin_gateway: AdminGateway) -> None:
    """The demo tenants file points `tools_url` at the stack's own demo MCP server; an operator's
    refresh over REST (through Envoy's transcoder) fetches its tools/list with the mcp SDK client."""
    settings = admin_gateway.rest("IntentService/GetIntentSettings", {"tenant": "demo"})
    assert settings.code is OK
    assert settings.message.settings.tools_url == admin_gateway.stack.upstream_url + "/mcp"
    refreshed = admin_gateway.rest("IntentService/RefreshIntentCatalog", {"tenant": "demo"})
    assert refreshed.code is OK, refreshed.raw
    assert refreshed.message.outcome in ("updated", "unchanged")  # the check service may have been first
    catalog = refreshed.message.catalog
    assert catalog.fetched and catalog.upstream_tools == 4
    assert set(catalog.catalog_tools) == {"read_invoice", "list_invoices", "transfer_funds", "delete_invoice"}


def test_export_streams_the_same_file_over_both(admin_gateway: AdminGateway) -> None:
    for fmt, content_type in (
        ("EXPORT_FORMAT_NDJSON", "application/x-ndjson"),
        ("EXPORT_FORMAT_CSV", "text/csv"),
    ):
        request = {"tenant": "cases", "format": fmt}
        chunks = admin_gateway.ok("AuditService/ExportAuditEvents", request)
        over_grpc = b"".join(c.data for c in chunks).decode()
        over_rest = admin_gateway.rest("AuditService/ExportAuditEvents", request)
        assert over_rest.http == 200 and over_rest.message.startswith(content_type)
        assert over_rest.raw == over_grpc and over_grpc
    ndjson = admin_gateway.rest("AuditService/ExportAuditEvents", {"tenant": "cases"}).raw.splitlines()
    assert ndjson and all(json.loads(line)["tenant"] == "cases" for line in ndjson)


# -- REST specifics -----------------------------------------------------------------------------------
def test_rest_rejects_unknown_methods_and_query_parameters(admin_gateway: AdminGateway) -> None:
    headers = {"authorization": f"Bearer {admin_gateway.root}"}
    unknown = httpx.get(f"{admin_gateway.url}/v1/admin/nothing-here", headers=headers)
    assert unknown.status_code == 404
    wrong_verb = httpx.delete(f"{admin_gateway.url}/v1/admin/tenants", headers=headers)
    assert wrong_verb.status_code in (404, 405)
    bad_query = httpx.get(f"{admin_gateway.url}/v1/admin/tenants", params={"bogus": "1"}, headers=headers)
    assert bad_query.status_code == 400


def test_rest_errors_are_json_google_rpc_status(admin_gateway: AdminGateway) -> None:
    response = httpx.get(
        f"{admin_gateway.url}/v1/admin/tenants/nobody",
        headers={"authorization": f"Bearer {admin_gateway.root}"},
    )
    assert response.status_code == 404 and response.headers["content-type"].startswith("application/json")
    body = response.json()
    assert body["code"] == 5 and "nobody" in body["message"]
    (info,) = body["details"]
    assert info == {
        "@type": "type.googleapis.com/google.rpc.ErrorInfo",
        "reason": "TENANT_NOT_FOUND",
        "domain": "tessera.dev",
        "metadata": {"tenant": "nobody"},
    }


def test_compile_errors_over_rest_carry_line_and_column(
    admin_gateway: AdminGateway, env: dict[str, Any]
) -> None:
    result = admin_gateway.rest("PolicyService/PromotePolicy", {"tenant": "cases", "source": BROKEN})
    assert result.http == 400
    kinds = {d["@type"].rsplit("/", 1)[1]: d for d in result.raw["details"]}
    assert int(kinds["google.rpc.ErrorInfo"]["metadata"]["line"]) >= 5
    violations = kinds["google.rpc.BadRequest"]["field_violations"]
    assert violations and violations[0]["field"] == "source" and ":" in violations[0]["description"]


def test_the_check_path_is_untouched_by_the_admin_routes(admin_gateway: AdminGateway) -> None:
    gw = admin_gateway.gateway
    response = gw.call("read_invoice", {"invoice_id": "INV-1001"}, token=gw.token())
    assert response.status_code == 200 and "error" not in response.json()
    assert httpx.get(f"{gw.url}/v1/nope").status_code == 404


def test_grpc_through_envoy_reaches_the_admin_service(
    admin_gateway: AdminGateway, env: dict[str, Any]
) -> None:
    with grpc.insecure_channel(f"127.0.0.1:{admin_gateway.stack.ports.listen}") as channel:
        stub = token_service_pb2_grpc.TokenServiceStub(channel)
        answer = stub.InspectToken(
            token_service_pb2.InspectTokenRequest(token=env["tokens"]["demo"]),
            metadata=(("authorization", f"Bearer {admin_gateway.root}"),),
            timeout=10,
        )
        assert answer.tenant == "demo" and answer.signature_valid
        with pytest.raises(grpc.RpcError) as denied:
            stub.InspectToken(token_service_pb2.InspectTokenRequest(token=env["tokens"]["demo"]), timeout=10)
        assert denied.value.code() is grpc.StatusCode.UNAUTHENTICATED


# -- the role / scope matrix ----------------------------------------------------------------------------
def _fresh(prefix: str) -> str:
    return f"{prefix}-{secrets.token_hex(4)}"


def _matrix_requests(gw: AdminGateway, env: dict[str, Any]) -> dict[str, Callable[[], dict[str, Any]]]:
    t = "matrix"
    token = env["tokens"]["matrix"]
    return {
        "TokenService/MintToken": lambda: {"tenant": t, "ttl_seconds": 60},
        "TokenService/AttenuateToken": lambda: {"token": token, "caveats": ["tools = read_invoice"]},
        "TokenService/InspectToken": lambda: {"token": token},
        "TokenService/RevokeToken": lambda: {"tenant": t, "jti": _fresh("jti")},
        "TokenService/ListRevocations": lambda: {"tenant": t},
        "PolicyService/CreateDraft": lambda: {"tenant": t, "name": _fresh("d"), "source": ALLOW_ALL},
        "PolicyService/UpdateDraft": lambda: {"tenant": t, "name": "base", "source": ALLOW_ALL},
        "PolicyService/GetDraft": lambda: {"tenant": t, "name": "base"},
        "PolicyService/ListDrafts": lambda: {"tenant": t},
        "PolicyService/DeleteDraft": lambda: {"tenant": t, "name": _fresh("absent")},
        "PolicyService/ValidatePolicy": lambda: {"tenant": t, "source": ALLOW_ALL},
        "PolicyService/DryRunPolicy": lambda: {"tenant": t, "source": ALLOW_ALL, "inputs": [{"tool": "x"}]},
        "PolicyService/PromotePolicy": lambda: {"tenant": t, "source": ALLOW_ALL},
        "PolicyService/RollbackPolicy": lambda: {"tenant": t, "version": 1},
        "PolicyService/GetActivePolicy": lambda: {"tenant": t},
        "PolicyService/ListPolicyHistory": lambda: {"tenant": t},
        "ApprovalService/ListApprovals": lambda: {"tenant": t},
        "ApprovalService/GetApproval": lambda: {"tenant": t, "approval_id": "absent"},
        "ApprovalService/DecideApproval": lambda: {
            "tenant": t,
            "approval_id": "absent",
            "verdict": "VERDICT_APPROVE",
        },
        "TenantService/CreateTenant": lambda: {"tenant": _fresh("t")},
        "TenantService/ListTenants": lambda: {},
        "TenantService/GetTenant": lambda: {"tenant": t},
        "TenantService/UpdateTenantSettings": lambda: {
            "tenant": t,
            "settings": {},
            "update_mask": "requirePrompt",
        },
        "TenantService/GetTenantBudgets": lambda: {"tenant": t},
        "TenantService/GetWebhookSecret": lambda: {"tenant": t},
        "AuditService/QueryAuditEvents": lambda: {"tenant": t},
        "AuditService/VerifyAuditChain": lambda: {"tenant": t},
        "AuditService/ExportAuditEvents": lambda: {"tenant": t},
        "AuditService/CreateAuditCheckpoint": lambda: {"tenant": t},
        "AuditService/ListAuditCheckpoints": lambda: {"tenant": t},
        "AdminKeyService/CreateAdminKey": lambda: {"name": "made", "role": "ROLE_VIEWER", "tenant": t},
        "AdminKeyService/ListAdminKeys": lambda: {},
        "AdminKeyService/RevokeAdminKey": lambda: {"key_id": gw.new_key("viewer", t, "doomed").split("_")[1]},
        "IntegrationService/ForwarderHealth": lambda: {"tenant": t},
        "IntegrationService/ListDeadLetters": lambda: {"tenant": t},
        "TokenExchangeService/ExchangeToken": lambda: {"form": {"content_type": "text/plain"}},
        "IntentService/GetIntentSettings": lambda: {"tenant": t},
        "IntentService/UpdateIntentSettings": lambda: {
            "tenant": t,
            "settings": {},
            "update_mask": "undetermined",
        },
        "IntentService/RefreshIntentCatalog": lambda: {"tenant": t},
        "ForwarderConfigService/CreateSink": lambda: {
            "tenant": t,
            "sink": {"name": _fresh("s"), "kind": "webhook", "options": {"url": PUBLIC_URL}, "secret": "k"},
        },
        "ForwarderConfigService/ListSinks": lambda: {"tenant": t},
        "ForwarderConfigService/GetSink": lambda: {"tenant": t, "name": "absent"},
        "ForwarderConfigService/UpdateSink": lambda: {
            "tenant": t,
            "name": "absent",
            "sink": {"options": {"url": PUBLIC_URL}, "secret": "k"},
        },
        "ForwarderConfigService/DeleteSink": lambda: {"tenant": t, "name": "absent"},
        "ForwarderConfigService/CreateNotificationRoute": lambda: {
            "tenant": t,
            "route": {"name": _fresh("r"), "kind": "teams", "secret": "k"},
        },
        "ForwarderConfigService/ListNotificationRoutes": lambda: {"tenant": t},
        "ForwarderConfigService/GetNotificationRoute": lambda: {"tenant": t, "name": "absent"},
        "ForwarderConfigService/UpdateNotificationRoute": lambda: {
            "tenant": t,
            "name": "absent",
            "route": {"secret": "k"},
        },
        "ForwarderConfigService/DeleteNotificationRoute": lambda: {"tenant": t, "name": "absent"},
        "ForwarderConfigService/ReplayDeadLetter": lambda: {"tenant": t, "id": 987654},
        "MemoryWriterService/RegisterMemoryWriter": lambda: {
            "tenant": t,
            "writer_id": _fresh("w"),
            "public_key": base64.b64encode(bytes(range(32))).decode(),  # a valid Ed25519 point
            "sources": ["erp"],
        },
        "MemoryWriterService/ListMemoryWriters": lambda: {"tenant": t},
        "MemoryWriterService/DisableMemoryWriter": lambda: {"tenant": t, "writer_id": "absent"},
        "MemoryWriterService/RotateMemoryWriter": lambda: {
            "tenant": t,
            "writer_id": "absent",
            "public_key": base64.b64encode(bytes(range(32))).decode(),
        },
        "ReceiptKeyService/GetReceiptKeys": lambda: {},
    }


# Expected, per RPC: the least role of a key scoped to `matrix` that may call it ("-" none may:
# it needs the all-tenants scope), and whether the admin key of another tenant may (it may only
# list, and then sees its own tenant's things).
MATRIX = {
    "TokenService/MintToken": ("admin", False),
    "TokenService/AttenuateToken": ("viewer", False),
    "TokenService/InspectToken": ("viewer", False),
    "TokenService/RevokeToken": ("operator", False),
    "TokenService/ListRevocations": ("viewer", False),
    "PolicyService/CreateDraft": ("admin", False),
    "PolicyService/UpdateDraft": ("admin", False),
    "PolicyService/GetDraft": ("viewer", False),
    "PolicyService/ListDrafts": ("viewer", False),
    "PolicyService/DeleteDraft": ("admin", False),
    "PolicyService/ValidatePolicy": ("viewer", False),
    "PolicyService/DryRunPolicy": ("viewer", False),
    "PolicyService/PromotePolicy": ("admin", False),
    "PolicyService/RollbackPolicy": ("admin", False),
    "PolicyService/GetActivePolicy": ("viewer", False),
    "PolicyService/ListPolicyHistory": ("viewer", False),
    "ApprovalService/ListApprovals": ("viewer", False),
    "ApprovalService/GetApproval": ("viewer", False),
    "ApprovalService/DecideApproval": ("operator", False),
    "TenantService/CreateTenant": ("-", False),
    "TenantService/ListTenants": ("viewer", True),
    "TenantService/GetTenant": ("viewer", False),
    "TenantService/UpdateTenantSettings": ("admin", False),
    "TenantService/GetTenantBudgets": ("viewer", False),
    "TenantService/GetWebhookSecret": ("admin", False),
    "AuditService/QueryAuditEvents": ("viewer", False),
    "AuditService/VerifyAuditChain": ("viewer", False),
    "AuditService/ExportAuditEvents": ("viewer", False),
    "AuditService/CreateAuditCheckpoint": ("operator", False),
    "AuditService/ListAuditCheckpoints": ("viewer", False),
    "AdminKeyService/CreateAdminKey": ("admin", False),
    "AdminKeyService/ListAdminKeys": ("admin", True),
    "AdminKeyService/RevokeAdminKey": ("admin", False),
    "IntegrationService/ForwarderHealth": ("viewer", False),
    "IntegrationService/ListDeadLetters": ("viewer", False),
    # Public: no key is needed and any key is ignored (see the end of test_role_and_scope_matrix).
    "TokenExchangeService/ExchangeToken": ("public", True),
    "IntentService/GetIntentSettings": ("viewer", False),
    "IntentService/UpdateIntentSettings": ("admin", False),
    "IntentService/RefreshIntentCatalog": ("operator", False),
    "ForwarderConfigService/CreateSink": ("admin", False),
    "ForwarderConfigService/ListSinks": ("viewer", False),
    "ForwarderConfigService/GetSink": ("viewer", False),
    "ForwarderConfigService/UpdateSink": ("admin", False),
    "ForwarderConfigService/DeleteSink": ("admin", False),
    "ForwarderConfigService/CreateNotificationRoute": ("admin", False),
    "ForwarderConfigService/ListNotificationRoutes": ("viewer", False),
    "ForwarderConfigService/GetNotificationRoute": ("viewer", False),
    "ForwarderConfigService/UpdateNotificationRoute": ("admin", False),
    "ForwarderConfigService/DeleteNotificationRoute": ("admin", False),
    "ForwarderConfigService/ReplayDeadLetter": ("operator", False),
    "MemoryWriterService/RegisterMemoryWriter": ("admin", False),
    "MemoryWriterService/ListMemoryWriters": ("viewer", False),
    "MemoryWriterService/DisableMemoryWriter": ("admin", False),
    "MemoryWriterService/RotateMemoryWriter": ("admin", False),
    # Public keys: every caller, with any key, a wrong one or none.
    "ReceiptKeyService/GetReceiptKeys": ("public", True),
}
ROLES = ("viewer", "operator", "admin")
#: What a public RPC answers every caller on the matrix stack: the exchange is off (the stack trusts no
#: OAuth issuer), the receipt keys are served.
PUBLIC_ANSWERS = {
    "TokenExchangeService/ExchangeToken": C.FAILED_PRECONDITION,
    "ReceiptKeyService/GetReceiptKeys": OK,
}
ALLOWED_CODES = {OK, C.NOT_FOUND, C.FAILED_PRECONDITION, C.ALREADY_EXISTS}


def test_matrix_covers_every_rpc() -> None:
    assert {f"/authz.api.admin.v1.{name}" for name in MATRIX} == set(RULES)


@pytest.mark.parametrize("rpc", sorted(MATRIX))
def test_role_and_scope_matrix(admin_gateway: AdminGateway, env: dict[str, Any], rpc: str) -> None:
    least, other_tenant_may = MATRIX[rpc]
    request = _matrix_requests(admin_gateway, env)[rpc]
    keys = env["keys"]
    if least == "public":
        # no key is asked for and any key is ignored: every caller, with or without a key, gets the RPC's
        # own answer
        callers = {**keys, "no key": None}
        codes = {who: admin_gateway.grpc(rpc, request(), key).code for who, key in callers.items()}
        assert set(codes.values()) == {PUBLIC_ANSWERS[rpc]}, codes
        return
    expected = {f"{role}@matrix": least != "-" and ROLES.index(role) >= ROLES.index(least) for role in ROLES}
    expected["admin@other"] = other_tenant_may
    expected["root"] = True
    outcomes = {}
    for who, allowed in expected.items():
        result = admin_gateway.grpc(rpc, request(), keys[who])
        outcomes[who] = result.code
        if allowed:
            assert result.code in ALLOWED_CODES, (who, result.code, result.status)
        else:
            assert result.code is C.PERMISSION_DENIED, (who, result.code, result.status)
    assert admin_gateway.grpc(rpc, request(), None).code is C.UNAUTHENTICATED
    assert admin_gateway.grpc(rpc, request(), keys["wrong"]).code is C.UNAUTHENTICATED


def test_lists_are_narrowed_to_the_keys_tenant(admin_gateway: AdminGateway, env: dict[str, Any]) -> None:
    tenants = admin_gateway.ok("TenantService/ListTenants", {}, env["keys"]["admin@other"])
    assert [t.name for t in tenants.tenants] == ["other"]
    keys = admin_gateway.ok("AdminKeyService/ListAdminKeys", {}, env["keys"]["admin@other"])
    assert {k.tenant for k in keys.keys} == {"other"}
    revocations = admin_gateway.ok("TokenService/ListRevocations", {}, env["keys"]["viewer@matrix"])
    assert {r.tenant for r in revocations.revocations} <= {"matrix"}
    chains = admin_gateway.ok("AuditService/VerifyAuditChain", {}, env["keys"]["viewer@matrix"])
    assert [r.tenant for r in chains.results] == ["matrix"]


# -- buf curl with server reflection --------------------------------------------------------------------
def _buf() -> str:
    found = shutil.which("buf", path=str(Path(sys.executable).parent)) or shutil.which("buf")
    if found is None:
        pytest.skip("buf (the buf-bin wheel) is not installed")
    return found


@pytest.mark.parametrize("via", ["admin port", "envoy"])
def test_buf_curl_lists_services_and_mints_a_token(admin_gateway: AdminGateway, via: str) -> None:
    stack = admin_gateway.stack
    base = f"http://{stack.admin_address}" if via == "admin port" else stack.url
    common = [_buf(), "curl", "--protocol", "grpc", "--http2-prior-knowledge"]
    listed = subprocess.run([*common, "--list-services", base], capture_output=True, text=True, timeout=60)
    assert listed.returncode == 0, listed.stderr
    services = set(listed.stdout.split())
    assert {
        "authz.api.admin.v1.TokenService",
        "authz.api.admin.v1.PolicyService",
        "authz.api.admin.v1.ApprovalService",
        "authz.api.admin.v1.TenantService",
        "authz.api.admin.v1.AuditService",
        "authz.api.admin.v1.AdminKeyService",
    } <= services
    if via == "admin port":
        assert "grpc.health.v1.Health" in services
    methods = subprocess.run([*common, "--list-methods", base], capture_output=True, text=True, timeout=60)
    assert "authz.api.admin.v1.TokenService/MintToken" in methods.stdout.split()
    minted = subprocess.run(
        [
            *common,
            "-H",
            f"authorization: Bearer {admin_gateway.root}",
            "--data",
            json.dumps({"tenant": "demo", "agent": "buf", "ttl_seconds": 60}),
            f"{base}/authz.api.admin.v1.TokenService/MintToken",
        ],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert minted.returncode == 0, minted.stderr
    answer = json.loads(minted.stdout)
    assert answer["tenant"] == "demo" and answer["token"] and "agent = buf" in answer["caveats"]
    gw = admin_gateway.gateway
    assert gw.call("read_invoice", {"invoice_id": "INV-1001"}, token=answer["token"]).status_code == 200
    refused = subprocess.run(
        [*common, "--data", "{}", f"{base}/authz.api.admin.v1.TenantService/ListTenants"],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert refused.returncode != 0 and "unauthenticated" in refused.stderr.lower()


def test_a_default_audit_page_larger_than_the_connection_buffer_comes_back_over_rest(
    admin_gateway: AdminGateway,
) -> None:
    """The transcoder buffers a whole answer to print it as JSON; bounded by the listener's 32 KiB
    per-connection buffer, a default page (100 events) of ordinary events was a 500."""
    admin_gateway.ok("TenantService/CreateTenant", {"tenant": "pages"})
    for n in range(110):
        admin_gateway.ok(
            "TokenService/MintToken",
            {"tenant": "pages", "agent": f"agent-{n:03d}-" + "x" * 120, "ttl_seconds": 60},
        )
    response = httpx.get(
        f"{admin_gateway.url}/v1/admin/tenants/pages/audit/events",
        headers={"authorization": f"Bearer {admin_gateway.root}"},
        timeout=30,
    )
    assert response.status_code == 200, response.text[:300]
    assert len(response.content) > 32 * 1024  # beyond the bound the answer used to be held to
    events = response.json()["events"]
    assert len(events) == 100 and response.json()["next_page_token"]
    assert [int(e["seq"]) for e in events] == list(range(int(events[0]["seq"]), int(events[0]["seq"]) + 100))
