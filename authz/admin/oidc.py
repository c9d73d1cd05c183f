"""OIDC-issued ID tokens as admin principals, beside admin keys (the operator console signs people in).

The admin service accepts ``authorization: Bearer <ID token>`` from the organisation's OpenID provider:
the token must be signed by a key of the issuer's JWKS (asymmetric algorithms only), name the issuer
and the configured client id as audience, and be unexpired. Who the person is and what they may do comes
from the token's claims, mapped by configuration, never from anything the caller chooses:

- principal: the ``TESSERA_OIDC_PRINCIPAL_CLAIM`` claim (default ``email``). An admin key created with
  the same principal belongs to the same person, so an approval quorum counts them once whichever way
  they sign in.
- role: the ``TESSERA_OIDC_ROLE_CLAIM`` claim (default ``groups``, a string or a list) looked up in
  ``TESSERA_OIDC_ROLE_MAP`` (``group=role`` pairs); the highest mapped role wins; none mapped: refused.
- tenant scope: the ``TESSERA_OIDC_TENANT_CLAIM`` claim (default ``tessera_tenant``): a tenant name, or
  ``*`` for all tenants; missing: refused (fail closed: no claim never means every tenant).
"""

from __future__ import annotations

import asyncio
import logging
import os
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

import jwt

from authz.admin.keys import ROLES, Principal, valid_principal
from authz.config import outbound_config
from authz.errors import ConfigError, DependencyError, PermissionDenied, Unauthenticated
from authz.oauth._jwt import JwksCache
from authz.outbound import OutboundClient, OutboundPolicy
from authz.tenants import valid_tenant_name

log = logging.getLogger("tessera.admin.oidc")

_ALGORITHMS = ("RS256", "RS384", "RS512", "PS256", "PS384", "PS512", "ES256", "ES384", "EdDSA")
#: Clock skew tolerated on exp/iat/nbf between the provider and Tessera.
LEEWAY_S = 30
ALL_TENANTS = "*"


def looks_like_jwt(credential: str) -> bool:
    """A compact JWS (three base64url parts, JSON header): not an admin key."""
    return credential.count(".") == 2 and credential.startswith("eyJ")


@dataclass(frozen=True, slots=True)
class OidcSettings:
    """Which OpenID provider's ID tokens are principals, and how their claims map to role and scope."""

    issuer: str
    #: The console's client id: ID tokens must name it as audience.
    client_id: str
    #: Where the signing keys are; empty: from the issuer's discovery document.
    jwks_uri: str = ""
    principal_claim: str = "email"
    role_claim: str = "groups"
    #: Claim value (e.g. a group) → Tessera role.
    role_map: Mapping[str, str] = field(default_factory=dict)
    tenant_claim: str = "tessera_tenant"
    algorithms: tuple[str, ...] = ("RS256", "ES256", "EdDSA")

    def __post_init__(self) -> None:
        if not self.issuer.startswith(("https://", "http://")):
            raise ConfigError(f"TESSERA_OIDC_ISSUER must be an http(s) URL, got {self.issuer!r}")
        if not self.client_id:
            raise ConfigError("TESSERA_OIDC_CLIENT_ID is required with TESSERA_OIDC_ISSUER")
        bad = [role for role in self.role_map.values() if role not in ROLES]
        if bad:
            raise ConfigError(f"TESSERA_OIDC_ROLE_MAP: unknown roles {bad}; roles are {', '.join(ROLES)}")
        if not self.role_map:
            raise ConfigError("TESSERA_OIDC_ROLE_MAP must map at least one claim value to a role")
        if not self.algorithms or any(a not in _ALGORITHMS for a in self.algorithms):
            raise ConfigError(f"TESSERA_OIDC_ALGORITHMS must be asymmetric JWS algorithms: {self.algorithms}")

    @classmethod
    def from_env(cls, env: Mapping[str, str] | None = None) -> OidcSettings | None:
        """None when ``TESSERA_OIDC_ISSUER`` is unset (OIDC sign-in off: admin keys only)."""
        env = os.environ if env is None else env
        issuer = env.get("TESSERA_OIDC_ISSUER", "").strip()
        if not issuer:
            return None
        return cls(
            issuer=issuer.rstrip("/"),
            client_id=env.get("TESSERA_OIDC_CLIENT_ID", "").strip(),
            jwks_uri=env.get("TESSERA_OIDC_JWKS_URI", "").strip(),
            principal_claim=env.get("TESSERA_OIDC_PRINCIPAL_CLAIM", "email").strip() or "email",
            role_claim=env.get("TESSERA_OIDC_ROLE_CLAIM", "groups").strip() or "groups",
            role_map=parse_role_map(env.get("TESSERA_OIDC_ROLE_MAP", "")),
            tenant_claim=env.get("TESSERA_OIDC_TENANT_CLAIM", "tessera_tenant").strip() or "tessera_tenant",
            algorithms=tuple(
                a.strip()
                for a in env.get("TESSERA_OIDC_ALGORITHMS", "RS256,ES256,EdDSA").split(",")
                if a.strip()
            ),
        )


