"""SDK attenuate/inspect: offline, pymacaroons only, and held to the gateway's own token code."""

from __future__ import annotations

import base64
from datetime import UTC, datetime, timedelta
from decimal import Decimal

import pytest
from pymacaroons.serializers.binary_serializer import BinarySerializer

from authz import token as server
from authz.client import TokenInfo, attenuate, inspect
from authz.client._tokens import _Malformed, _parse
from authz.errors import InvalidArgument
from authz.secrets import Secret

MASTER = b"0123456789abcdef0123456789abcdef"
NOW = datetime(2026, 6, 1, 12, tzinfo=UTC)


@pytest.fixture(scope="module")
def ring() -> server.KeyRing:
    return server.KeyRing(Secret(MASTER))


@pytest.fixture(scope="module")
def parent(ring) -> str:
    return server.mint(ring, tenant="demo", agent="agent-1", expires=NOW + timedelta(days=30))


def authenticated(ring, token: str) -> server.AuthenticatedToken:
    result = server.TokenAuthenticator(ring).authenticate(token)
    assert isinstance(result, server.AuthenticatedToken), result
    return result


def test_attenuated_token_verifies_and_narrows(ring, parent):
    child = attenuate(
        parent,
        tools=["read_invoice", "transfer_funds"],
        max_calls=3,
        args=["amount <= 1000", "arg:currency in EUR,USD"],
        expires=NOW + timedelta(hours=1),
    )
    auth = authenticated(ring, child)
    assert auth.tools == frozenset({"read_invoice", "transfer_funds"})
    assert auth.expires == NOW + timedelta(hours=1)
    assert len(auth.budget_counters) == 1

    def check(tool, **arguments):
        return auth.check(now=NOW, tool=tool, arguments=arguments, prompt=None)

    assert check("transfer_funds", amount=500, currency="EUR") is None
    assert check("transfer_funds", amount=5000, currency="EUR") is not None
    assert check("transfer_funds", amount=5, currency="JPY") is not None
    assert check("delete_invoice", amount=5, currency="EUR") is not None
    assert (
        auth.check(
            now=NOW + timedelta(hours=2),
            tool="read_invoice",
            arguments={"amount": 1, "currency": "EUR"},
            prompt=None,
        )
        is not None
    )


def test_same_bytes_as_the_gateways_own_attenuate(parent):
    caveats = ["tools = read_invoice", "max_calls = 2", 'arg:invoice_id in ["INV-1001","INV-1002"]']
    ours = attenuate(parent, caveats=caveats)
    theirs = server.attenuate(parent, caveats)
    assert ours == theirs


def test_keyword_caveats_are_written_as_the_gateway_writes_them(parent):
    moment = datetime(2026, 7, 1, 8, 30, 15, 123456, tzinfo=UTC)
    child = attenuate(
        parent,
        agent="agent-1",
        tools=["a", "b"],
        not_before=datetime(2026, 6, 1, 0, 0, tzinfo=UTC),
        expires=moment,
        max_calls=5,
        max_cost="12.50",
        prompt="pay the ACME invoice",
        args={"invoice_id": "INV-1001", "amount": 10, "flag": True},
    )
    added = inspect(child).caveats[len(inspect(parent).caveats) :]
    assert added == (
        "agent = agent-1",
        "tools = a,b",
        "not_before > 2026-06-01T00:00:00Z",
        "expires < 2026-07-01T08:30:15.123456Z",
        "max_calls = 5",
        "max_cost = 12.50",
        f"prompt_sha256 = {server.hash_prompt('pay the ACME invoice')}",
        'arg:invoice_id = "INV-1001"',
        "arg:amount = 10",
        "arg:flag = true",
    )
    assert server.inspect(child).problems == ()


def test_timedelta_expiry_is_from_now(parent):
    before = datetime.now(UTC)
    caveat = inspect(attenuate(parent, expires=timedelta(minutes=5))).caveats[-1]
    assert caveat.startswith("expires < ")
    expires = datetime.fromisoformat(caveat.removeprefix("expires < "))
    assert before + timedelta(minutes=5) - timedelta(seconds=1) <= expires
    assert expires <= datetime.now(UTC) + timedelta(minutes=5)


