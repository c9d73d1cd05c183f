"""Offline attenuation (ours and plain pymacaroons), budget nesting, ancestry, inspect, wire decoder."""

from __future__ import annotations

import base64
from datetime import UTC, datetime, timedelta
from decimal import Decimal

import pytest
from pymacaroons import Macaroon
from pymacaroons.serializers.binary_serializer import BinarySerializer

from authz.errors import InvalidArgument
from authz.secrets import Secret
from authz.token import (
    AuthenticatedToken,
    BudgetCounter,
    KeyRing,
    TokenAuthenticator,
    TokenRejection,
    ToolsCaveat,
    attenuate,
    inspect,
    mint,
)
from authz.token._wire import b64url_decode, decode_macaroon

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


def pymacaroons_attenuate(token: str, *caveats: str) -> str:
    """What a holder with nothing but pymacaroons does."""
    macaroon = Macaroon.deserialize(token)
    for caveat in caveats:
        macaroon.add_first_party_caveat(caveat)
    raw = BinarySerializer().serialize_raw(macaroon)
    return base64.urlsafe_b64encode(raw).decode()  # padded: Tessera accepts both


def call(auth: AuthenticatedToken, tool: str, **arguments):
    return auth.check(now=NOW, tool=tool, arguments=arguments, prompt=None)


@pytest.mark.parametrize("attenuator", [attenuate, lambda token, cavs: pymacaroons_attenuate(token, *cavs)])
def test_attenuation_narrows(ring, authn, attenuator):
    parent = mint(ring, tenant="acme", tools=["read", "pay"], expires=NOW + timedelta(days=1))
    child = attenuator(parent, ["tools = pay", "arg:amount <= 100", "expires < 2026-06-01T13:00:00Z"])
    auth = authenticated(authn, child)
    assert call(auth, "pay", amount=50) is None
    assert "not allowed by caveat 'tools = pay'" in call(auth, "read").reason
    assert (
        call(auth, "pay", amount=500).reason == "argument 'amount' = 500 violates caveat 'arg:amount <= 100'"
    )
    late = auth.check(now=NOW + timedelta(hours=1), tool="pay", arguments={"amount": 1}, prompt=None)
    assert late == TokenRejection("token expired at 2026-06-01T13:00:00Z")
    # the parent is untouched
    assert call(authenticated(authn, parent), "read") is None


def test_attenuation_cannot_widen(ring, authn):
    parent = mint(ring, tenant="acme", tools=["read_invoice"], args=["amount <= 1000"])
    child = pymacaroons_attenuate(parent, "tools = read_invoice,delete_invoice", "arg:amount <= 5000")
    auth = authenticated(authn, child)
    assert auth.tools == frozenset({"read_invoice"})
    rejection = call(auth, "delete_invoice", amount=1)
    assert rejection.reason == "tool 'delete_invoice' not allowed by caveat 'tools = read_invoice'"
    assert call(auth, "read_invoice", amount=2000).reason.endswith("violates caveat 'arg:amount <= 1000'")


def test_attenuate_output_and_padded_input(ring, authn):
    parent = next(t for t in (mint(ring, tenant="acme", jti="j" * n) for n in range(1, 5)) if len(t) % 4)
    padded = parent + "=" * (-len(parent) % 4)
    child = attenuate(padded, ["tools = a"])
    assert "=" not in child
    assert child == attenuate(parent, ["tools = a"])
    assert attenuate(parent, []) == parent
    assert authenticated(authn, child).tools == frozenset({"a"})


@pytest.mark.parametrize(
    "caveats",
    [
        ["foo = 1"],
        ["tools = "],
        ["arg:amount <= lots"],
        ["tenant = globex"],
        ["agent = mallory"],
        "tools = a",
    ],
)
def test_attenuate_refuses_bad_caveats(ring, caveats):
    token = mint(ring, tenant="acme", agent="bot")
    with pytest.raises(InvalidArgument):
        attenuate(token, caveats)


def test_attenuate_refuses_malformed_tokens():
    for token in ("", "not base64!", base64.urlsafe_b64encode(b"\x02garbage").decode()):
        with pytest.raises(InvalidArgument):
            attenuate(token, ["tools = a"])


def test_attenuate_allows_same_agent_and_tenant(ring, authn):
    child = attenuate(mint(ring, tenant="acme", agent="bot"), ["agent = bot", "tenant = acme"])
    assert authenticated(authn, child).agent == "bot"


def test_attenuate_binds_an_unbound_token_to_an_agent(ring, authn):
    child = attenuate(mint(ring, tenant="acme"), ["agent = sub-agent"])
    auth = authenticated(authn, child)
    assert auth.agent == "sub-agent"
    assert (
        "bound to agent 'sub-agent'"
        in auth.check(now=NOW, tool=None, arguments=None, prompt=None, expected_agent="other").reason
    )


# --- revocation ancestry and budget nesting ---------------------------------------------------------


