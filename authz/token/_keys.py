"""Root keys for capability tokens, derived from the master secret."""

from __future__ import annotations

import functools
import hmac
import re
from collections.abc import Iterable

from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.kdf.hkdf import HKDF

from authz.errors import ConfigError, InvalidArgument
from authz.secrets import Secret

#: Minimum master secret length in bytes. HKDF is not a password hash: the master must already be a
#: high-entropy key (e.g. 32 random bytes, hex or base64 encoded in ``TESSERA_MASTER_KEY``).
MIN_MASTER_BYTES = 32

#: Tenant ids and key ids: 1-128 characters, no whitespace or control characters, no ``|`` (the HKDF info
#: separator, so the (tenant, kid) -> info mapping stays injective) and no ``,``.
_NAME_RE = re.compile(r"[^\s|,\x00-\x1f\x7f]{1,128}")
_PURPOSE_RE = re.compile(r"[a-z0-9][a-z0-9-]{0,63}")

_TOKEN_ROOT_INFO = b"tessera/token-root/v1|"
# Key derivation step pymacaroons applies to the root key before signing the identifier.
_MACAROON_KEYGEN = b"macaroons-key-generator"


def valid_name(value: object) -> bool:
    """True if ``value`` is usable as a tenant id or key id (see ``_NAME_RE``)."""
    return isinstance(value, str) and _NAME_RE.fullmatch(value) is not None


class KeyRing:
    """Derives per-tenant token root keys from one master secret; immutable.

    ``root_key(tenant, kid) = HKDF-SHA256(ikm=master, salt=None, info=b"tessera/token-root/v1|" + tenant
    + b"|" + kid, length=32)``. Several key ids can be live at once: tokens minted under any live kid
    verify, new tokens are minted under ``active_kid``. Rotation: build a new KeyRing with the new kid
    active and the old one still live; once old tokens have expired, drop the old kid (and build a new
    :class:`~authz.token.TokenAuthenticator`, whose cache belongs to the old ring).

    Derived keys are cached in a bounded LRU per instance (``cache_size`` entries); tenants come from
    token identifiers, which are attacker-chosen before the signature is checked, so the cache must not
    grow without bound.
    """

    __slots__ = ("_active_kid", "_live_kids", "_master", "_root_cached", "_signing_cached", "_subkey_cached")

    def __init__(
        self,
        master: Secret,
        *,
        active_kid: str = "k1",
        live_kids: Iterable[str] | None = None,
        cache_size: int = 4096,
    ):
        if not isinstance(master, Secret):
            raise ConfigError("the master key must be an authz.secrets.Secret")
        if len(master.reveal()) < MIN_MASTER_BYTES:
            raise ConfigError(f"the master key must be at least {MIN_MASTER_BYTES} bytes long")
        kids = frozenset(live_kids) if live_kids is not None else frozenset((active_kid,))
        for kid in (*kids, active_kid):
            if not valid_name(kid):
                raise ConfigError(f"invalid key id {kid!r}")
        if active_kid not in kids:
            raise ConfigError(f"active key id {active_kid!r} is not among the live key ids")
        self._master = master
        self._active_kid = active_kid
        self._live_kids = kids
        self._root_cached = functools.lru_cache(maxsize=cache_size)(self._derive_root)
        self._signing_cached = functools.lru_cache(maxsize=cache_size)(self._derive_signing)
        self._subkey_cached = functools.lru_cache(maxsize=256)(self._derive_subkey)

    @property
    def active_kid(self) -> str:
        """The key id new tokens are minted under."""
        return self._active_kid

    @property
    def live_kids(self) -> frozenset[str]:
        """Every key id whose tokens verify (includes ``active_kid``)."""
        return self._live_kids

    def root_key(self, tenant: str, kid: str) -> bytes:
        """The 32-byte macaroon root key of ``tenant`` under ``kid``.

        Raises :class:`~authz.errors.InvalidArgument` if ``kid`` is not live or ``tenant``/``kid`` is not
        a valid name. Never returns None.
        """
        self._require(tenant, kid)
        return self._root_cached(tenant, kid)

    def derive_subkey(self, purpose: str, tenant: str) -> bytes:
        """A 32-byte key for another purpose, e.g. ``derive_subkey("memory", tenant)`` for §8 provenance.

        ``HKDF-SHA256(master, info=b"tessera/" + purpose + b"/v1|" + tenant)``. ``purpose`` is lowercase
        ``[a-z0-9-]`` (no ``/``), so no purpose can produce the token-root info; ``"token-root"`` itself is
        refused. Independent of key ids (rotate the master to rotate these keys).
        """
        if not isinstance(purpose, str) or not _PURPOSE_RE.fullmatch(purpose) or purpose == "token-root":
            raise InvalidArgument(f"invalid key purpose {purpose!r}")
        if not valid_name(tenant):
            raise InvalidArgument(f"invalid tenant id {tenant!r}")
        return self._subkey_cached(purpose, tenant)

    def signing_key(self, tenant: str, kid: str) -> bytes:
        """``HMAC-SHA256(b"macaroons-key-generator", root_key)``: the key of the first link of the chain.

        This is what pymacaroons (and libmacaroons) sign the identifier with; cached so verification pays
        one HMAC per chain link only.
        """
        self._require(tenant, kid)
        return self._signing_cached(tenant, kid)

    def _require(self, tenant: str, kid: str) -> None:
        if kid not in self._live_kids:
            raise InvalidArgument(f"unknown or retired key id {kid!r}")
        if not valid_name(tenant):
            raise InvalidArgument(f"invalid tenant id {tenant!r}")

    def _hkdf(self, info: bytes) -> bytes:
        return HKDF(algorithm=hashes.SHA256(), length=32, salt=None, info=info).derive(self._master.reveal())

    def _derive_root(self, tenant: str, kid: str) -> bytes:
        return self._hkdf(_TOKEN_ROOT_INFO + tenant.encode() + b"|" + kid.encode())

    def _derive_signing(self, tenant: str, kid: str) -> bytes:
        return hmac.digest(_MACAROON_KEYGEN, self._root_cached(tenant, kid), "sha256")

    def _derive_subkey(self, purpose: str, tenant: str) -> bytes:
        return self._hkdf(b"tessera/" + purpose.encode() + b"/v1|" + tenant.encode())

    def __repr__(self) -> str:
        return f"KeyRing(active_kid={self._active_kid!r}, live_kids={sorted(self._live_kids)!r})"

    def __reduce__(self):
        raise TypeError("key rings are not picklable")
