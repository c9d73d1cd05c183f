"""Admin keys: format, hashing, roles and the caller identity they give (ARCHITECTURE §11).

A key is ``tsk_<key id>_<secret>``: the key id (12 lowercase hex characters for generated keys) finds
the stored record, the store keeps only ``SHA-256(whole key)``, and the hash comparison is constant
time. Roles are ordered: viewer < operator < admin; a key's scope is one tenant or all tenants.
"""

from __future__ import annotations

import hashlib
import hmac
import re
import secrets
import time
from dataclasses import dataclass

from authz.errors import ConfigError, InvalidArgument, Unauthenticated
from authz.storage import AdminKey

ROLES = ("viewer", "operator", "admin")
_RANK = {role: rank for rank, role in enumerate(ROLES)}
KEY_PREFIX = "tsk_"
_KEY_RE = re.compile(r"tsk_([a-z0-9]{8,32})_([A-Za-z0-9_\-]{16,128})")
_NAME_RE = re.compile(r"[A-Za-z0-9._@\-]{1,64}")
#: A principal: the person a key belongs to (email, username, OIDC ``issuer|subject``).
_PRINCIPAL_RE = re.compile(r"[A-Za-z0-9._@\-:|]{1,128}")
#: The audit chain of admin mutations that belong to no tenant (keys with the all-tenants scope).
ADMIN_CHAIN = "_admin"


def role_at_least(role: str, needed: str) -> bool:
    return _RANK.get(role, -1) >= _RANK[needed]


def hash_key(key: str) -> str:
    return hashlib.sha256(key.encode("utf-8")).hexdigest()


def parse_key(key: str) -> str | None:
    """The key id of a well-formed key, else None."""
    match = _KEY_RE.fullmatch(key)
    return match.group(1) if match else None


def generate_key() -> tuple[str, str]:
    """A fresh ``(key id, key)``."""
    key_id = secrets.token_hex(6)
    return key_id, f"{KEY_PREFIX}{key_id}_{secrets.token_urlsafe(32)}"


def valid_key_name(name: object) -> bool:
    return isinstance(name, str) and _NAME_RE.fullmatch(name) is not None


def valid_principal(principal: object) -> bool:
    return isinstance(principal, str) and _PRINCIPAL_RE.fullmatch(principal) is not None


def new_admin_key(
    name: str,
    role: str,
    tenant: str | None,
    created_by: str,
    *,
    key: str | None = None,
    principal: str | None = None,
) -> tuple[AdminKey, str]:
    """A record for a new key and the key itself (``key`` given: use it, e.g. the bootstrap key).

    ``principal``: the person the key belongs to (default: the key's name)."""
    if role not in _RANK:
        raise InvalidArgument(f"role must be one of {', '.join(ROLES)}, not {role!r}")
    if not valid_key_name(name):
        raise InvalidArgument("key names are 1-64 characters: letters, digits, '.', '_', '@', '-'")
    principal = principal or name
    if not valid_principal(principal):
        raise InvalidArgument(
            "a principal is 1-128 characters: letters, digits, '.', '_', '@', '-', ':', '|'",
            metadata={"field": "principal"},
        )
    if key is None:
        key_id, key = generate_key()
    else:
        found = parse_key(key)
        if found is None:
            raise ConfigError(
                "an admin key must look like tsk_<8-32 lowercase letters or digits>_<16-128 characters "
                'of A-Z a-z 0-9 _ ->, e.g. from: python -c "import secrets; '
                "print('tsk_' + secrets.token_hex(6) + '_' + secrets.token_urlsafe(32))\""
            )
        key_id = found
    record = AdminKey(key_id, name, role, tenant, hash_key(key), time.time(), created_by, principal=principal)
    return record, key


@dataclass(frozen=True, slots=True)
class Principal:
    """The authenticated caller of one admin RPC."""

    key_id: str
    name: str
    role: str
    tenant: str | None  # None: all tenants
    #: The person the key belongs to; approval quorums count distinct principals, not keys.
    principal: str = ""
    #: Set for a person signed in with OIDC (authz.admin.oidc): the ID token's issuer; "" for a key.
    issuer: str = ""

    @classmethod
    def of(cls, key: AdminKey) -> Principal:
        return cls(key.key_id, key.name, key.role, key.tenant, key.principal or key.name)

    @property
    def identity(self) -> str:
        """What the audit chain and approval decisions record: name and key id, and the principal when
        it is not the key's name; for an OIDC sign-in, the principal and its provider."""
        if self.issuer:
            return f"{self.principal} (oidc {self.issuer})"
        if not self.principal or self.principal == self.name:
            return f"{self.name} (key {self.key_id})"
        return f"{self.name} (key {self.key_id}, principal {self.principal})"

    @property
    def label(self) -> str:
        """How refusals name the caller: ``key <id>``, or the person signed in with OIDC."""
        return f"{self.principal} (OIDC)" if self.issuer else f"key {self.key_id}"

    @property
    def all_tenants(self) -> bool:
        return self.tenant is None

    def may_act_on(self, tenant: str) -> bool:
        return self.tenant is None or self.tenant == tenant

    def has_role(self, needed: str) -> bool:
        return role_at_least(self.role, needed)


async def authenticate(store, presented: str | None) -> Principal:
    """The principal of a presented key. Unauthenticated for a missing, malformed, unknown, wrong or
    revoked key (one message for all: a caller learns nothing about which)."""
    if not presented:
        raise Unauthenticated(
            "missing admin key (authorization: Bearer <admin key>)", reason="ADMIN_KEY_MISSING"
        )
    key_id = parse_key(presented)
    record = await store.get_admin_key(key_id) if key_id is not None else None
    # Compare even when there is no record, so timing does not tell unknown ids from wrong secrets.
    expected = record.secret_sha256 if record is not None else "0" * 64
    matches = hmac.compare_digest(expected, hash_key(presented))
    if record is None or not matches or not record.active:
        raise Unauthenticated("unknown or revoked admin key", reason="ADMIN_KEY_INVALID")
    return Principal.of(record)
