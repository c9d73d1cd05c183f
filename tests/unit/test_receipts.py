"""``authz.receipts``: signing, every refusal of the verifier, the replay cache, and the ASGI middleware
(driven with real ASGI messages, no server). The real stack is tested in
tests/integration/test_receipts.py."""

from __future__ import annotations

import asyncio
import hashlib
import itertools
import json
import subprocess
import sys
import textwrap

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from authz.receipts import (
    ReceiptError,
    ReceiptKey,
    ReceiptMiddleware,
    ReceiptSigner,
    ReceiptVerifier,
    ReplayCache,
    derived_keys,
    jwks,
)
from authz.receipts._format import b64u, parse, unb64u
from authz.receipts._verify import FAILED_REFETCH_S
from authz.secrets import Secret
from authz.token import KeyRing

NOW = 1_800_000_000.0
BODY = b'{"jsonrpc":"2.0","id":1,"method":"tools/call","params":{"name":"read_invoice","arguments":{}}}'


class Clock:
    def __init__(self, now: float = NOW):
        self.now = now

    def __call__(self) -> float:
        return self.now


def keys(*kids: str) -> list[ReceiptKey]:
    return [ReceiptKey.from_seed(kid, bytes([i + 1]) * 32) for i, kid in enumerate(kids)]


def issue(signer: ReceiptSigner, body: bytes = BODY, decision_id: str = "d-1") -> str:
    return signer.issue(
        tenant="demo",
        agent="agent-1",
        tool="read_invoice",
        body=body,
        decision_id=decision_id,
        audit_seq=42,
        audit_hash="ab" * 32,
    )


def test_a_receipt_verifies_and_carries_its_claims():
    clock = Clock()
    (key,) = keys("r1")
    token = issue(ReceiptSigner(key, ttl_s=60, clock=clock))
    verifier = ReceiptVerifier(jwks([key]), clock=clock)
    receipt = verifier.verify(token, BODY)
    assert (receipt.kid, receipt.tenant, receipt.agent, receipt.tool) == (
        "r1",
        "demo",
        "agent-1",
        "read_invoice",
    )
    assert (receipt.decision_id, receipt.jti, receipt.audit_seq, receipt.audit_hash) == (
        "d-1",
        "d-1",
        42,
        "ab" * 32,
    )
    assert (receipt.iat, receipt.exp) == (int(NOW), int(NOW) + 60)
    header = json.loads(__import__("base64").urlsafe_b64decode(token.split(".")[0] + "=="))
    assert header == {"alg": "EdDSA", "kid": "r1", "typ": "tessera-receipt"}


@pytest.mark.parametrize(
    ("case", "reason"),
    [
        ("missing", "missing"),
        ("garbage", "malformed"),
        ("unknown key", "unknown_key"),
        ("forged", "bad_signature"),
        ("other body", "wrong_body"),
        ("expired", "expired"),
        ("future", "not_yet_valid"),
        ("replayed", "replayed"),
        ("other tenant", "wrong_tenant"),
        ("other server", "wrong_server"),
    ],
)
def test_each_refusal_names_its_reason(case, reason):
    clock = Clock()
    r1, r2 = keys("r1", "r2")
    signer = ReceiptSigner(r1, ttl_s=60, clock=clock)
    token = issue(signer)
    verifier = ReceiptVerifier(jwks([r1]), clock=clock, tenant="globex" if case == "other tenant" else None)
    body = BODY
    if case == "missing":
        token = None
    elif case == "garbage":
        token = "not.a.receipt"
    elif case == "unknown key":
        token = issue(ReceiptSigner(r2, clock=clock))
    elif case == "forged":  # claims changed after signing
        head, claims, sig = token.split(".")
        doc = json.loads(__import__("base64").urlsafe_b64decode(claims + "=="))
        doc["tool"] = "transfer_funds"
        token = ".".join([head, b64u(json.dumps(doc).encode()), sig])
    elif case == "other body":
        body = BODY.replace(b"read_invoice", b"transfer_funds")
    elif case == "expired":
        clock.now = NOW + 60 + 5  # past expiry and the leeway
    elif case == "future":
        clock.now = NOW - 6
    elif case == "replayed":
        verifier.verify(token, body)
    elif case == "other server":  # a receipt for the billing server, spent at the default one
        token = signer.issue(
            tenant="demo", agent="a", tool="t", body=body, decision_id="d-9", audit_seq=1, audit_hash="h",
            server="billing",
        )  # fmt: skip
    with pytest.raises(ReceiptError) as err:
        verifier.verify(token, body)
    assert err.value.reason == reason