def test_inspect_agrees_with_the_gateway(ring, parent):
    token = attenuate(
        attenuate(parent, tools=["a", "b", "c"], max_calls=10, max_cost=5),
        tools=["b", "c", "d"],
        max_calls=2,
        not_before=NOW - timedelta(days=1),
        expires=NOW + timedelta(days=1),
        args=["x = 1"],
        prompt="hello",
    )
    ours, theirs = inspect(token), server.inspect(token)
    assert isinstance(ours, TokenInfo)
    for name in (
        "tenant",
        "kid",
        "jti",
        "version",
        "location",
        "token_id",
        "caveats",
        "agent",
        "tools",
        "expires",
        "not_before",
    ):
        assert getattr(ours, name) == getattr(theirs, name), name
    assert ours.token_id == authenticated(ring, token).token_id
    assert ours.tools == frozenset({"b", "c"})
    assert ours.max_calls == 2 and ours.max_cost == Decimal(5)
    assert ours.args == ("arg:x = 1",)
    assert ours.prompt_sha256 == server.hash_prompt("hello")
    assert ours.problems == ()
    assert ours.allows_tool("b") and not ours.allows_tool("a")
    assert not ours.expired(NOW) and ours.expired(NOW + timedelta(days=2))


def raw_attenuate(token: str, *caveats: str) -> str:
    macaroon = BinarySerializer().deserialize_raw(base64.urlsafe_b64decode(token + "=" * (-len(token) % 4)))
    for caveat in caveats:
        macaroon.add_first_party_caveat(caveat)
    return base64.urlsafe_b64encode(BinarySerializer().serialize_raw(macaroon)).decode()  # padded


def test_inspect_reports_what_the_gateway_would_refuse(parent):
    token = raw_attenuate(parent, "colour = blue", "tenant = other", "agent = agent-2", "max_calls = 01")
    info = inspect(token)
    assert len(info.problems) == 4  # unknown, foreign tenant, conflicting agent, malformed
    assert set(server.inspect(token).problems) <= set(info.problems)  # the gateway stops at the first
    assert info.agent == "agent-1"


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({}, "at least one"),
        ({"tools": []}, "tools"),
        ({"tools": "read_invoice"}, "tools"),
        ({"tools": ["two words"]}, "tool name"),
        ({"tools": ["a,b"]}, "tool name"),
        ({"expires": datetime(2030, 1, 1)}, "timezone"),
        ({"max_calls": 1.0}, "max_calls"),
        ({"max_calls": -1}, "integer"),
        ({"max_cost": 1.5}, "max_cost"),
        ({"max_cost": "1.1234567"}, "decimal"),
        ({"args": ["amount <== 5"]}, "operator"),
        ({"args": ["amount < ten"]}, "number"),
        ({"args": ["amount < 1e999"]}, "finite"),
        ({"args": ["currency in EUR,,USD"]}, "empty item"),
        ({"args": ['x in {"a":1}']}, "list"),
        ({"args": "amount < 5"}, "args"),
        ({"agent": "agent-2"}, "conflicting"),
        ({"agent": "two words"}, "agent"),
        ({"caveats": ["tenant = acme"]}, "tenant"),
        ({"caveats": ["colour = blue"]}, "unknown"),
        ({"caveats": ["tools = a\nb"]}, "control"),
        ({"caveats": ["tools = " + "a" * 1100]}, "longer"),
        ({"caveats": "tools = a"}, "caveats"),
        ({"args": {"nan": float("nan")}}, "JSON compliant|finite"),
    ],
)
def test_attenuate_refuses_what_the_gateway_would_refuse(parent, kwargs, match):
    with pytest.raises(ValueError, match=match):
        attenuate(parent, **kwargs)


def test_too_many_caveats(parent):
    with pytest.raises(ValueError, match="at most 64"):
        attenuate(parent, caveats=[f"max_calls = {n}" for n in range(70)])


@pytest.mark.parametrize(
    "bad", ["", "not a token!", "AAAA", base64.urlsafe_b64encode(b"\x02garbage").decode(), "a" * 9000]
)
def test_garbage_is_not_a_token(bad):
    with pytest.raises(ValueError, match="not a Tessera token"):
        inspect(bad)
    with pytest.raises(ValueError, match="not a Tessera token"):
        attenuate(bad, max_calls=1)


