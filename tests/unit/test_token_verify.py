"""Minting and verification: TokenAuthenticator.authenticate and AuthenticatedToken.check."""

from __future__ import annotations

import base64
import binascii
import hmac
import json
from datetime import UTC, datetime, timedelta

import pytest
from pymacaroons import Caveat, Macaroon, Verifier
from pymacaroons.macaroon import MACAROON_V1, MACAROON_V2
from pymacaroons.serializers.binary_serializer import BinarySerializer

from authz.errors import InvalidArgument
from authz.secrets import Secret
from authz.token import (
    MAX_TOKEN_LENGTH,
    AuthenticatedToken,
    KeyRing,
    TokenAuthenticator,
    TokenRejection,
    hash_prompt,
    inspect,
    mint,
)

MASTER = b"0123456789abcdef0123456789abcdef"
NOW = datetime(2026, 6, 1, 12, tzinfo=UTC)


@pytest.fixture
def ring() -> KeyRing:
    return KeyRing(Secret(MASTER))


@pytest.fixture
def authn(ring) -> TokenAuthenticator:
    return TokenAuthenticator(ring)


def authenticated(authn: TokenAuthenticator, token: str) -> AuthenticatedToken:
    result = authn.authenticate(token)
    assert isinstance(result, AuthenticatedToken), result
    return result


def rejected(authn: TokenAuthenticator, token) -> str:
    result = authn.authenticate(token)
    assert isinstance(result, TokenRejection), result
    return result.reason


def b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).decode().rstrip("=")


def unb64(token: str) -> bytes:
    return base64.urlsafe_b64decode(token + "=" * (-len(token) % 4))


def add_caveats(token: str, *caveats: str) -> str:
    """Attenuate with plain pymacaroons, as any holder could."""
    macaroon = Macaroon.deserialize(token)
    for caveat in caveats:
        macaroon.add_first_party_caveat(caveat)
    return macaroon.serialize(serializer=BinarySerializer())


def build(
    ring: KeyRing, identifier: bytes, caveats=(), *, tenant="acme", kid="k1", version=MACAROON_V2
) -> str:
    """A macaroon signed with the real root key but an arbitrary identifier."""
    macaroon = Macaroon(location="x", identifier=identifier, key=ring.root_key(tenant, kid), version=version)
    for caveat in caveats:
        macaroon.add_first_party_caveat(caveat)
    return macaroon.serialize(serializer=BinarySerializer())


def ident(**fields) -> bytes:
    return json.dumps({"v": 1, "tenant": "acme", "kid": "k1", "jti": "j1", **fields}).encode()


# --- round trip -------------------------------------------------------------------------------------


def test_mint_authenticate_round_trip(ring, authn):
    token = mint(
        ring,
        tenant="acme",
        agent="billing-bot",
        tools=["read_invoice", "list_invoices"],
        expires=NOW + timedelta(hours=1),
        not_before=NOW - timedelta(hours=1),
        max_calls=10,
        max_cost="2.5",
        args=["amount <= 1000", "arg:currency in EUR,USD"],
        prompt_sha256=hash_prompt("show my invoices"),
        extra_caveats=["arg:customer = c-42"],
        jti="jti-1",
    )
    assert "=" not in token and "+" not in token and "/" not in token
    auth = authenticated(authn, token)
    assert (auth.tenant, auth.kid, auth.jti, auth.agent) == ("acme", "k1", "jti-1", "billing-bot")
    assert auth.tools == frozenset({"read_invoice", "list_invoices"})
    assert auth.expires == NOW + timedelta(hours=1)
    assert auth.not_before == NOW - timedelta(hours=1)
    assert auth.raw_caveats == (
        "tenant = acme",
        "agent = billing-bot",
        "tools = read_invoice,list_invoices",
        "not_before > 2026-06-01T11:00:00Z",
        "expires < 2026-06-01T13:00:00Z",
        "max_calls = 10",
        "max_cost = 2.5",
        f"prompt_sha256 = {hash_prompt('show my invoices')}",
        "arg:amount <= 1000",
        "arg:currency in EUR,USD",
        "arg:customer = c-42",
    )
    assert auth.token_id == inspect(token).token_id == auth.ancestor_ids[-1]
    assert len(auth.ancestor_ids) == len(auth.caveats) + 1
    ok = auth.check(
        now=NOW,
        tool="read_invoice",
        arguments={"amount": 10, "currency": "EUR", "customer": "c-42"},
        prompt="show my invoices",
        expected_tenant="acme",
        expected_agent="billing-bot",
    )
    assert ok is None