def parse_role_map(text: str) -> dict[str, str]:
    """``tessera-admins=admin,tessera-ops=operator`` → a mapping (ConfigError for a malformed pair)."""
    mapping: dict[str, str] = {}
    for part in text.split(","):
        if not part.strip():
            continue
        value, sep, role = part.rpartition("=")
        if not sep or not value.strip() or not role.strip():
            raise ConfigError(f"TESSERA_OIDC_ROLE_MAP: expected claim-value=role pairs, got {part.strip()!r}")
        mapping[value.strip()] = role.strip()
    return mapping


def outbound_from_env(purpose: str) -> OutboundClient:
    """An outbound client under the operator's ``TESSERA_OUTBOUND_*`` rules: the provider is reached
    like every other operator-chosen URL (a provider on a private address needs an allow entry)."""
    rules = outbound_config()
    return OutboundClient(
        OutboundPolicy.build(rules.allow, rules.refused_ports),
        timeout_s=5.0,
        max_response_bytes=256 * 1024,
        purpose=purpose,
    )


async def discover(issuer: str, outbound: OutboundClient) -> dict[str, Any]:
    """The provider's discovery document (``/.well-known/openid-configuration``), checked to name the
    same issuer (OpenID Connect Discovery §4.3). DependencyError or ValueError when it cannot be had."""
    url = f"{issuer.rstrip('/')}/.well-known/openid-configuration"
    response = await outbound.request("GET", url)
    if response.status_code != 200:
        raise ValueError(f"discovery document at {url}: HTTP {response.status_code}")
    doc = response.json()
    if not isinstance(doc, dict) or doc.get("issuer", "").rstrip("/") != issuer.rstrip("/"):
        raise ValueError(f"discovery document at {url} names another issuer")
    return doc


@dataclass(frozen=True, slots=True)
class _Source:
    """What :class:`JwksCache` reads of an issuer."""

    issuer: str
    jwks_uri: str


