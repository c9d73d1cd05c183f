"""The tool server's side: verify the receipt Tessera attached to a forwarded request."""

from __future__ import annotations

import asyncio
import hmac
import json
import threading
import time
import urllib.request
from collections import OrderedDict
from collections.abc import Awaitable, Callable, Mapping
from typing import Any

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey

from authz.receipts._format import Receipt, ReceiptError, body_sha256, parse, unb64u

#: Clock skew tolerated between Tessera and the tool server (seconds).
DEFAULT_LEEWAY_S = 5
#: Receipt ids remembered; must exceed (requests per second) x (receipt lifetime).
DEFAULT_REPLAY_CACHE = 100_000
#: An unknown key id triggers a JWKS fetch at most this often (a forged kid must not hammer Tessera).
MIN_REFETCH_S = 10.0
#: After a failed fetch (Tessera not up yet, a network blip) the next one may come this soon: a tool
#: server that starts before Tessera must not refuse calls for ``min_refetch_s`` once Tessera is up.
FAILED_REFETCH_S = 0.25
MAX_JWKS_BYTES = 64 * 1024


def load_jwks(document: Mapping[str, Any] | str | bytes) -> dict[str, Ed25519PublicKey]:
    """``kid -> public key`` of the Ed25519 keys of a JWK Set (other key types are ignored)."""
    if isinstance(document, str | bytes):
        document = json.loads(document)
    keys: dict[str, Ed25519PublicKey] = {}
    for jwk in document.get("keys", ()) if isinstance(document, Mapping) else ():
        if not isinstance(jwk, Mapping) or jwk.get("kty") != "OKP" or jwk.get("crv") != "Ed25519":
            continue
        kid, x = jwk.get("kid"), jwk.get("x")
        if isinstance(kid, str) and isinstance(x, str):
            try:
                keys[kid] = Ed25519PublicKey.from_public_bytes(unb64u(x))
            except ValueError:
                continue
    return keys


class ReplayCache:
    """Receipt ids seen, until their expiry; bounded.

    When full of unexpired ids, the oldest is dropped and ``floor`` remembers its expiry: a receipt that
    is not in the cache but expires no later than ``floor`` may be one that was dropped, so it is
    refused (fail closed) rather than accepted twice.
    """

    def __init__(self, max_entries: int = DEFAULT_REPLAY_CACHE):
        if max_entries < 1:
            raise ValueError("the replay cache needs room for at least one receipt")
        self._max = max_entries
        self._seen: OrderedDict[str, int] = OrderedDict()
        self._lock = threading.Lock()
        self.floor = 0

    def __len__(self) -> int:
        return len(self._seen)

    def claim(self, jti: str, exp: int, now: float) -> bool:
        """Record ``jti``; False when it was seen (or may have been: see ``floor``)."""
        with self._lock:
            while self._seen:  # ids are mostly inserted in expiry order: expired ones sit at the front
                first, first_exp = next(iter(self._seen.items()))
                if first_exp >= now:
                    break
                del self._seen[first]
            if jti in self._seen or exp <= self.floor:
                return False
            self._seen[jti] = exp
            while len(self._seen) > self._max:
                _, dropped = self._seen.popitem(last=False)
                self.floor = max(self.floor, dropped)
            return True


def _fetch_url(url: str, timeout_s: float) -> bytes:
    request = urllib.request.Request(url, headers={"accept": "application/json"})
    with urllib.request.urlopen(request, timeout=timeout_s) as response:
        data = response.read(MAX_JWKS_BYTES + 1)
    if len(data) > MAX_JWKS_BYTES:
        raise ValueError("the receipt key set is too large")
    return data