def test_identifier_is_compact_json_and_jti_random(ring):
    first, second = mint(ring, tenant="acme"), mint(ring, tenant="acme")
    macaroon = Macaroon.deserialize(first)
    identifier = json.loads(macaroon.identifier)
    assert set(identifier) == {"v", "tenant", "kid", "jti"}
    assert macaroon.identifier == json.dumps(identifier, separators=(",", ":")).encode()
    assert identifier["v"] == 1 and identifier["tenant"] == "acme" and identifier["kid"] == "k1"
    assert inspect(first).jti != inspect(second).jti
    assert macaroon.location == "tessera"
    assert macaroon.version == MACAROON_V2


def test_plain_pymacaroons_verifies_tessera_tokens(ring):
    token = mint(ring, tenant="acme", tools=["a"], max_calls=3)
    verifier = Verifier()
    verifier.satisfy_general(lambda caveat: True)
    assert verifier.verify(Macaroon.deserialize(token), ring.root_key("acme", "k1"))


# --- caveats allow and deny as written --------------------------------------------------------------

PROMPT = "pay invoice 42"
CALL = {"tool": "pay", "arguments": {"amount": 500}, "prompt": PROMPT}

CHECK_CASES = [
    # (caveats, overrides of CALL/now, expected reason or None)
    (["expires < 2026-06-01T12:00:01Z"], {}, None),
    (["expires < 2026-06-01T12:00:00Z"], {}, "token expired at 2026-06-01T12:00:00Z"),
    (["expires < 2026-06-01T11:00:00Z"], {}, "token expired at 2026-06-01T11:00:00Z"),
    (["expires < 2026-06-01T14:00:00+02:00"], {}, "token expired at 2026-06-01T14:00:00+02:00"),
    (["not_before > 2026-06-01T12:00:00Z"], {}, None),
    (["not_before > 2026-06-01T12:00:01Z"], {}, "token not valid before 2026-06-01T12:00:01Z"),
    (["tools = pay,refund"], {}, None),
    (
        ["tools = read_invoice,list_invoices"],
        {},
        "tool 'pay' not allowed by caveat 'tools = read_invoice,list_invoices'",
    ),
    (["tools = pay,refund", "tools = refund"], {}, "tool 'pay' not allowed by caveat 'tools = refund'"),
    (["arg:amount <= 1000"], {}, None),
    (["arg:amount <= 100"], {}, "argument 'amount' = 500 violates caveat 'arg:amount <= 100'"),
    (["arg:currency = EUR"], {}, "argument 'currency' is missing, required by caveat 'arg:currency = EUR'"),
    (["arg:amount <= 1000"], {"arguments": None}, "argument 'amount' is missing"),
    ([f"prompt_sha256 = {hash_prompt(PROMPT)}"], {}, None),
    ([f"prompt_sha256 = {hash_prompt(PROMPT).upper()}"], {}, None),
    ([f"prompt_sha256 = {hash_prompt('other')}"], {}, "prompt does not match caveat"),
    ([f"prompt_sha256 = {hash_prompt(PROMPT)}"], {"prompt": None}, "requires a prompt, none given"),
    (["max_calls = 0", "max_cost = 0"], {}, None),  # budgets are the budget stage's job
    (["agent = bot"], {"expected_agent": "bot"}, None),
    (["agent = bot"], {"expected_agent": "other"}, "token is bound to agent 'bot', not 'other'"),
    ([], {"expected_agent": "any-agent"}, None),  # an unbound token serves any agent
    ([], {"expected_tenant": "acme"}, None),
    ([], {"expected_tenant": "globex"}, "token belongs to tenant 'acme', not 'globex'"),
    # non-tool messages: tool, argument and prompt caveats are not evaluated, time and identity are
    (
        ["tools = read", "arg:amount <= 1", f"prompt_sha256 = {'0' * 64}"],
        {"tool": None, "prompt": None},
        None,
    ),
    (["tools = read", "expires < 2026-06-01T00:00:00Z"], {"tool": None}, "token expired at"),
    (["agent = bot"], {"tool": None, "expected_agent": "other"}, "token is bound to agent"),
    # time is checked before tools
    (["tools = read", "expires < 2026-06-01T00:00:00Z"], {}, "token expired at"),
]