def test_a_named_tool_server_accepts_only_receipts_for_itself():
    clock = Clock()
    (key,) = keys("r1")
    signer = ReceiptSigner(key, clock=clock)

    def for_server(server, decision_id):
        return signer.issue(
            tenant="demo", agent="a", tool="t", body=BODY, decision_id=decision_id, audit_seq=1,
            audit_hash="h", server=server,
        )  # fmt: skip

    billing = ReceiptVerifier(jwks([key]), clock=clock, server="billing")
    assert billing.verify(for_server("billing", "d1"), BODY).server == "billing"
    for other, decision_id in ((None, "d2"), ("crm", "d3")):
        with pytest.raises(ReceiptError) as err:
            billing.verify(for_server(other, decision_id), BODY)
        assert err.value.reason == "wrong_server"


def test_receipts_of_a_previous_key_verify_while_it_is_published():
    clock = Clock()
    r1, r2 = keys("r1", "r2")
    old = issue(ReceiptSigner(r1, clock=clock), decision_id="old")
    new = issue(ReceiptSigner(r2, clock=clock), decision_id="new")
    verifier = ReceiptVerifier(jwks([r2, r1]), clock=clock)
    assert verifier.verify(old, BODY).kid == "r1"
    assert verifier.verify(new, BODY).kid == "r2"


def test_an_unknown_key_id_refetches_the_published_keys_at_most_so_often():
    clock = Clock()
    r1, r2 = keys("r1", "r2")
    published = [jwks([r1])]
    fetched: list[str] = []

    def fetch(url: str, timeout: float) -> bytes:
        fetched.append(url)
        return json.dumps(published[0]).encode()

    verifier = ReceiptVerifier(jwks_url="http://gw/v1/admin/receipt-keys", clock=clock, fetch=fetch)
    assert (
        asyncio.run(verifier.averify(issue(ReceiptSigner(r1, clock=clock), decision_id="a"), BODY)).kid
        == "r1"
    )
    assert len(fetched) == 1
    rotated = issue(ReceiptSigner(r2, clock=clock), decision_id="b")
    with pytest.raises(ReceiptError, match="unknown key"):  # too soon for another fetch
        asyncio.run(verifier.averify(rotated, BODY))
    published[0] = jwks([r2, r1])
    clock.now += 10
    assert asyncio.run(verifier.averify(rotated, BODY)).kid == "r2"
    assert len(fetched) == 2


