"""Token exchange (authz.oauth.TokenExchange and the form parsing of TokenExchangeService): an access
token from a trusted issuer (stand-in issuer: real RSA keys and JWKS over real HTTP) becomes a macaroon
no wider than its claims and the issuer's allowance."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import jwt
import pytest

from authz.errors import InvalidArgument
from authz.oauth import (
    ACCESS_TOKEN_TYPE,
    TOKEN_EXCHANGE_GRANT,
    ExchangeAllowance,
    JwksCache,
    OAuthAuthenticator,
    TokenExchange,
    TrustedIssuer,
)
from authz.outbound import OutboundClient, OutboundPolicy
from authz.secrets import Secret
from authz.server.admin.exchange import parse_form
from authz.token import AuthenticatedToken, KeyRing, TokenAuthenticator, attenuate
from tests.oauth_issuer import StandInIssuer

AUDIENCE = "https://gateway.example/v1/mcp"
KEYRING = KeyRing(Secret("unit-test-master-key-0123456789abcdef0123"))
NOW = datetime.now(UTC).replace(microsecond=0)


@pytest.fixture
def issuer():
    server = StandInIssuer()
    yield server
    server.close()


async def _exchange(issuer: StandInIssuer, allowance: ExchangeAllowance | None) -> TokenExchange:
    trusted = TrustedIssuer(
        issuer=issuer.issuer, jwks_uri=issuer.jwks_uri, audience=AUDIENCE, tenant="demo", exchange=allowance
    )
    outbound = OutboundClient(OutboundPolicy.build(["127.0.0.1"]), purpose="OAuth JWKS")
    jwks = JwksCache([trusted], outbound=outbound)
    await jwks.refresh()
    return TokenExchange(OAuthAuthenticator(TokenAuthenticator(KEYRING), [trusted], jwks), KEYRING)


def _form(subject: str, **extra: str) -> dict[str, str]:
    return {
        "grant_type": TOKEN_EXCHANGE_GRANT,
        "subject_token": subject,
        "subject_token_type": ACCESS_TOKEN_TYPE,
        **extra,
    }


def _verify(token: str) -> AuthenticatedToken:
    result = TokenAuthenticator(KEYRING).authenticate(token)
    assert isinstance(result, AuthenticatedToken), result
    return result


async def test_the_issued_token_is_bounded_by_claims_and_allowance(issuer):
    allowance = ExchangeAllowance(tools=("read_invoice", "list_invoices", "pay"), max_ttl_s=600, max_calls=5)
    exchange = await _exchange(issuer, allowance)
    subject = issuer.token(AUDIENCE, scope="read_invoice list_invoices delete_invoice", jti="j-42")
    issued = exchange.exchange(_form(subject), now=NOW)
    token = _verify(issued.token)
    assert (token.tenant, token.agent, token.jti) == ("demo", "agent-7", "j-42")
    # claims ∩ allowance: delete_invoice (claims only) and pay (allowance only) are out
    assert token.tools == frozenset({"read_invoice", "list_invoices"})
    assert token.expires == NOW + timedelta(seconds=600)  # the allowance's cap, before the JWT's exp
    assert [c.limit for c in token.budget_counters] == [5]


async def test_expiry_is_never_past_the_subject_tokens(issuer):
    exchange = await _exchange(issuer, ExchangeAllowance(max_ttl_s=86400))
    subject = issuer.token(AUDIENCE, scope="read_invoice", lifetime_s=120)
    issued = exchange.exchange(_form(subject), now=NOW)
    exp = jwt.decode(subject, options={"verify_signature": False})["exp"]
    assert _verify(issued.token).expires == datetime.fromtimestamp(exp, UTC)


async def test_a_narrower_scope_is_granted_and_a_wider_one_refused(issuer):
    exchange = await _exchange(issuer, ExchangeAllowance(tools=("read_invoice", "list_invoices")))
    subject = issuer.token(AUDIENCE, scope="read_invoice list_invoices")
    narrow = exchange.exchange(_form(subject, scope="read_invoice"), now=NOW)
    assert _verify(narrow.token).tools == frozenset({"read_invoice"})
    with pytest.raises(InvalidArgument) as wider:
        exchange.exchange(_form(subject, scope="read_invoice delete_invoice"), now=NOW)
    assert wider.value.metadata["error"] == "invalid_scope" and "delete_invoice" in str(wider.value)


async def test_the_issued_token_attenuates_offline(issuer):
    exchange = await _exchange(issuer, ExchangeAllowance())
    issued = exchange.exchange(_form(issuer.token(AUDIENCE, scope="read_invoice list_invoices")), now=NOW)
    child = _verify(attenuate(issued.token, ["tools = list_invoices"]))
    assert child.tools == frozenset({"list_invoices"}) and child.jti == issued.jti


@pytest.mark.parametrize(
    ("case", "error"),
    [
        ("grant", "unsupported_grant_type"),
        ("type", "invalid_request"),
        ("missing", "invalid_request"),
        ("actor", "invalid_request"),
        ("expired", "invalid_grant"),
        ("wrong-audience", "invalid_grant"),
        ("unsigned", "invalid_grant"),
        ("macaroon", "invalid_grant"),
        ("no-exchange", "invalid_grant"),
    ],
)
async def test_bad_exchanges_are_refused_with_the_oauth_error(issuer, case, error):
    exchange = await _exchange(issuer, None if case == "no-exchange" else ExchangeAllowance())
    good = issuer.token(AUDIENCE, scope="read_invoice")
    form = _form(good)
    if case == "grant":
        form["grant_type"] = "client_credentials"
    elif case == "type":
        form["subject_token_type"] = "urn:ietf:params:oauth:token-type:id_token"
    elif case == "missing":
        del form["subject_token"]
    elif case == "actor":
        form["actor_token"] = good
    elif case == "expired":
        # expired a minute before the exchange's clock (NOW, fixed at import), however long ago that was
        form["subject_token"] = issuer.token(AUDIENCE, exp=int(NOW.timestamp()) - 60)
    elif case == "wrong-audience":
        form["subject_token"] = issuer.token("https://elsewhere.example/v1/mcp")
    elif case == "unsigned":
        claims = {"iss": issuer.issuer, "aud": AUDIENCE, "exp": 2**31, "sub": "a"}
        form["subject_token"] = jwt.encode(claims, None, algorithm="none")
    elif case == "macaroon":
        from authz.token import mint

        form["subject_token"] = mint(KEYRING, tenant="demo", agent="a")
    with pytest.raises(InvalidArgument) as refused:
        exchange.exchange(form, now=NOW)
    assert refused.value.metadata["error"] == error


def test_the_form_is_parsed_strictly():
    body = f"grant_type={TOKEN_EXCHANGE_GRANT}&subject_token=abc&scope=a+b".encode()
    form = parse_form("application/x-www-form-urlencoded; charset=utf-8", body)
    assert form == {"grant_type": TOKEN_EXCHANGE_GRANT, "subject_token": "abc", "scope": "a b"}
    # resource and audience may repeat (RFC 8693 §2.1): every value, in order, as a tuple.
    repeated = parse_form(
        "application/x-www-form-urlencoded",
        b"resource=https%3A%2F%2Fa%2Fv1%2Fmcp&audience=crm&resource=https%3A%2F%2Fa%2Fv1%2Fmcp%2Fb",
    )
    assert repeated == {"resource": ("https://a/v1/mcp", "https://a/v1/mcp/b"), "audience": ("crm",)}
    for content_type, data in [
        ("application/json", b"{}"),
        ("application/x-www-form-urlencoded", b"scope=a&scope=b"),
        ("application/x-www-form-urlencoded", b"a=" + b"x" * 20000),
        ("application/x-www-form-urlencoded", b"\xff\xfe"),
    ]:
        with pytest.raises(InvalidArgument) as bad:
            parse_form(content_type, data)
        assert bad.value.metadata["error"] == "invalid_request"


async def test_the_tighter_budget_of_allowance_and_claims_is_issued(issuer):
    allowance = ExchangeAllowance(max_calls=10, max_cost="100")
    trusted = TrustedIssuer(
        issuer=issuer.issuer,
        jwks_uri=issuer.jwks_uri,
        audience=AUDIENCE,
        tenant="demo",
        exchange=allowance,
        max_calls_claim="tessera_max_calls",
    )
    jwks = JwksCache([trusted], outbound=OutboundClient(OutboundPolicy.build(["127.0.0.1"])))
    await jwks.refresh()
    exchange = TokenExchange(OAuthAuthenticator(TokenAuthenticator(KEYRING), [trusted], jwks), KEYRING)
    issued = exchange.exchange(_form(issuer.token(AUDIENCE, tessera_max_calls=4)), now=NOW)
    assert sorted((c.kind, str(c.limit)) for c in _verify(issued.token).budget_counters) == [
        ("calls", "4"),
        ("cost", "100"),
    ]


async def test_resource_and_audience_bind_the_token_to_servers_the_tenant_serves(issuer):
    exchange = await _exchange(issuer, ExchangeAllowance(servers=("billing", "crm")))
    subject = issuer.token(AUDIENCE, scope="read_invoice")
    assert exchange.exchange(_form(subject), now=NOW).servers is None  # not asked: not bound
    bound = exchange.exchange(_form(subject, resource=f"{AUDIENCE}/billing"), now=NOW)
    assert bound.servers == ("billing",)
    assert _verify(bound.token).servers == frozenset({"billing"})  # the caveat, enforced per call
    assert exchange.exchange(_form(subject, resource=AUDIENCE + "/"), now=NOW).servers == ("default",)
    both = exchange.exchange(_form(subject, resource=f"{AUDIENCE}/billing", audience="crm"), now=NOW)
    assert both.servers == ("billing", "crm")
    assert exchange.exchange(_form(subject, audience=f"{AUDIENCE}/crm"), now=NOW).servers == ("crm",)
    for extra in (
        {"resource": f"{AUDIENCE}/payroll"},  # not served by the tenant
        {"resource": "https://elsewhere.example/v1/mcp"},
        {"resource": "billing"},  # not an absolute URI
        {"resource": f"{AUDIENCE}/billing#x"},
        {"audience": "payroll"},
        {"audience": ""},
    ):
        with pytest.raises(InvalidArgument) as refused:
            exchange.exchange(_form(subject, **extra), now=NOW)
        assert refused.value.metadata["error"] == "invalid_target", extra
        assert refused.value.metadata["tenant"] == "demo"  # audited in the tenant's chain


async def test_repeated_resources_and_audiences_bind_the_union_and_one_unserved_refuses_all(issuer):
    exchange = await _exchange(issuer, ExchangeAllowance(servers=("billing", "crm")))
    subject = issuer.token(AUDIENCE, scope="read_invoice")
    form = _form(subject) | {"resource": (AUDIENCE, f"{AUDIENCE}/billing"), "audience": ("crm", "billing")}
    issued = exchange.exchange(form, now=NOW)
    assert issued.servers == ("default", "billing", "crm")
    assert _verify(issued.token).servers == frozenset({"default", "billing", "crm"})
    for extra in (
        {"resource": (f"{AUDIENCE}/billing", f"{AUDIENCE}/payroll")},
        {"audience": ("crm", "payroll")},
        {"resource": (f"{AUDIENCE}/billing",), "audience": ("crm", "")},
    ):
        with pytest.raises(InvalidArgument) as refused:
            exchange.exchange(_form(subject) | extra, now=NOW)
        assert refused.value.metadata["error"] == "invalid_target", extra


async def test_an_actor_token_narrows_the_issued_token_and_is_recorded(issuer):
    exchange = await _exchange(issuer, ExchangeAllowance(max_ttl_s=3600))
    subject = issuer.token(AUDIENCE, scope="read_invoice list_invoices", lifetime_s=1200, jti="subj-1")
    actor = issuer.token(AUDIENCE, sub="orchestrator", scope="list_invoices pay", lifetime_s=300, jti="act-1")
    issued = exchange.exchange(
        _form(subject, actor_token=actor, actor_token_type="urn:ietf:params:oauth:token-type:jwt"), now=NOW
    )
    token = _verify(issued.token)
    assert token.agent == "agent-7" and token.jti == "subj-1"  # on behalf of the subject
    assert token.tools == frozenset({"list_invoices"})  # no wider than both
    assert token.expires <= datetime.fromtimestamp(
        jwt.decode(actor, options={"verify_signature": False})["exp"], UTC
    )
    assert issued.actor is not None and issued.actor["agent"] == "orchestrator"
    assert issued.actor["issuer"] == issuer.issuer and issued.actor["jti"] == "act-1"
    # A scope beyond the actor's tools is a widening, refused.
    with pytest.raises(InvalidArgument) as refused:
        exchange.exchange(
            _form(subject, actor_token=actor, actor_token_type=ACCESS_TOKEN_TYPE, scope="read_invoice"),
            now=NOW,
        )
    assert refused.value.metadata["error"] == "invalid_scope"


@pytest.mark.parametrize(
    ("case", "error"),
    [
        ("actor-type", "invalid_request"),
        ("type-without-actor", "invalid_request"),
        ("actor-expired", "invalid_grant"),
        ("actor-unsigned", "invalid_grant"),
        ("refresh-token-subject", "invalid_request"),
    ],
)
async def test_bad_actor_tokens_and_token_types_are_refused(issuer, case, error):
    exchange = await _exchange(issuer, ExchangeAllowance())
    form = _form(issuer.token(AUDIENCE, scope="read_invoice"))
    actor = issuer.token(AUDIENCE, sub="orchestrator", scope="read_invoice")
    if case == "actor-type":
        form.update(actor_token=actor, actor_token_type="urn:ietf:params:oauth:token-type:saml2")
    elif case == "type-without-actor":
        form["actor_token_type"] = ACCESS_TOKEN_TYPE
    elif case == "actor-expired":
        expired = issuer.token(AUDIENCE, sub="orchestrator", exp=int(NOW.timestamp()) - 60)
        form.update(actor_token=expired, actor_token_type=ACCESS_TOKEN_TYPE)
    elif case == "actor-unsigned":
        claims = {"iss": issuer.issuer, "aud": AUDIENCE, "exp": 2**31, "sub": "orchestrator"}
        form.update(
            actor_token=jwt.encode(claims, None, algorithm="none"), actor_token_type=ACCESS_TOKEN_TYPE
        )
    else:
        form["subject_token_type"] = "urn:ietf:params:oauth:token-type:refresh_token"
    with pytest.raises(InvalidArgument) as refused:
        exchange.exchange(form, now=NOW)
    assert refused.value.metadata["error"] == error