@pytest.mark.parametrize(("caveats", "overrides", "expected"), CHECK_CASES)
def test_check(ring, authn, caveats, overrides, expected):
    auth = authenticated(authn, mint(ring, tenant="acme", extra_caveats=caveats))
    result = auth.check(**{"now": NOW, **CALL, **overrides})
    if expected is None:
        assert result is None
    else:
        assert isinstance(result, TokenRejection)
        assert expected in result.reason


def test_check_refuses_naive_now(ring, authn):
    auth = authenticated(authn, mint(ring, tenant="acme"))
    with pytest.raises(InvalidArgument):
        auth.check(now=datetime(2026, 1, 1), tool=None, arguments=None, prompt=None)


def test_mint_args_prefix_is_optional(ring, authn):
    auth = authenticated(authn, mint(ring, tenant="acme", args=["amount <= 5", "arg:n = 1"]))
    assert auth.raw_caveats[1:] == ("arg:amount <= 5", "arg:n = 1")


def test_mint_validates_its_inputs(ring):
    with pytest.raises(InvalidArgument):
        mint(ring, tenant="acme", expires=datetime(2026, 1, 1))
    with pytest.raises(InvalidArgument):
        mint(ring, tenant="acme", tools=[])
    with pytest.raises(InvalidArgument):
        mint(ring, tenant="acme", tools="abc")
    with pytest.raises(InvalidArgument):
        mint(ring, tenant="acme", max_calls=-1)
    with pytest.raises(InvalidArgument):
        mint(ring, tenant="acme", max_cost=0.1)  # floats round: refused
    with pytest.raises(InvalidArgument):
        mint(ring, tenant="acme", extra_caveats=["foo = 1"])
    with pytest.raises(InvalidArgument):
        mint(ring, tenant="acme", extra_caveats=["tenant = globex"])
    with pytest.raises(InvalidArgument):
        mint(ring, tenant="acme", agent="a", extra_caveats=["agent = b"])
    with pytest.raises(InvalidArgument):
        mint(ring, tenant="a|b")
    with pytest.raises(InvalidArgument):
        mint(ring, tenant="acme", jti="has space")
    with pytest.raises(InvalidArgument):
        mint(ring, tenant="acme", tools=["a", 1])
    with pytest.raises(InvalidArgument):
        mint(ring, tenant="acme", args="amount <= 1")
    with pytest.raises(InvalidArgument):
        mint(ring, tenant="acme", extra_caveats=[None])


# --- forgeries and malformed tokens -----------------------------------------------------------------


def test_every_flipped_byte_is_rejected(ring, authn):
    token = mint(ring, tenant="acme", tools=["a"], args=["amount <= 10"], location="loc")
    data = unb64(token)
    assert data[:6] == b"\x02\x01\x03loc"
    reasons = set()
    for i in (*range(3), *range(6, len(data))):  # the location is a hint, not signed (macaroon semantics)
        forged = bytearray(data)
        forged[i] ^= 0x01
        reasons.add(rejected(authn, b64(bytes(forged))).split(":")[0])
    assert "bad signature" in reasons


def test_flipped_signature_byte_is_a_bad_signature(ring, authn):
    data = bytearray(unb64(mint(ring, tenant="acme")))
    data[-1] ^= 0x80
    assert rejected(authn, b64(bytes(data))) == "bad signature"


