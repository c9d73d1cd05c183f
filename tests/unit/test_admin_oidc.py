"""OIDC ID-token claims → admin principal: role, tenant scope and principal mapping (authz.admin.oidc)."""

from __future__ import annotations

import pytest

from authz.admin.keys import Principal
from authz.admin.oidc import OidcSettings, looks_like_jwt, parse_role_map, principal_from_claims
from authz.errors import ConfigError, PermissionDenied

ISSUER = "http://127.0.0.1:9400"


def settings(**kw) -> OidcSettings:
    base = {
        "issuer": ISSUER,
        "client_id": "tessera-console",
        "role_map": {"ops": "operator", "sec": "admin", "all": "viewer"},
    }
    return OidcSettings(**(base | kw))


def test_highest_mapped_role_and_tenant_claim():
    p = principal_from_claims(
        settings(),
        {"email": "ann@example.com", "groups": ["all", "ops", "unrelated"], "tessera_tenant": "acme"},
    )
    assert (p.role, p.tenant, p.principal, p.issuer) == ("operator", "acme", "ann@example.com", ISSUER)
    assert p.identity == f"ann@example.com (oidc {ISSUER})"


def test_star_is_all_tenants_and_a_string_claim_is_one_group():
    p = principal_from_claims(settings(), {"email": "bo@example.com", "groups": "sec", "tessera_tenant": "*"})
    assert p.role == "admin" and p.all_tenants


@pytest.mark.parametrize(
    ("claims", "reason"),
    [
        ({"email": "x@example.com", "groups": ["nobody"], "tessera_tenant": "acme"}, "OIDC_NO_ROLE"),
        ({"email": "x@example.com", "tessera_tenant": "acme"}, "OIDC_NO_ROLE"),
        ({"email": "x@example.com", "groups": ["ops"]}, "OIDC_NO_TENANT"),  # no claim is never "all"
        ({"email": "x@example.com", "groups": ["ops"], "tessera_tenant": ""}, "OIDC_NO_TENANT"),
        ({"email": "x@example.com", "groups": ["ops"], "tessera_tenant": ["acme"]}, "OIDC_NO_TENANT"),
        ({"groups": ["ops"], "tessera_tenant": "acme"}, "OIDC_NO_PRINCIPAL"),
        ({"email": "bad principal!", "groups": ["ops"], "tessera_tenant": "acme"}, "OIDC_NO_PRINCIPAL"),
    ],
)
def test_unmapped_claims_are_refused(claims, reason):
    with pytest.raises(PermissionDenied) as info:
        principal_from_claims(settings(), claims)
    assert info.value.reason == reason


def test_same_principal_as_an_admin_key_is_one_person():
    """The quorum counts principals: a key created for ann@example.com and her OIDC sign-in agree."""
    via_oidc = principal_from_claims(
        settings(), {"email": "ann@example.com", "groups": "ops", "tessera_tenant": "*"}
    )
    via_key = Principal("k1", "ann-laptop", "operator", None, principal="ann@example.com")
    assert via_oidc.principal == via_key.principal


def test_settings_from_env():
    env = {
        "TESSERA_OIDC_ISSUER": ISSUER + "/",
        "TESSERA_OIDC_CLIENT_ID": "console",
        "TESSERA_OIDC_ROLE_MAP": "tessera-ops=operator, tessera-admins=admin",
        "TESSERA_OIDC_TENANT_CLAIM": "tenant",
    }
    s = OidcSettings.from_env(env)
    assert s is not None and s.issuer == ISSUER and s.tenant_claim == "tenant"
    assert s.role_map == {"tessera-ops": "operator", "tessera-admins": "admin"}
    assert OidcSettings.from_env({}) is None


@pytest.mark.parametrize(
    "env",
    [
        {"TESSERA_OIDC_CLIENT_ID": "c", "TESSERA_OIDC_ROLE_MAP": "a=root"},  # unknown role
        {"TESSERA_OIDC_CLIENT_ID": "c"},  # no role map
        {"TESSERA_OIDC_ROLE_MAP": "a=admin"},  # no client id
        {
            "TESSERA_OIDC_CLIENT_ID": "c",
            "TESSERA_OIDC_ROLE_MAP": "a=admin",
            "TESSERA_OIDC_ALGORITHMS": "HS256",
        },
    ],
)
def test_bad_settings_are_config_errors(env):
    with pytest.raises(ConfigError):
        OidcSettings.from_env({"TESSERA_OIDC_ISSUER": ISSUER, **env})


def test_role_map_syntax():
    assert parse_role_map("a=admin,,b = viewer") == {"a": "admin", "b": "viewer"}
    with pytest.raises(ConfigError):
        parse_role_map("justgroup")


def test_jwt_shape_is_told_from_admin_keys():
    assert looks_like_jwt("eyJhbGciOiJSUzI1NiJ9.eyJzdWIiOiJ4In0.c2ln")
    assert not looks_like_jwt("tsk_0123456789ab_" + "x" * 43)
