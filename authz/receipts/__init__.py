"""Signed receipts (ARCHITECTURE §8): proof, for the tool server, that a request passed Tessera.

For every allowed request Tessera adds ``x-tessera-receipt`` to what Envoy forwards upstream: a compact
JWS (Ed25519, key id in its header) binding tenant, agent, tool, the SHA-256 of the exact body
forwarded, the decision id, the allow's audit sequence and chain hash, issue time and a short expiry.
The keys are published as a JWK Set at ``GET /v1/admin/receipt-keys`` (through Envoy; no admin key
needed: they are public keys). A tool server refuses everything else::

    from authz.receipts import ReceiptMiddleware, ReceiptVerifier

    verifier = ReceiptVerifier(jwks_url="http://gateway:8080/v1/admin/receipt-keys")
    app = ReceiptMiddleware(app, verifier)   # any ASGI app: 403 before the tool runs

:class:`ReceiptVerifier` refuses a missing, malformed, unknown-key, badly signed, expired or replayed
receipt (a bounded in-memory cache of receipt ids) and one issued for a different body, raising
:class:`ReceiptError` with a ``reason``. This package imports nothing of Tessera's server side, gRPC or a
database driver: only ``cryptography`` and the standard library (a test keeps it so).
"""

from authz.receipts._asgi import ReceiptMiddleware
from authz.receipts._format import HEADER, Receipt, ReceiptError, body_sha256
from authz.receipts._sign import (
    DEFAULT_TTL_S,
    SELF_AGENT,
    ReceiptKey,
    ReceiptSigner,
    derived_keys,
    jwks,
    self_receipt_issuer,
    self_receipts,
)
from authz.receipts._verify import ReceiptVerifier, ReplayCache, load_jwks

__all__ = [
    "DEFAULT_TTL_S",
    "HEADER",
    "SELF_AGENT",
    "Receipt",
    "ReceiptError",
    "ReceiptKey",
    "ReceiptMiddleware",
    "ReceiptSigner",
    "ReceiptVerifier",
    "ReplayCache",
    "body_sha256",
    "derived_keys",
    "jwks",
    "load_jwks",
    "self_receipt_issuer",
    "self_receipts",
]
