"""The receipt's wire form: a JWS compact serialization (RFC 7515) with an Ed25519 signature (RFC 8037).

``x-tessera-receipt: <b64u(header)>.<b64u(claims)>.<b64u(signature)>`` with header
``{"alg": "EdDSA", "kid": <receipt key id>, "typ": "tessera-receipt"}`` and the claims of
:class:`Receipt`. Any JOSE library can read it; :mod:`authz.receipts` needs only ``cryptography``.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import json
from dataclasses import dataclass
from typing import Any

HEADER = "x-tessera-receipt"
TYP = "tessera-receipt"
ALG = "EdDSA"
#: Longest header value accepted (a receipt is ~600 bytes; bounds the work before the signature check).
MAX_RECEIPT_CHARS = 4096


class ReceiptError(Exception):
    """A receipt that must be refused; ``reason`` says why (missing, malformed, unknown_key, bad_signature,
    expired, not_yet_valid, wrong_body, replayed, keys_unavailable)."""

    def __init__(self, reason: str, message: str):
        super().__init__(message)
        self.reason = reason
        self.message = message


def b64u(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).decode("ascii").rstrip("=")


def unb64u(text: str) -> bytes:
    if not text or "=" in text:
        raise ValueError("not base64url without padding")
    try:
        return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))
    except (binascii.Error, ValueError) as exc:
        raise ValueError("not base64url") from exc


def body_sha256(body: bytes) -> str:
    """Hex SHA-256 of the exact request body (what the ``body_sha256`` claim holds)."""
    return hashlib.sha256(body).hexdigest()


@dataclass(frozen=True, slots=True)
class Receipt:
    """The claims of one receipt: Tessera allowed this request, and audited the allow first.

    ``jti``: the receipt id (the decision id of the request's last message); ``tool``: the tool of a
    single ``tools/call`` (None for session messages such as ``initialize`` and for batches, whose
    tools the body names); ``audit_seq``/``audit_hash``: where the allow sits in the tenant's audit chain;
    ``iat``/``exp``: epoch seconds; ``server``: the tool server the gateway routed to, when it serves
    several (``/v1/mcp/<name>``), so a receipt for one cannot be spent at another (None: the default one).
    """

    kid: str
    tenant: str | None
    agent: str | None
    tool: str | None
    body_sha256: str
    decision_id: str
    audit_seq: int | None
    audit_hash: str | None
    iat: int
    exp: int
    jti: str
    server: str | None = None

    def claims(self) -> dict[str, Any]:
        return {
            "iss": "tessera",
            "tenant": self.tenant,
            "agent": self.agent,
            "tool": self.tool,
            "body_sha256": self.body_sha256,
            "decision_id": self.decision_id,
            "audit_seq": self.audit_seq,
            "audit_hash": self.audit_hash,
            "iat": self.iat,
            "exp": self.exp,
            "jti": self.jti,
            "server": self.server,
        }


def signing_input(kid: str, claims: dict[str, Any]) -> bytes:
    header = {"alg": ALG, "kid": kid, "typ": TYP}
    encode = json.JSONEncoder(separators=(",", ":"), ensure_ascii=True).encode
    return f"{b64u(encode(header).encode())}.{b64u(encode(claims).encode())}".encode("ascii")


def _str_or_none(claims: dict[str, Any], name: str) -> str | None:
    value = claims.get(name)
    if value is not None and not isinstance(value, str):
        raise ValueError(f"claim {name} must be a string")
    return value


def parse(token: str) -> tuple[Receipt, bytes, bytes]:
    """``(receipt, signing input, signature)`` of a compact receipt, before any check of its signature.
    ValueError when it is not one."""
    if not isinstance(token, str) or len(token) > MAX_RECEIPT_CHARS or token.count(".") != 2:
        raise ValueError("not a compact JWS")
    head_b64, claims_b64, sig_b64 = token.split(".")
    header = json.loads(unb64u(head_b64))
    claims = json.loads(unb64u(claims_b64))
    signature = unb64u(sig_b64)
    if not isinstance(header, dict) or header.get("alg") != ALG or header.get("typ") != TYP:
        raise ValueError("not a Tessera receipt (alg EdDSA, typ tessera-receipt)")
    kid = header.get("kid")
    if not isinstance(kid, str) or not kid or "crit" in header:
        raise ValueError("receipt header without a key id")
    if not isinstance(claims, dict) or claims.get("iss") != "tessera":
        raise ValueError("receipt claims are not Tessera's")
    numbers = {name: claims.get(name) for name in ("iat", "exp")}
    if any(type(v) is not int for v in numbers.values()):
        raise ValueError("receipt iat/exp must be integers")
    seq = claims.get("audit_seq")
    if seq is not None and type(seq) is not int:
        raise ValueError("receipt audit_seq must be an integer")
    digest, decision_id, jti = claims.get("body_sha256"), claims.get("decision_id"), claims.get("jti")
    if not (isinstance(digest, str) and isinstance(decision_id, str) and isinstance(jti, str) and jti):
        raise ValueError("receipt without body_sha256, decision_id or jti")
    receipt = Receipt(
        kid=kid,
        tenant=_str_or_none(claims, "tenant"),
        agent=_str_or_none(claims, "agent"),
        tool=_str_or_none(claims, "tool"),
        body_sha256=digest,
        decision_id=decision_id,
        audit_seq=seq,
        audit_hash=_str_or_none(claims, "audit_hash"),
        iat=numbers["iat"],
        exp=numbers["exp"],
        jti=jti,
        server=_str_or_none(claims, "server"),
    )
    return receipt, f"{head_b64}.{claims_b64}".encode("ascii"), signature
