"""Issuing receipts (the check service) and publishing their keys (the admin service)."""

from __future__ import annotations

import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from json.encoder import encode_basestring_ascii
from typing import Any

from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from authz.receipts._format import b64u, body_sha256, signing_input

#: Default receipt lifetime: long enough for Envoy to forward the request, short enough that a copied
#: receipt is soon worthless (the tool server's replay cache covers the window).
DEFAULT_TTL_S = 60


@dataclass(frozen=True, slots=True)
class ReceiptKey:
    """One receipt signing key: its id and Ed25519 private key (derived from the master secret)."""

    kid: str
    private_key: Ed25519PrivateKey

    @classmethod
    def from_seed(cls, kid: str, seed: bytes) -> ReceiptKey:
        return cls(kid, Ed25519PrivateKey.from_private_bytes(seed))

    @property
    def public_bytes(self) -> bytes:
        return self.private_key.public_key().public_bytes(
            serialization.Encoding.Raw, serialization.PublicFormat.Raw
        )

    def jwk(self) -> dict[str, str]:
        """The public key as a JWK (RFC 8037 OKP)."""
        return {
            "kty": "OKP",
            "crv": "Ed25519",
            "kid": self.kid,
            "x": b64u(self.public_bytes),
            "alg": "EdDSA",
            "use": "sig",
        }


def derived_keys(kids: Iterable[str], derive: Callable[[str, str], bytes]) -> list[ReceiptKey]:
    """The receipt keys of ``kids`` (active first), each seeded by ``derive("receipt", kid)``: Tessera
    passes ``KeyRing.derive_subkey``, so every replica and the admin service agree without a store."""
    return [ReceiptKey.from_seed(kid, derive("receipt", kid)) for kid in kids]


def jwks(keys: Iterable[ReceiptKey]) -> dict[str, Any]:
    """A JWK Set of the public halves (what ``GET /v1/admin/receipt-keys`` serves)."""
    return {"keys": [key.jwk() for key in keys]}


def _fast_signer(private_key: Ed25519PrivateKey) -> Callable[[bytes], bytes]:
    """Ed25519 signing for the check path: libsodium (PyNaCl, installed with pymacaroons) when present,
    measured ~30% cheaper per signature than OpenSSL here; the signatures are identical (Ed25519 is
    deterministic). Without PyNaCl, ``cryptography``."""
    try:
        from nacl.signing import SigningKey
    except ImportError:
        return private_key.sign
    seed = private_key.private_bytes(
        serialization.Encoding.Raw, serialization.PrivateFormat.Raw, serialization.NoEncryption()
    )
    sodium = SigningKey(seed)
    return lambda message: sodium.sign(message).signature


class ReceiptSigner:
    """Signs one receipt per allowed request with the active key. Stateless apart from the key."""

    def __init__(
        self, key: ReceiptKey, *, ttl_s: int = DEFAULT_TTL_S, clock: Callable[[], float] = time.time
    ):
        if ttl_s < 1:
            raise ValueError("the receipt lifetime must be at least one second")
        self.key = key
        self._ttl_s = int(ttl_s)
        self._clock = clock
        self._sign = _fast_signer(key.private_key)
        # The protected header is the same for every receipt of this key: encoded once.
        self._head = signing_input(key.kid, {})[: -len(b64u(b"{}"))]

    def issue(
        self,
        *,
        tenant: str | None,
        agent: str | None,
        tool: str | None,
        body: bytes,
        decision_id: str,
        audit_seq: int | None,
        audit_hash: str | None,
        server: str | None = None,
    ) -> str:
        """The compact receipt for one forwarded request."""
        now = int(self._clock())
        # The claims of authz.receipts.Receipt, written directly as the compact, ASCII-escaped JSON that
        # ``json`` would produce for them (this runs on every allowed check, and the generic encoder
        # costs more than the rest of the claims together); tests/unit/test_receipts.py holds the two
        # byte-identical.
        jti = _json_str(decision_id)
        claims = (
            f'{{"iss":"tessera","tenant":{_json_str(tenant)},"agent":{_json_str(agent)},'
            f'"tool":{_json_str(tool)},"body_sha256":"{body_sha256(body)}","decision_id":{jti},'
            f'"audit_seq":{_json_int(audit_seq)},"audit_hash":{_json_str(audit_hash)},'
            f'"iat":{now},"exp":{now + self._ttl_s},"jti":{jti},"server":{_json_str(server)}}}'
        )
        message = self._head + b64u(claims.encode("ascii")).encode("ascii")
        return f"{message.decode('ascii')}.{b64u(self._sign(message))}"


def _json_str(value: str | None) -> str:
    """``value`` as ``json.dumps(value, ensure_ascii=True)`` writes it (``null`` for None); a value that
    is not a string raises TypeError (the check then fails closed)."""
    return "null" if value is None else encode_basestring_ascii(value)


def _json_int(value: int | None) -> str:
    if value is None:
        return "null"
    if type(value) is not int:
        raise TypeError(f"a receipt's audit_seq must be an integer or None, not {type(value).__name__}")
    return str(value)


#: The agent named in receipts of Tessera's own requests to a tool server (not an agent's call).
SELF_AGENT = "tessera:self"


def self_receipts(signer: ReceiptSigner, purpose: str) -> Callable[[bytes], str]:
    """Receipts for requests Tessera itself sends a tool server (the intent catalog's ``tools/list``),
    so a server that refuses everything without a receipt still answers Tessera. Each binds its body and
    expires like any receipt; the agent is :data:`SELF_AGENT`, there is no tool and no audit position,
    and the decision id names ``purpose`` (``catalog-<random>``)."""
    import secrets

    def issue(body: bytes) -> str:
        return signer.issue(
            tenant=None,
            agent=SELF_AGENT,
            tool=None,
            body=body,
            decision_id=f"{purpose}-{secrets.token_hex(12)}",
            audit_seq=None,
            audit_hash=None,
        )

    return issue


def self_receipt_issuer(config: Any, derive: Callable[[str, str], bytes]) -> Callable[[bytes], str] | None:
    """:func:`self_receipts` for the catalog, from the receipt settings (``authz.config.ReceiptConfig``:
    ``enabled``, ``kids``, ``ttl_s``) and ``KeyRing.derive_subkey``; None when receipts are off."""
    if not config.enabled:
        return None
    active = derived_keys(config.kids[:1], derive)[0]
    return self_receipts(ReceiptSigner(active, ttl_s=config.ttl_s), "catalog")