class OidcVerifier:
    """Verifies ID tokens of one provider and maps them to a :class:`Principal`.

    :meth:`run` keeps the provider's signing keys fresh (discovery first when no JWKS URI is
    configured, retried until the provider answers); until keys are known every ID token is refused.
    """

    def __init__(
        self, settings: OidcSettings, *, outbound: OutboundClient | None = None, refresh_s: float = 300.0
    ):
        self.settings = settings
        self.outbound = outbound or outbound_from_env("OIDC provider")
        self._jwks_uri = settings.jwks_uri
        self._cache: JwksCache | None = None
        self._refresh_s = refresh_s
        self.ready = asyncio.Event()

    async def start(self) -> None:
        """Discover the JWKS URI (when not configured) and load the keys once."""
        if not self._jwks_uri:
            doc = await discover(self.settings.issuer, self.outbound)
            uri = doc.get("jwks_uri")
            if not isinstance(uri, str) or not uri:
                raise ValueError("the discovery document has no jwks_uri")
            self._jwks_uri = uri
        if self._cache is None:
            self._cache = JwksCache(
                [_Source(self.settings.issuer, self._jwks_uri)],
                outbound=self.outbound,
                interval_s=self._refresh_s,
            )
        await self._cache.refresh()
        if not self._cache.available(self.settings.issuer):
            raise ValueError(f"JWKS not loaded: {self._cache.error(self.settings.issuer)}")
        self.ready.set()

    async def run(self) -> None:
        delay = 0.5
        while not self.ready.is_set():
            try:
                await self.start()
            except (DependencyError, ValueError) as exc:
                log.warning("OIDC provider %s not reachable yet: %s", self.settings.issuer, exc)
                await asyncio.sleep(delay)
                delay = min(delay * 2, 30.0)
        assert self._cache is not None
        await self._cache.run()

    def claims(self, token: str, *, nonce: str | None = None) -> dict[str, Any]:
        """The verified claims of an ID token; Unauthenticated for any flaw (one message family)."""
        s = self.settings
        try:
            header = jwt.get_unverified_header(token)
        except jwt.PyJWTError as exc:
            raise Unauthenticated(f"malformed ID token: {exc}", reason="OIDC_TOKEN_INVALID") from None
        algorithm = header.get("alg")
        if algorithm not in s.algorithms:
            raise Unauthenticated(
                f"ID token algorithm {algorithm!r} is not allowed", reason="OIDC_TOKEN_INVALID"
            )
        key = None
        if self._cache is not None:
            kid = header.get("kid")
            key = self._cache.key(s.issuer, kid) if kid else self._cache.sole_key(s.issuer)
        if key is None:
            if self._cache is not None:
                self._cache.want()  # the provider may have rotated its keys
            raise Unauthenticated("ID token signed with an unknown key", reason="OIDC_TOKEN_INVALID")
        try:
            claims = jwt.decode(
                token,
                key,
                algorithms=[algorithm],
                audience=s.client_id,
                issuer=s.issuer,
                leeway=LEEWAY_S,
                options={"require": ["exp", "iat", "iss", "aud", "sub"]},
            )
        except jwt.PyJWTError as exc:
            raise Unauthenticated(f"ID token rejected: {exc}", reason="OIDC_TOKEN_INVALID") from None
        if nonce is not None and claims.get("nonce") != nonce:
            raise Unauthenticated("ID token nonce does not match the sign-in", reason="OIDC_TOKEN_INVALID")
        return claims

    def principal(self, token: str) -> Principal:
        """The admin principal of a verified ID token (PermissionDenied when its claims map to no role
        or no tenant scope)."""
        return principal_from_claims(self.settings, self.claims(token))


def principal_from_claims(settings: OidcSettings, claims: Mapping[str, Any]) -> Principal:
    who = claims.get(settings.principal_claim)
    if not valid_principal(who):
        raise PermissionDenied(
            f"the ID token's {settings.principal_claim!r} claim is missing or not a valid principal",
            reason="OIDC_NO_PRINCIPAL",
        )
    granted = claims.get(settings.role_claim)
    values = [granted] if isinstance(granted, str) else granted if isinstance(granted, list) else []
    roles = [settings.role_map[v] for v in values if isinstance(v, str) and v in settings.role_map]
    if not roles:
        raise PermissionDenied(
            f"{who} has no Tessera role (claim {settings.role_claim!r} maps to none)", reason="OIDC_NO_ROLE"
        )
    role = max(roles, key=lambda r: ROLES.index(r))
    scope = claims.get(settings.tenant_claim)
    if scope == ALL_TENANTS:
        tenant = None
    elif isinstance(scope, str) and valid_tenant_name(scope):
        tenant = scope
    else:
        raise PermissionDenied(
            f"{who} has no tenant scope (claim {settings.tenant_claim!r} is missing or invalid)",
            reason="OIDC_NO_TENANT",
        )
    return Principal(key_id="oidc", name=who, role=role, tenant=tenant, principal=who, issuer=settings.issuer)
