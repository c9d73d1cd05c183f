"""KeyRing: HKDF root keys per (tenant, kid), rotation, subkeys."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.kdf.hkdf import HKDF

from authz.errors import ConfigError, InvalidArgument
from authz.secrets import Secret
from authz.token import AuthenticatedToken, KeyRing, TokenAuthenticator, TokenRejection, mint

MASTER = b"0123456789abcdef0123456789abcdef"
NOW = datetime(2026, 6, 1, 12, tzinfo=UTC)


def hkdf(info: bytes, master: bytes = MASTER) -> bytes:
    return HKDF(algorithm=hashes.SHA256(), length=32, salt=None, info=info).derive(master)


def test_root_key_is_hkdf_of_master_bound_to_tenant_and_kid():
    ring = KeyRing(Secret(MASTER))
    assert ring.root_key("acme", "k1") == hkdf(b"tessera/token-root/v1|acme|k1")
    assert len(ring.root_key("acme", "k1")) == 32


def test_root_keys_differ_by_tenant_kid_and_master():
    ring = KeyRing(Secret(MASTER), active_kid="k1", live_kids=["k1", "k2"])
    other = KeyRing(Secret(b"x" * 32), active_kid="k1", live_kids=["k1", "k2"])
    keys = {
        ring.root_key("acme", "k1"),
        ring.root_key("acme", "k2"),
        ring.root_key("globex", "k1"),
        other.root_key("acme", "k1"),
    }
    assert len(keys) == 4
    assert KeyRing(Secret(MASTER)).root_key("acme", "k1") == ring.root_key("acme", "k1")


def test_derived_keys_are_cached():
    ring = KeyRing(Secret(MASTER))
    assert ring.root_key("acme", "k1") is ring.root_key("acme", "k1")
    assert ring.derive_subkey("memory", "acme") is ring.derive_subkey("memory", "acme")


@pytest.mark.parametrize(("tenant", "kid"), [("acme", "k9"), ("acme", ""), ("a|b", "k1"), ("", "k1")])
def test_root_key_refuses_unknown_kid_or_bad_tenant(tenant, kid):
    with pytest.raises(InvalidArgument):
        KeyRing(Secret(MASTER)).root_key(tenant, kid)


def test_subkeys_are_separate_from_root_keys():
    ring = KeyRing(Secret(MASTER))
    memory = ring.derive_subkey("memory", "acme")
    assert memory == hkdf(b"tessera/memory/v1|acme")
    assert memory != ring.derive_subkey("memory", "globex")
    assert memory != ring.derive_subkey("audit-hmac", "acme")
    assert memory != ring.root_key("acme", "k1")


@pytest.mark.parametrize("purpose", ["token-root", "", "Memory", "a/b", "x" * 65])
def test_subkey_purpose_is_validated(purpose):
    with pytest.raises(InvalidArgument):
        KeyRing(Secret(MASTER)).derive_subkey(purpose, "acme")


def test_configuration_errors():
    with pytest.raises(ConfigError):
        KeyRing(Secret(b"short"))
    with pytest.raises(ConfigError):
        KeyRing(Secret(MASTER), active_kid="k2", live_kids=["k1"])
    with pytest.raises(ConfigError):
        KeyRing(Secret(MASTER), active_kid="k|1")
    with pytest.raises(ConfigError):
        KeyRing(MASTER)  # type: ignore[arg-type]


def test_repr_does_not_leak_the_master():
    ring = KeyRing(Secret(MASTER), active_kid="k2", live_kids=["k1", "k2"])
    assert "0123" not in repr(ring)
    assert repr(ring) == "KeyRing(active_kid='k2', live_kids=['k1', 'k2'])"


def test_rotation_keeps_old_kid_valid_until_retired():
    old_ring = KeyRing(Secret(MASTER), active_kid="k1")
    token = mint(old_ring, tenant="acme")
    rotated = KeyRing(Secret(MASTER), active_kid="k2", live_kids=["k1", "k2"])
    assert isinstance(TokenAuthenticator(rotated).authenticate(token), AuthenticatedToken)
    new_token = mint(rotated, tenant="acme")
    assert TokenAuthenticator(rotated).authenticate(new_token).kid == "k2"
    retired = KeyRing(Secret(MASTER), active_kid="k2")
    assert TokenAuthenticator(retired).authenticate(token) == TokenRejection("unknown or retired key id 'k1'")
    assert isinstance(TokenAuthenticator(retired).authenticate(new_token), AuthenticatedToken)


def test_mint_under_a_non_live_kid_is_refused():
    with pytest.raises(InvalidArgument):
        mint(KeyRing(Secret(MASTER)), tenant="acme", kid="k2")
