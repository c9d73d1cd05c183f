"""Who may call which admin RPC: one table, checked for every call by :mod:`.auth` (ARCHITECTURE §11).

Each rule names the least role (viewer < operator < admin) and how the call's tenant is found, which
the caller's key must cover (a key is scoped to one tenant, or to all tenants):

============  =====================================================================================
scope         the tenant the call acts on
============  =====================================================================================
tenant        the request's ``tenant`` field (required)
tenant_or_all the request's ``tenant`` field; empty means "every tenant in the key's scope" and the
              handler narrows what it returns to that scope
token         the tenant inside the request's ``token`` (its identifier, read offline)
revoke        the request's ``tenant``, else the tenant of its ``token``
global        none: the call needs a key with the all-tenants scope (creating tenants)
key_tenant    the request's ``tenant``; empty (a key for all tenants) needs the all-tenants scope
in_handler    decided by the handler against stored state (listing or revoking admin keys, listing
              tenants): results are narrowed to the key's scope, foreign targets are refused
public        no admin key at all (role ``public``): public by nature (the receipt public keys), or the
              request carries its own credential, which the handler verifies (token exchange: an OAuth
              access token); any key presented is ignored
============  =====================================================================================

A method of ``authz.api.admin.v1`` without a rule is refused (fail closed); a unit test checks that
every RPC of the protos has one.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from authz.admin.keys import Principal
from authz.errors import InvalidArgument, PermissionDenied
from authz.token import inspect

PACKAGE = "authz.api.admin.v1"
#: The role of a public RPC: no admin key is needed (see the ``public`` scope).
PUBLIC = "public"
SCOPES = ("tenant", "tenant_or_all", "token", "revoke", "global", "key_tenant", "in_handler", "public")


@dataclass(frozen=True, slots=True)
class Rule:
    role: str
    scope: str

    def __post_init__(self) -> None:
        if self.scope not in SCOPES:
            raise ValueError(f"unknown scope {self.scope!r}")
        if (self.scope == "public") != (self.role == PUBLIC):
            raise ValueError("the public scope and the public role go together")

    @property
    def public(self) -> bool:
        """Called without an admin key (the interceptor authenticates nothing)."""
        return self.scope == "public"

    def check(self, principal: Principal, method: str, request: Any) -> None:
        """PermissionDenied unless ``principal`` may make this call; InvalidArgument when the tenant
        the call needs is missing."""
        if not principal.has_role(self.role):
            raise PermissionDenied(
                f"{method} needs the {self.role} role; {principal.label} has {principal.role}",
                reason="ROLE_INSUFFICIENT",
                metadata={"required_role": self.role, "role": principal.role},
            )
        tenant = self._tenant(principal, request)
        if tenant is None:
            return
        if tenant == "":
            if principal.all_tenants:
                return
            raise PermissionDenied(
                f"{method} without a tenant needs a key for all tenants; "
                f"{principal.label} is limited to tenant {principal.tenant}",
                reason="TENANT_SCOPE",
                metadata={"key_tenant": principal.tenant or ""},
            )
        if not principal.may_act_on(tenant):
            raise PermissionDenied(
                f"{principal.label} is limited to tenant {principal.tenant}, not {tenant}",
                reason="TENANT_SCOPE",
                metadata={"tenant": tenant, "key_tenant": principal.tenant or ""},
            )

    def _tenant(self, principal: Principal, request: Any) -> str | None:
        """The tenant to cover; "" when the call needs the all-tenants scope; None: nothing to check."""
        scope = self.scope
        if scope == "in_handler":
            return None
        if scope == "global":
            return ""
        if scope in ("token", "revoke"):
            if scope == "revoke" and request.tenant:
                return request.tenant
            if not request.token:
                field = "token" if scope == "token" else "tenant"
                raise InvalidArgument(
                    f"{field} is required", reason="FIELD_REQUIRED", metadata={"field": field}
                )
            return inspect(request.token).tenant
        tenant = request.tenant
        if scope == "tenant" and not tenant:
            raise InvalidArgument("tenant is required", reason="FIELD_REQUIRED", metadata={"field": "tenant"})
        if scope == "tenant_or_all" and not tenant:
            return None  # the handler narrows to the key's scope
        return tenant


def _rules(service: str, **methods: tuple[str, str]) -> dict[str, Rule]:
    return {f"/{PACKAGE}.{service}/{name}": Rule(*spec) for name, spec in methods.items()}


VIEWER, OPERATOR, ADMIN = "viewer", "operator", "admin"

RULES: dict[str, Rule] = {
    **_rules(
        "TokenService",
        MintToken=(ADMIN, "tenant"),
        AttenuateToken=(VIEWER, "token"),
        InspectToken=(VIEWER, "token"),
        RevokeToken=(OPERATOR, "revoke"),
        ListRevocations=(VIEWER, "tenant_or_all"),
    ),
    **_rules(
        "PolicyService",
        CreateDraft=(ADMIN, "tenant"),
        UpdateDraft=(ADMIN, "tenant"),
        GetDraft=(VIEWER, "tenant"),
        ListDrafts=(VIEWER, "tenant"),
        DeleteDraft=(ADMIN, "tenant"),
        ValidatePolicy=(VIEWER, "tenant"),
        DryRunPolicy=(VIEWER, "tenant"),
        PromotePolicy=(ADMIN, "tenant"),
        RollbackPolicy=(ADMIN, "tenant"),
        GetActivePolicy=(VIEWER, "tenant"),
        ListPolicyHistory=(VIEWER, "tenant"),
    ),
    **_rules(
        "ApprovalService",
        ListApprovals=(VIEWER, "tenant_or_all"),
        GetApproval=(VIEWER, "tenant"),
        DecideApproval=(OPERATOR, "tenant"),
    ),
    **_rules(
        "TenantService",
        CreateTenant=(ADMIN, "global"),
        ListTenants=(VIEWER, "in_handler"),
        GetTenant=(VIEWER, "tenant"),
        UpdateTenantSettings=(ADMIN, "tenant"),
        GetTenantBudgets=(VIEWER, "tenant"),
        GetWebhookSecret=(ADMIN, "tenant"),
    ),
    **_rules(
        "AuditService",
        QueryAuditEvents=(VIEWER, "tenant"),
        VerifyAuditChain=(VIEWER, "tenant_or_all"),
        ExportAuditEvents=(VIEWER, "tenant_or_all"),
        CreateAuditCheckpoint=(OPERATOR, "tenant"),
        ListAuditCheckpoints=(VIEWER, "tenant"),
    ),
    **_rules(
        "AdminKeyService",
        CreateAdminKey=(ADMIN, "key_tenant"),
        ListAdminKeys=(ADMIN, "in_handler"),
        RevokeAdminKey=(ADMIN, "in_handler"),
    ),
    **_rules(
        "IntegrationService",
        ForwarderHealth=(VIEWER, "tenant_or_all"),
        ListDeadLetters=(VIEWER, "tenant_or_all"),
    ),
    **_rules("TokenExchangeService", ExchangeToken=(PUBLIC, "public")),
    **_rules(
        "IntentService",
        GetIntentSettings=(VIEWER, "tenant"),
        UpdateIntentSettings=(ADMIN, "tenant"),
        RefreshIntentCatalog=(OPERATOR, "tenant"),
    ),
    **_rules(
        "ForwarderConfigService",
        CreateSink=(ADMIN, "tenant"),
        ListSinks=(VIEWER, "tenant"),
        GetSink=(VIEWER, "tenant"),
        UpdateSink=(ADMIN, "tenant"),
        DeleteSink=(ADMIN, "tenant"),
        CreateNotificationRoute=(ADMIN, "tenant"),
        ListNotificationRoutes=(VIEWER, "tenant"),
        GetNotificationRoute=(VIEWER, "tenant"),
        UpdateNotificationRoute=(ADMIN, "tenant"),
        DeleteNotificationRoute=(ADMIN, "tenant"),
        ReplayDeadLetter=(OPERATOR, "tenant"),
    ),
    **_rules(
        "MemoryWriterService",
        RegisterMemoryWriter=(ADMIN, "tenant"),
        ListMemoryWriters=(VIEWER, "tenant"),
        DisableMemoryWriter=(ADMIN, "tenant"),
        RotateMemoryWriter=(ADMIN, "tenant"),
    ),
    **_rules("ReceiptKeyService", GetReceiptKeys=(PUBLIC, "public")),
}


def in_scope(principal: Principal, tenants: list[str]) -> list[str]:
    """The subset of ``tenants`` the principal covers (every one for an all-tenants key)."""
    return [t for t in tenants if principal.may_act_on(t)]