def test_edited_caveat_is_a_bad_signature(ring, authn):
    macaroon = Macaroon.deserialize(mint(ring, tenant="acme", args=["amount <= 10"]))
    macaroon.caveats[-1].caveat_id = "arg:amount <= 10000"
    assert rejected(authn, macaroon.serialize(serializer=BinarySerializer())) == "bad signature"


def test_removed_caveat_is_a_bad_signature(ring, authn):
    macaroon = Macaroon.deserialize(mint(ring, tenant="acme", tools=["read"]))
    del macaroon.caveats[-1]
    assert rejected(authn, macaroon.serialize(serializer=BinarySerializer())) == "bad signature"


def test_wrong_master_is_a_bad_signature(authn):
    other = KeyRing(Secret(b"another master key of 32 bytes!!"))
    assert rejected(authn, mint(other, tenant="acme")) == "bad signature"


def test_identifier_tenant_swap_is_a_bad_signature(ring, authn):
    token = mint(ring, tenant="acme", jti="j1")
    macaroon = Macaroon.deserialize(token)
    macaroon.identifier = ident(tenant="globex")
    assert rejected(authn, macaroon.serialize(serializer=BinarySerializer())) == "bad signature"


def test_unknown_kid(ring, authn):
    assert rejected(authn, build(ring, ident(kid="k9"), kid="k1")) == "unknown or retired key id 'k9'"


@pytest.mark.parametrize(
    ("caveat", "reason"),
    [
        ("foo = 1", "unknown caveat 'foo = 1'"),
        (
            "max_calls = many",
            "malformed caveat 'max_calls = many': expected an integer between 0 and 2**63-1",
        ),
        ("tenant = globex", "caveat 'tenant = globex' does not match the token's tenant 'acme'"),
        ("agent = mallory", "conflicting agent caveats: 'bot' and 'mallory'"),
    ],
)
def test_caveats_appended_by_a_holder_that_invalidate_the_token(ring, authn, caveat, reason):
    token = add_caveats(mint(ring, tenant="acme", agent="bot"), caveat)
    assert rejected(authn, token) == reason


def test_repeated_equal_agent_caveats_are_fine(ring, authn):
    token = add_caveats(mint(ring, tenant="acme", agent="bot"), "agent = bot")
    assert authenticated(authn, token).agent == "bot"


def test_non_utf8_caveat_is_rejected(ring, authn):
    # pymacaroons refuses to add a non-UTF-8 caveat, so extend the signature chain by hand
    macaroon = Macaroon.deserialize(build(ring, ident(), ["tenant = acme"]))
    macaroon.caveats.append(Caveat(caveat_id=b"\xff\xfe", version=MACAROON_V2))
    signature = hmac.digest(binascii.unhexlify(macaroon.signature), b"\xff\xfe", "sha256")
    macaroon.signature = binascii.hexlify(signature)
    assert (
        rejected(authn, macaroon.serialize(serializer=BinarySerializer()))
        == "malformed token: caveat is not UTF-8"
    )


def test_third_party_caveat_is_rejected(ring, authn):
    macaroon = Macaroon.deserialize(mint(ring, tenant="acme"))
    macaroon.add_third_party_caveat("https://idp.example", b"third-party-key", "tp-id")
    assert (
        rejected(authn, macaroon.serialize(serializer=BinarySerializer()))
        == "third-party caveats are not supported"
    )


@pytest.mark.parametrize(
    "token",
    [
        "",
        "!!!!",
        "abc def",
        "a",
        "AgEH+/==",
        "AA",
        b64(b"\x02"),
        b64(b"\x02\x00\x00\x00"),
        b64(bytes(range(200))),
        "A" * (MAX_TOKEN_LENGTH + 4),
        None,
        b"bytes-token",
    ],
)
def test_malformed_tokens(authn, token):
    assert rejected(authn, token).startswith("malformed token")


def test_truncated_and_trailing_bytes(ring, authn):
    data = unb64(mint(ring, tenant="acme"))
    assert rejected(authn, b64(data[:-1])).startswith("malformed token")
    assert rejected(authn, b64(data + b"\x00")).startswith("malformed token")
    assert rejected(authn, mint(ring, tenant="acme") + "A").startswith("malformed token")