def test_ancestor_ids_include_every_parent(ring, authn):
    parent = mint(ring, tenant="acme", tools=["a", "b"])
    child = attenuate(parent, ["tools = a"])
    grandchild = attenuate(child, ["arg:x = 1", "arg:y = 2"])
    p, c, g = (authenticated(authn, t) for t in (parent, child, grandchild))
    assert p.token_id in c.ancestor_ids and p.token_id in g.ancestor_ids and c.token_id in g.ancestor_ids
    assert g.ancestor_ids[: len(c.ancestor_ids)] == c.ancestor_ids
    assert c.ancestor_ids[: len(p.ancestor_ids)] == p.ancestor_ids
    assert len(g.ancestor_ids) == len(g.caveats) + 1 == len(set(g.ancestor_ids))
    assert g.token_id == g.ancestor_ids[-1] and g.jti == p.jti
    assert c.token_id not in p.ancestor_ids


def test_budget_counters_are_shared_with_descendants(ring, authn):
    parent = mint(ring, tenant="acme", max_calls=10, max_cost="50")
    child = attenuate(parent, ["max_calls = 3", "tools = a"])
    sibling = pymacaroons_attenuate(parent, "max_cost = 2.5")
    grandchild = attenuate(child, ["max_calls = 1"])
    p, c, s, g = (authenticated(authn, t) for t in (parent, child, sibling, grandchild))

    assert [(b.kind, b.limit) for b in p.budget_counters] == [("calls", 10), ("cost", Decimal(50))]
    assert c.budget_counters[:2] == p.budget_counters
    assert s.budget_counters[:2] == p.budget_counters
    assert g.budget_counters[:3] == c.budget_counters
    assert c.budget_counters[2] == BudgetCounter(c.budget_counters[2].key, "calls", 3)
    assert s.budget_counters[2] == BudgetCounter(s.budget_counters[2].key, "cost", Decimal("2.5"))
    assert g.budget_counters[3].limit == 1
    keys = [
        b.key for b in (*p.budget_counters, c.budget_counters[2], s.budget_counters[2], g.budget_counters[3])
    ]
    assert len(set(keys)) == len(keys)
    # a counter's key is the id of the chain prefix that ends with its caveat
    for auth in (p, c, s, g):
        for counter in auth.budget_counters:
            index = auth.ancestor_ids.index(counter.key)
            limit_caveat = auth.caveats[index - 1]
            assert limit_caveat.limit == counter.limit


def test_budget_keys_do_not_expose_chain_signatures(ring, authn):
    token = mint(ring, tenant="acme", extra_caveats=["max_calls = 5", "tools = a"], jti="j")
    macaroon = Macaroon.deserialize(token)
    prefix = Macaroon.deserialize(mint(ring, tenant="acme", extra_caveats=["max_calls = 5"], jti="j"))
    (counter,) = authenticated(authn, token).budget_counters
    assert counter.key not in (macaroon.signature, prefix.signature)
    assert counter.key == inspect(prefix.serialize(serializer=BinarySerializer())).token_id


# --- inspect ----------------------------------------------------------------------------------------


def test_inspect_reads_without_a_key(ring, authn):
    token = mint(
        ring,
        tenant="acme",
        agent="bot",
        tools=["a", "b"],
        expires=NOW + timedelta(hours=2),
        not_before=NOW,
        jti="jti-7",
        kid="k1",
    )
    token = attenuate(token, ["tools = b,c", "expires < 2026-06-01T13:00:00Z"])
    info = inspect(token)
    assert (info.version, info.tenant, info.kid, info.jti, info.location) == (
        1,
        "acme",
        "k1",
        "jti-7",
        "tessera",
    )
    assert info.agent == "bot"
    assert info.tools == frozenset({"b"})
    assert info.expires == NOW + timedelta(hours=1)
    assert info.not_before == NOW
    assert info.caveats[-2:] == ("tools = b,c", "expires < 2026-06-01T13:00:00Z")
    assert isinstance(info.parsed_caveats[-2], ToolsCaveat)
    assert info.problems == ()
    assert info.token_id == authenticated(authn, token).token_id


def test_inspect_reports_problems(ring):
    token = pymacaroons_attenuate(mint(ring, tenant="acme", agent="a"), "foo = 1", "agent = b")
    info = inspect(token)
    assert info.parsed_caveats[-2] is None
    assert info.problems == ("unknown caveat 'foo = 1'", "conflicting agent caveats: 'a' and 'b'")
    assert info.agent is None


def test_inspect_refuses_undecodable_tokens():
    for token in ("", "!!", base64.urlsafe_b64encode(b"\x02\x00").decode()):
        with pytest.raises(InvalidArgument):
            inspect(token)


# --- our V2 decoder agrees with pymacaroons ---------------------------------------------------------


def test_decoder_matches_pymacaroons(ring):
    tokens = [
        mint(ring, tenant="acme"),
        mint(ring, tenant="acme", location=""),
        mint(ring, tenant="acme", agent="ü-agent", tools=["a"] * 3, args=["memo = " + "x" * 300]),
        pymacaroons_attenuate(mint(ring, tenant="acme"), *[f"arg:n{i} = {i}" for i in range(40)]),
    ]
    for token in tokens:
        ours = decode_macaroon(b64url_decode(token))
        theirs = Macaroon.deserialize(token)
        assert ours.location == theirs.location
        assert ours.identifier == theirs.identifier_bytes
        assert ours.caveats == tuple(c.caveat_id_bytes for c in theirs.caveats)
        assert ours.signature.hex() == theirs.signature


def test_token_caveat_count_is_bounded(ring):
    token = mint(ring, tenant="acme")
    with pytest.raises(InvalidArgument):
        attenuate(token, [f"arg:n = {i}" for i in range(64)])