def test_a_failed_key_fetch_is_retried_soon_not_after_the_full_interval():
    """A tool server that starts before Tessera: its first fetch fails; a call once Tessera is up waits
    out the short retry (FAILED_REFETCH_S) and is served by it, neither refused for the whole refetch
    interval nor for having come too soon after the failure."""
    clock = Clock()
    (r1,) = keys("r1")
    signer = ReceiptSigner(r1, clock=clock)
    up = [False]
    fetched: list[float] = []
    slept: list[float] = []

    def fetch(url: str, timeout: float) -> bytes:
        fetched.append(clock.now)
        if not up[0]:
            raise ConnectionRefusedError("Tessera is not up yet")
        return json.dumps(jwks([r1])).encode()

    async def sleep(seconds: float) -> None:
        slept.append(seconds)
        clock.now += seconds

    verifier = ReceiptVerifier(
        jwks_url="http://gw/keys", clock=clock, fetch=fetch, min_refetch_s=10, sleep=sleep
    )
    with pytest.raises(ReceiptError) as refused:
        asyncio.run(verifier.averify(issue(signer, decision_id="early"), BODY))
    assert refused.value.reason == "keys_unavailable"
    up[0] = True
    clock.now += 0.1  # right after the failure: the request waits for the retry, then is served
    assert asyncio.run(verifier.averify(issue(signer, decision_id="soon"), BODY)).kid == "r1"
    assert slept == [pytest.approx(FAILED_REFETCH_S - 0.1)]
    assert len(fetched) == 2 and fetched[1] - fetched[0] == pytest.approx(FAILED_REFETCH_S)
    # after a successful fetch the full interval holds again for an unknown key id
    (stranger,) = keys("r9")
    clock.now += 1
    with pytest.raises(ReceiptError, match="unknown key"):
        asyncio.run(verifier.averify(issue(ReceiptSigner(stranger, clock=clock), decision_id="x"), BODY))
    assert len(fetched) == 2


def test_a_tessera_that_stays_down_sees_one_key_fetch_per_retry_interval():
    clock = Clock()
    (r1,) = keys("r1")
    signer = ReceiptSigner(r1, clock=clock)
    fetched: list[float] = []

    def fetch(url: str, timeout: float) -> bytes:
        fetched.append(clock.now)
        raise ConnectionRefusedError("Tessera is down")

    async def sleep(seconds: float) -> None:
        clock.now += seconds

    verifier = ReceiptVerifier(jwks_url="http://gw/keys", clock=clock, fetch=fetch, sleep=sleep)
    for i in range(4):  # back to back: each waits for the next retry, and each is refused honestly
        with pytest.raises(ReceiptError) as refused:
            asyncio.run(verifier.averify(issue(signer, decision_id=f"d{i}"), BODY))
        assert refused.value.reason == "keys_unavailable"
    gaps = [later - earlier for earlier, later in itertools.pairwise(fetched)]
    assert gaps == [pytest.approx(FAILED_REFETCH_S)] * 3


def test_requests_arriving_during_the_first_key_fetch_wait_for_it():
    clock = Clock()
    (r1,) = keys("r1")
    signer = ReceiptSigner(r1, clock=clock)
    fetches: list[float] = []

    def slow_fetch(url: str, timeout: float) -> bytes:
        fetches.append(clock.now)
        import time

        time.sleep(0.2)  # the key endpoint is slow: every other request arrives meanwhile
        return json.dumps(jwks([r1])).encode()

    verifier = ReceiptVerifier(jwks_url="http://gw/keys", clock=clock, fetch=slow_fetch)

    async def burst():
        tokens = [issue(signer, decision_id=f"d{i}") for i in range(20)]
        return await asyncio.gather(*(verifier.averify(t, BODY) for t in tokens), return_exceptions=True)

    results = asyncio.run(burst())
    assert [getattr(r, "reason", None) for r in results if isinstance(r, Exception)] == []
    assert len(fetches) == 1


def test_the_replay_cache_is_bounded_and_refuses_what_it_may_have_forgotten():
    cache = ReplayCache(2)
    assert cache.claim("a", 100, 0) and cache.claim("b", 101, 0)
    assert not cache.claim("a", 100, 0)
    assert cache.claim("c", 102, 0)  # evicts "a" (exp 100): floor 100
    assert len(cache) == 2 and cache.floor == 100
    assert not cache.claim("a", 100, 0)  # forgotten, but refused: it may be a replay
    assert cache.claim("d", 103, 101)  # expired "b" is dropped first; "d" fits
    assert not cache.claim("d", 103, 101)


def test_the_fast_signer_signs_exactly_like_cryptography():
    (key,) = keys("r1")
    message = b"header.claims"
    assert ReceiptSigner(key)._sign(message) == key.private_key.sign(message)