def test_v1_serialization_is_rejected(ring, authn):
    v1 = build(ring, ident(), ["tenant = acme"], version=MACAROON_V1)
    assert rejected(authn, v1).startswith("malformed token")


@pytest.mark.parametrize(
    ("identifier", "reason"),
    [
        (b"not json", "malformed token: identifier is not a JSON object"),
        (b"[1]", "malformed token: identifier must have exactly the keys v, tenant, kid, jti"),
        (ident(extra=1), "malformed token: identifier must have exactly the keys v, tenant, kid, jti"),
        (ident(v=2), "unsupported token version 2"),
        (ident(v=True), "malformed token: identifier version is not an integer"),
        (ident(jti=""), "malformed token: invalid jti in identifier"),
        (ident(tenant=5), "malformed token: invalid tenant in identifier"),
        (
            b'{"v":1,"v":1,"tenant":"acme","kid":"k1","jti":"j"}',
            "malformed token: identifier is not a JSON object",
        ),
    ],
)
def test_bad_identifiers(ring, authn, identifier, reason):
    assert rejected(authn, build(ring, identifier, ["tenant = acme"])) == reason


def test_location_is_not_signed(ring, authn):
    token = mint(ring, tenant="acme", location="tessera")
    macaroon = Macaroon.deserialize(token)
    macaroon.location = "elsewhere"
    moved = authenticated(authn, macaroon.serialize(serializer=BinarySerializer()))
    assert moved.token_id == authenticated(authn, token).token_id


def test_reasons_never_contain_token_or_signature(ring, authn):
    token = mint(ring, tenant="acme", tools=["a"])
    data = bytearray(unb64(token))
    data[-1] ^= 1
    signature_hex = Macaroon.deserialize(token).signature
    for bad in (b64(bytes(data)), token + "A", add_caveats(token, "foo = 1")):
        reason = rejected(authn, bad)
        assert token[:40] not in reason and signature_hex not in reason and bad[:40] not in reason


# --- encoding, cache --------------------------------------------------------------------------------


def test_padded_and_unpadded_tokens_are_accepted(ring, authn):
    token = next(t for t in (mint(ring, tenant="acme", jti="j" * n) for n in range(1, 5)) if len(t) % 4)
    padded = base64.urlsafe_b64encode(unb64(token)).decode()
    assert padded.endswith("=") and padded.rstrip("=") == token
    assert authenticated(authn, padded).token_id == authenticated(authn, token).token_id
    assert rejected(authn, token + "=" * 3).startswith("malformed token")


def test_cache_returns_the_same_result(ring, authn):
    token = mint(ring, tenant="acme")
    first = authn.authenticate(token)
    assert authn.authenticate(token) is first
    bad = token[:-2] + ("A" if token[-2] != "A" else "B") + token[-1]
    rejection = authn.authenticate(bad)
    assert isinstance(rejection, TokenRejection)
    assert authn.authenticate(bad) is rejection
    info = authn.cache_info()
    assert info.hits == 2 and info.misses == 2


def test_tampered_token_is_not_served_from_the_cache_of_the_original(ring, authn):
    token = mint(ring, tenant="acme", tools=["read"])
    assert isinstance(authn.authenticate(token), AuthenticatedToken)
    data = bytearray(unb64(token))
    data[-5] ^= 0x10
    assert rejected(authn, b64(bytes(data))) == "bad signature"
    macaroon = Macaroon.deserialize(token)
    macaroon.caveats[-1].caveat_id = "tools = read,delete"
    assert rejected(authn, macaroon.serialize(serializer=BinarySerializer())) == "bad signature"
    assert isinstance(authn.authenticate(token), AuthenticatedToken)


def test_cache_is_bounded_and_can_be_disabled(ring):
    small = TokenAuthenticator(ring, cache_size=2)
    tokens = [mint(ring, tenant="acme") for _ in range(5)]
    for token in tokens:
        small.authenticate(token)
    assert small.cache_info().currsize == 2
    uncached = TokenAuthenticator(ring, cache_size=0)
    assert uncached.cache_info() is None
    assert uncached.authenticate(tokens[0]) == small.authenticate(tokens[0])