class ReceiptVerifier:
    """Checks ``x-tessera-receipt`` against the exact body the tool server received.

    ``keys``: a JWK Set (mapping or JSON) or ``{kid: raw 32-byte public key}``; ``jwks_url``: where
    Tessera publishes them (``<gateway>/v1/admin/receipt-keys``), fetched on first use and again when a
    receipt names an unknown key id (at most every ``min_refetch_s``), so a key rotation needs no restart.
    After a failed fetch the next one is due within ``FAILED_REFETCH_S``: a receipt with an unknown key
    waits for it rather than being refused (a tool server that starts before Tessera).
    Receipts under a previous key verify as long as Tessera still publishes that key and they have not
    expired. Optional expectations refuse receipts issued for someone else: ``tenant``, and ``server``
    (a tool server behind ``/v1/mcp/<name>`` gives its name; the default server leaves it None and then
    refuses receipts naming any server).
    """

    def __init__(
        self,
        keys: Mapping[str, Any] | str | bytes | None = None,
        *,
        jwks_url: str | None = None,
        tenant: str | None = None,
        server: str | None = None,
        leeway_s: float = DEFAULT_LEEWAY_S,
        replay_cache: ReplayCache | int | None = DEFAULT_REPLAY_CACHE,
        clock: Callable[[], float] = time.time,
        min_refetch_s: float = MIN_REFETCH_S,
        fetch_timeout_s: float = 2.0,
        fetch: Callable[[str, float], bytes] = _fetch_url,
        sleep: Callable[[float], Awaitable[None]] = asyncio.sleep,
    ):
        if keys is None and jwks_url is None:
            raise ValueError("give the receipt keys or the URL Tessera publishes them at")
        self._keys: dict[str, Ed25519PublicKey] = self._load(keys) if keys is not None else {}
        self._jwks_url = jwks_url
        self._tenant = tenant
        self._server = server
        self._leeway_s = leeway_s
        if isinstance(replay_cache, int):
            replay_cache = ReplayCache(replay_cache)
        self.replay_cache = replay_cache
        self._clock = clock
        self._min_refetch_s = min_refetch_s
        self._fetch_timeout_s = fetch_timeout_s
        self._fetch = fetch
        self._sleep = sleep
        self._fetched_at: float | None = None
        self._fetch_failed = False
        self._fetch_lock = asyncio.Lock()

    @staticmethod
    def _load(keys: Mapping[str, Any] | str | bytes) -> dict[str, Ed25519PublicKey]:
        if isinstance(keys, str | bytes) or "keys" in keys:
            return load_jwks(keys)  # type: ignore[arg-type]
        return {
            kid: key if isinstance(key, Ed25519PublicKey) else Ed25519PublicKey.from_public_bytes(key)
            for kid, key in keys.items()
        }

    @property
    def key_ids(self) -> tuple[str, ...]:
        return tuple(self._keys)

    def refresh(self) -> None:
        """Fetch the published keys now (blocking). Keeps the old set when the fetch fails."""
        if self._jwks_url is None:
            return
        self._fetched_at = self._clock()
        self._fetch_failed = True
        self._keys = load_jwks(self._fetch(self._jwks_url, self._fetch_timeout_s))
        self._fetch_failed = False

    async def arefresh(self) -> None:
        await asyncio.to_thread(self.refresh)

    def _may_refetch(self) -> bool:
        interval = min(self._min_refetch_s, FAILED_REFETCH_S) if self._fetch_failed else self._min_refetch_s
        return self._jwks_url is not None and (
            self._fetched_at is None or self._clock() - self._fetched_at >= interval
        )

    async def _retry_due(self) -> None:
        """Wait until the retry after a failed fetch is due (at most ``FAILED_REFETCH_S``). Requests
        queue on the fetch lock meanwhile, so a Tessera that is down still sees at most one fetch per
        ``FAILED_REFETCH_S``, and the request that waited is served by that fetch, not refused."""
        if self._fetched_at is None:
            return
        remaining = self._fetched_at + min(self._min_refetch_s, FAILED_REFETCH_S) - self._clock()
        if remaining > 0:
            await self._sleep(min(remaining, FAILED_REFETCH_S))

    def verify(self, token: str | None, body: bytes) -> Receipt:
        """The receipt's claims when it holds for ``body``; ReceiptError otherwise. Never fetches keys
        (use :meth:`averify` for that) and claims the receipt id in the replay cache."""
        receipt, message, signature = self._parse(token)
        return self._check(receipt, message, signature, body)

    async def averify(self, token: str | None, body: bytes) -> Receipt:
        """:meth:`verify`, fetching the published keys first when the receipt names an unknown one."""
        receipt, message, signature = self._parse(token)
        if receipt.kid not in self._keys and self._jwks_url is not None:
            # Through the lock even when no fetch is due: requests that arrive while the first fetch is
            # under way wait for its keys instead of being refused for a key it is about to bring.
            async with self._fetch_lock:
                if receipt.kid not in self._keys and self._fetch_failed:
                    await self._retry_due()
                if receipt.kid not in self._keys and self._may_refetch():
                    try:
                        await self.arefresh()
                    except Exception as exc:
                        raise ReceiptError(
                            "keys_unavailable", f"cannot fetch Tessera's receipt keys: {type(exc).__name__}"
                        ) from exc
        return self._check(receipt, message, signature, body)

    @staticmethod
    def _parse(token: str | None) -> tuple[Receipt, bytes, bytes]:
        if not token:
            raise ReceiptError("missing", "no Tessera receipt: the request did not pass the gateway")
        try:
            return parse(token)
        except (ValueError, TypeError) as exc:  # json.JSONDecodeError and UnicodeDecodeError are ValueErrors
            raise ReceiptError("malformed", f"malformed Tessera receipt: {exc}") from None

    def _check(self, receipt: Receipt, message: bytes, signature: bytes, body: bytes) -> Receipt:
        key = self._keys.get(receipt.kid)
        if key is None:
            raise ReceiptError("unknown_key", f"receipt signed with unknown key id {receipt.kid[:64]!r}")
        try:
            key.verify(signature, message)
        except InvalidSignature:
            raise ReceiptError("bad_signature", "the receipt's signature does not verify") from None
        now = self._clock()
        if now >= receipt.exp + self._leeway_s:
            raise ReceiptError("expired", "the receipt has expired")
        if receipt.iat > now + self._leeway_s:
            raise ReceiptError("not_yet_valid", "the receipt was issued in the future")
        if not hmac.compare_digest(receipt.body_sha256, body_sha256(body)):
            raise ReceiptError("wrong_body", "the receipt was issued for a different request body")
        if self._tenant is not None and receipt.tenant != self._tenant:
            raise ReceiptError("wrong_tenant", "the receipt was issued for another tenant")
        if receipt.server != self._server:
            raise ReceiptError("wrong_server", "the receipt was issued for another tool server")
        if self.replay_cache is not None and not self.replay_cache.claim(
            receipt.jti, receipt.exp + int(self._leeway_s), now
        ):
            raise ReceiptError("replayed", "the receipt was used before")
        return receipt