_claim_text = st.one_of(st.none(), st.text(max_size=40))


@settings(max_examples=300, deadline=None)
@given(
    tenant=_claim_text,
    agent=_claim_text,
    tool=_claim_text,
    server=_claim_text,
    audit_hash=_claim_text,
    decision_id=st.text(min_size=1, max_size=40),
    audit_seq=st.one_of(st.none(), st.integers(min_value=-(2**70), max_value=2**70)),
    body=st.binary(max_size=64),
    now=st.floats(min_value=0, max_value=4e9),
)
def test_issued_claims_are_byte_identical_to_the_generic_json_encoding(
    tenant, agent, tool, server, audit_hash, decision_id, audit_seq, body, now
):
    """The signer writes its claims without the json module; they must be exactly what json writes for
    the same claims (compact, ASCII-escaped: unicode, quotes, control characters, lone surrogates)."""
    (key,) = keys("r1")
    signer = ReceiptSigner(key, ttl_s=60, clock=Clock(now))
    token = signer.issue(
        tenant=tenant,
        agent=agent,
        tool=tool,
        body=body,
        decision_id=decision_id,
        audit_seq=audit_seq,
        audit_hash=audit_hash,
        server=server,
    )
    claims = {
        "iss": "tessera",
        "tenant": tenant,
        "agent": agent,
        "tool": tool,
        "body_sha256": hashlib.sha256(body).hexdigest(),
        "decision_id": decision_id,
        "audit_seq": audit_seq,
        "audit_hash": audit_hash,
        "iat": int(now),
        "exp": int(now) + 60,
        "jti": decision_id,
        "server": server,
    }
    expected = json.JSONEncoder(separators=(",", ":"), ensure_ascii=True).encode(claims).encode()
    head, payload, signature = token.split(".")
    assert payload == b64u(expected)
    assert head == b64u(b'{"alg":"EdDSA","kid":"r1","typ":"tessera-receipt"}')
    assert key.private_key.public_key().verify(unb64u(signature), f"{head}.{payload}".encode()) is None


def test_a_claim_of_the_wrong_type_is_refused_not_signed():
    (key,) = keys("r1")
    signer = ReceiptSigner(key)
    with pytest.raises(TypeError):
        signer.issue(
            tenant="t", agent="a", tool=None, body=b"{}", decision_id="d", audit_seq=True, audit_hash=None
        )
    with pytest.raises(TypeError):
        signer.issue(
            tenant=7, agent="a", tool=None, body=b"{}", decision_id="d", audit_seq=1, audit_hash=None
        )


def test_derived_keys_are_stable_per_kid_and_master():
    ring = KeyRing(Secret(b"m" * 32))
    one, two = derived_keys(["r1", "r2"], ring.derive_subkey), derived_keys(["r1"], ring.derive_subkey)
    assert one[0].public_bytes == two[0].public_bytes != one[1].public_bytes
    other = derived_keys(["r1"], KeyRing(Secret(b"n" * 32)).derive_subkey)
    assert other[0].public_bytes != one[0].public_bytes
    assert jwks(one)["keys"][0] == {
        "kty": "OKP",
        "crv": "Ed25519",
        "kid": "r1",
        "x": b64u(one[0].public_bytes),
        "alg": "EdDSA",
        "use": "sig",
    }


def test_parse_refuses_what_is_not_a_tessera_receipt():
    for token in ("", "a.b", "a.b.c.d", "x" * 5000, "e30.e30.AA", "!!.!!.!!"):
        with pytest.raises(ValueError):
            parse(token)


