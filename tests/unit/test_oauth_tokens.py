"""JWT access tokens beside macaroons (authz.oauth): real RSA keys, a JWKS over real HTTP (a stand-in
issuer), PyJWT verification; expired, wrong-audience, wrong-issuer, unsigned and forged tokens refused."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import jwt
import pytest

from authz.errors import DependencyError
from authz.oauth import JwksCache, OAuthAuthenticator, TrustedIssuer
from authz.outbound import OutboundClient, OutboundPolicy
from authz.secrets import Secret
from authz.token import AuthenticatedToken, KeyRing, TokenAuthenticator, TokenRejection, mint
from tests.oauth_issuer import StandInIssuer

AUDIENCE = "https://gateway.example/v1/mcp"
KEYRING = KeyRing(Secret("unit-test-master-key-0123456789abcdef0123"))


@pytest.fixture
def issuer():
    server = StandInIssuer()
    yield server
    server.close()


def _outbound(*allow: str) -> OutboundClient:
    return OutboundClient(OutboundPolicy.build(allow), timeout_s=5.0, purpose="OAuth JWKS")


async def _authenticator(
    issuer: StandInIssuer, outbound: OutboundClient | None = None
) -> tuple[OAuthAuthenticator, JwksCache]:
    trusted = TrustedIssuer(issuer=issuer.issuer, jwks_uri=issuer.jwks_uri, audience=AUDIENCE, tenant="demo")
    # The stand-in listens on loopback, which the outbound rules refuse unless the operator allows it.
    jwks = JwksCache([trusted], outbound=outbound or _outbound("127.0.0.1"))
    await jwks.refresh()
    return OAuthAuthenticator(TokenAuthenticator(KEYRING), [trusted], jwks), jwks


def _now() -> datetime:
    return datetime.now(UTC)


async def test_a_valid_access_token_maps_to_tenant_agent_and_tools(issuer):
    auth, _ = await _authenticator(issuer)
    result = auth.authenticate(issuer.token(AUDIENCE, scope="read_invoice list_invoices", jti="j-1"))
    assert isinstance(result, AuthenticatedToken), result
    assert (result.tenant, result.agent, result.jti) == ("demo", "agent-7", "j-1")
    assert result.tools == frozenset({"read_invoice", "list_invoices"})
    assert result.check(now=_now(), tool="read_invoice", arguments={}, prompt=None) is None
    assert result.check(now=_now(), tool="delete_invoice", arguments={}, prompt=None) is not None


async def test_expiry_and_not_before_are_enforced_per_request(issuer):
    auth, _ = await _authenticator(issuer)
    expired = auth.authenticate(issuer.token(AUDIENCE, lifetime_s=-5))
    assert isinstance(expired, AuthenticatedToken)
    assert "expire" in expired.check(now=_now(), tool="read_invoice", arguments={}, prompt=None).reason
    early = auth.authenticate(issuer.token(AUDIENCE, nbf=int((_now() + timedelta(hours=1)).timestamp())))
    assert early.check(now=_now(), tool="read_invoice", arguments={}, prompt=None) is not None


@pytest.mark.parametrize(
    "case", ["wrong-audience", "wrong-issuer", "unsigned", "hmac-with-public-key", "foreign-key", "no-exp"]
)
async def test_bad_access_tokens_are_refused(issuer, case):
    auth, _ = await _authenticator(issuer)
    if case == "wrong-audience":
        token = issuer.token("https://other.example/v1/mcp")
    elif case == "wrong-issuer":
        token = issuer.token(AUDIENCE, iss="https://evil.example")
    elif case == "unsigned":
        token = jwt.encode({"iss": issuer.issuer, "aud": AUDIENCE, "exp": 2**31}, None, algorithm="none")
    elif case == "hmac-with-public-key":
        public = issuer.jwks()["keys"][0]["n"].encode()
        token = jwt.encode(
            {"iss": issuer.issuer, "aud": AUDIENCE, "exp": 2**31}, public, algorithm="HS256",
            headers={"kid": issuer.current},
        )  # fmt: skip
    elif case == "foreign-key":
        other = StandInIssuer()
        try:
            token = jwt.encode(
                {"iss": issuer.issuer, "aud": AUDIENCE, "exp": 2**31},
                other.keys[other.current],
                algorithm="RS256",
                headers={"kid": issuer.current},
            )
        finally:
            other.close()
    else:
        token = issuer.token(AUDIENCE, exp=None)
    assert isinstance(auth.authenticate(token), TokenRejection)


async def test_a_rotated_key_is_accepted_once_the_jwks_is_refreshed(issuer):
    auth, jwks = await _authenticator(issuer)
    new_kid = issuer.rotate()
    token = issuer.token(AUDIENCE, kid=new_kid)
    assert "unknown key" in auth.authenticate(token).reason
    await jwks.refresh()  # what JwksCache.run() does soon after want()
    assert isinstance(auth.authenticate(token), AuthenticatedToken)


async def test_macaroons_still_authenticate(issuer):
    auth, _ = await _authenticator(issuer)
    macaroon = mint(KEYRING, tenant="demo", agent="a1", expires=_now() + timedelta(hours=1))
    assert auth.authenticate(macaroon).agent == "a1"


async def test_the_jwks_is_fetched_under_the_outbound_rules_and_a_refused_fetch_fails_closed(issuer):
    auth, jwks = await _authenticator(issuer, _outbound())  # loopback not in the allowlist
    assert not jwks.available(issuer.issuer)
    assert "not in TESSERA_OUTBOUND_ALLOW" in jwks.error(issuer.issuer)
    with pytest.raises(DependencyError, match="could not be fetched"):
        auth.authenticate(issuer.token(AUDIENCE))


async def test_a_failed_refresh_keeps_the_keys_already_fetched(issuer):
    auth, jwks = await _authenticator(issuer)
    token = issuer.token(AUDIENCE)
    issuer.close()  # the issuer goes away: the next refresh fails
    await jwks.refresh()
    assert jwks.error(issuer.issuer) is not None and jwks.available(issuer.issuer)
    assert isinstance(auth.authenticate(token), AuthenticatedToken)


async def test_budget_claims_become_per_token_budgets_when_configured(issuer):
    trusted = TrustedIssuer(
        issuer=issuer.issuer,
        jwks_uri=issuer.jwks_uri,
        audience=AUDIENCE,
        tenant="demo",
        max_calls_claim="tessera_max_calls",
        max_cost_claim="tessera_max_cost",
    )
    jwks = JwksCache([trusted], outbound=_outbound("127.0.0.1"))
    await jwks.refresh()
    auth = OAuthAuthenticator(TokenAuthenticator(KEYRING), [trusted], jwks)
    token = issuer.token(AUDIENCE, tessera_max_calls=3, tessera_max_cost="12.5")
    result = auth.authenticate(token)
    assert [(c.kind, str(c.limit)) for c in result.budget_counters] == [("calls", "3"), ("cost", "12.5")]
    assert all(c.expires == result.expires for c in result.budget_counters)
    # each token its own counters; a token without the claims has none (tenant budget rules still apply)
    other = auth.authenticate(
        issuer.token(AUDIENCE, jti="other", tessera_max_calls=3, tessera_max_cost="12.5")
    )
    assert {c.key for c in other.budget_counters}.isdisjoint({c.key for c in result.budget_counters})
    assert auth.authenticate(issuer.token(AUDIENCE)).budget_counters == ()
    for bad in ({"tessera_max_calls": "3"}, {"tessera_max_calls": True}, {"tessera_max_cost": "lots"}):
        assert isinstance(auth.authenticate(issuer.token(AUDIENCE, **bad)), TokenRejection), bad