def test_padded_and_pymacaroons_tokens_are_accepted(ring, parent):
    padded = raw_attenuate(parent, "max_calls = 9")
    assert padded.endswith("=") or len(padded) % 4 == 0
    child = attenuate(padded, tools=["read_invoice"])
    assert "=" not in child
    authenticated(ring, child)


# The caveat grammar, held to the gateway's parser: the SDK accepts exactly what the gateway accepts.
GRAMMAR = [
    "tenant = demo",
    "tenant = a|b",
    "tenant =  demo",
    "tenant demo",
    "tenant",
    "agent = agent-1",
    "agent = " + "x" * 256,
    "agent = " + "x" * 257,
    "agent = a b",
    "tools = a,b,c",
    "tools = a, b",
    "tools = a,,b",
    "tools = a ,b",
    "tools = " + "t" * 129,
    "tools = ",
    "prompts = summary,plan",
    "prompts = a, b",
    "prompts = a,,b",
    "prompts = " + "p" * 129,
    "resources = file:///public/,db://orders/",
    "resources = file:///a b",
    "resources = " + "r" * 512,
    "resources = " + "r" * 513,
    "servers = billing,default",
    "servers = Billing",
    "servers = -x",
    "servers = a_b-c",
    "servers = " + "s" * 64,
    "expires < 2026-01-01T00:00:00Z",
    "expires < 2026-01-01t00:00:00z",
    "expires < 2026-01-01T00:00:00+02:00",
    "expires < 2026-01-01T00:00:00.123456789Z",
    "expires < 2026-01-01T00:00:00",
    "expires < 2026-13-01T00:00:00Z",
    "expires < 2026-01-01T00:00:00+24:00",
    "expires > 2026-01-01T00:00:00Z",
    "expires < 2026-02-30T00:00:00Z",
    "not_before > 2026-01-01T00:00:00Z",
    "not_before < 2026-01-01T00:00:00Z",
    "max_calls = 0",
    "max_calls = 10",
    "max_calls = 010",
    "max_calls = -1",
    "max_calls = 9223372036854775807",
    "max_calls = 9223372036854775808",
    "max_calls = 1.0",
    "max_cost = 0",
    "max_cost = 12.5",
    "max_cost = 12.1234567",
    "max_cost = 1234567890123",
    "max_cost = .5",
    "prompt_sha256 = " + "a" * 64,
    "prompt_sha256 = " + "A" * 64,
    "prompt_sha256 = " + "a" * 63,
    "arg:amount <= 1000",
    "arg:amount <= 1e3",
    "arg:amount <= 1e999",
    "arg:amount < true",
    'arg:amount < "5"',
    "arg:amount > -5.5",
    "arg:payee.iban = DE89",
    "arg:payee..iban = x",
    "arg:a/b = 1",
    "arg:amount ~ 5",
    "arg:currency in EUR,USD",
    'arg:currency in ["EUR","USD"]',
    "arg:currency in EUR",
    'arg:c in {"a":1}',
    "arg:c in EUR, USD",
    "arg:c in EUR,,USD",
    "arg:c in 1,NaN",
    "arg:c = NaN",
    "arg:c = Infinity",
    "arg:c = [1,2]",
    'arg:c = {"a": [1e999]}',
    "arg:c = null",
    "arg:c =  x",
    "arg:c = x ",
    "arg:c =",
    "arg:c != x",
    "arg:c >= 0",
    "arg: = x",
    "arg:c",
    "colour = blue",
    "",
    " tools = a",
    "tools = a\tb",
    "tools = a\x7f",
    "agent = caf\u00e9",
    "tools = \u2003a",
    "agent = a\u2003",
    "arg:name = J\u00fcrgen",
    'arg:c in "x"',
    "arg:c in 5",
    "arg:c in [1,",
    "arg:c = [1,",
]


@pytest.mark.parametrize("caveat", GRAMMAR)
def test_grammar_matches_the_gateway(caveat):
    try:
        server.parse_caveat(caveat)
        gateway_accepts = True
    except InvalidArgument:
        gateway_accepts = False
    try:
        _parse(caveat)
        sdk_accepts = True
    except _Malformed:
        sdk_accepts = False
    assert sdk_accepts == gateway_accepts