# -- the ASGI middleware ---------------------------------------------------------------------------
async def call(app, body: bytes, headers: list[tuple[bytes, bytes]], path: str = "/mcp", chunks: int = 1):
    sent: list[dict] = []
    parts = [body[i::chunks] for i in range(chunks)] if chunks > 1 else [body]
    parts = [body[: len(body) // 2], body[len(body) // 2 :]] if chunks == 2 else parts
    queue = [
        {"type": "http.request", "body": p, "more_body": i < len(parts) - 1} for i, p in enumerate(parts)
    ]

    async def receive():
        return queue.pop(0) if queue else {"type": "http.disconnect"}

    async def send(message):
        sent.append(message)

    scope = {"type": "http", "method": "POST", "path": path, "headers": headers}
    await app(scope, receive, send)
    return sent


class Tool:
    def __init__(self):
        self.bodies: list[bytes] = []

    async def __call__(self, scope, receive, send):
        message = await receive()
        self.bodies.append(message["body"])
        await send({"type": "http.response.start", "status": 200, "headers": []})
        await send({"type": "http.response.body", "body": b"ran"})


def test_the_middleware_runs_the_app_only_with_a_valid_receipt():
    clock = Clock()
    (key,) = keys("r1")
    tool = Tool()
    app = ReceiptMiddleware(tool, ReceiptVerifier(jwks([key]), clock=clock), exempt_paths=["/healthz"])
    good = issue(ReceiptSigner(key, clock=clock))

    ok = asyncio.run(call(app, BODY, [(b"x-tessera-receipt", good.encode())], chunks=2))
    assert ok[0]["status"] == 200 and tool.bodies == [BODY]  # the app got the whole body, once

    for headers, body, code in [
        ([], BODY, "receipt_missing"),
        ([(b"x-tessera-receipt", good.encode())], BODY, "receipt_replayed"),
        (
            [(b"X-Tessera-Receipt", issue(ReceiptSigner(key, clock=clock), decision_id="d-2").encode())],
            BODY + b" ",
            "receipt_wrong_body",
        ),
        ([(b"x-tessera-receipt", good.encode())] * 2, BODY, "receipt_malformed"),
    ]:
        refused = asyncio.run(call(app, body, headers))
        assert refused[0]["status"] == 403
        assert json.loads(refused[1]["body"])["error"]["code"] == code
    assert tool.bodies == [BODY]  # no refused request reached the tool
    assert asyncio.run(call(app, b"", [], path="/healthz"))[0]["status"] == 200


def test_the_verifier_imports_no_server_module_grpc_or_database_driver():
    code = textwrap.dedent(
        """
        import json, sys
        from importlib.abc import MetaPathFinder
        BLOCKED = ("grpc", "regopy", "psycopg", "psycopg_pool", "envoy", "yaml", "mcp", "starlette",
                   "httpx", "pymacaroons", "rfc8785", "uvicorn", "google")
        SERVER = ("authz.check", "authz.server", "authz.storage", "authz.token", "authz.policy",
                  "authz.intent", "authz.audit", "authz.provenance", "authz.config", "authz.client")
        class Block(MetaPathFinder):
            def find_spec(self, name, path=None, target=None):
                if name.split(".")[0] in BLOCKED or name.startswith(SERVER):
                    raise ImportError(f"blocked: {name}")
        sys.meta_path.insert(0, Block())
        from authz.receipts import ReceiptMiddleware, ReceiptVerifier, ReceiptSigner, ReceiptKey, jwks
        key = ReceiptKey.from_seed("r1", bytes(32))
        token = ReceiptSigner(key).issue(tenant="t", agent="a", tool=None, body=b"{}", decision_id="d",
                                        audit_seq=1, audit_hash="h")
        print(ReceiptVerifier(jwks([key])).verify(token, b"{}").kid)
        print(json.dumps(sorted(m for m in sys.modules if m.startswith("authz"))))
        """
    )
    proc = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, timeout=60, check=False
    )
    assert proc.returncode == 0, proc.stderr
    kid, modules = proc.stdout.splitlines()
    assert kid == "r1"
    assert all(m == "authz" or m.startswith("authz.receipts") for m in json.loads(modules)), modules
