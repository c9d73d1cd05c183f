"""Failed admin authentications: rate-limited per source and per key id, audited by key id, and the
presented key never appears in a log line, an error or an event (real admin gRPC server, SQLite)."""

from __future__ import annotations

import logging

import grpc
import pytest

from authz.admin.keys import parse_key
from authz.admin.limiter import AuthFailureLimiter
from authz.api.admin.v1 import tenant_service_pb2 as tenants_pb
from authz.api.admin.v1 import tenant_service_pb2_grpc as tenants_grpc
from authz.secrets import Secret
from authz.server.admin._common import AdminRuntime
from authz.server.admin.app import bootstrap_admin_key, build_server
from authz.storage.sqlite import SQLiteStore
from authz.token import KeyRing, TokenAuthenticator
from tests.unit.test_admin_service import MASTER, ROOT, auth, failure

WRONG = ROOT[: ROOT.rindex("_") + 1] + "guessed-secret-000000000000000000000000"


async def test_failed_attempts_lock_the_source_are_audited_and_never_show_the_key(tmp_path, caplog):
    clock = [1000.0]
    store = SQLiteStore(tmp_path / "tessera.db")
    keyring = KeyRing(Secret(MASTER))
    await bootstrap_admin_key(store, Secret(ROOT))
    limiter = AuthFailureLimiter(max_failures=3, window_s=60, lockout_s=30, clock=lambda: clock[0])
    runtime = AdminRuntime(store, keyring, TokenAuthenticator(keyring), auth_limiter=limiter)
    server, _ = build_server(runtime)
    port = server.add_insecure_port("127.0.0.1:0")
    await server.start()
    channel = grpc.aio.insecure_channel(f"127.0.0.1:{port}")
    stub = tenants_grpc.TenantServiceStub(channel)
    request = tenants_pb.ListTenantsRequest()
    errors = []
    try:
        with caplog.at_level(logging.DEBUG):
            for _ in range(3):
                code, status = await failure(stub.ListTenants(request, metadata=auth(WRONG)))
                assert code is grpc.StatusCode.UNAUTHENTICATED
                errors.append(str(status))
            # Locked: even the right key is refused before any lookup, with when to retry.
            code, status = await failure(stub.ListTenants(request, metadata=auth(ROOT)))
            assert code is grpc.StatusCode.RESOURCE_EXHAUSTED
            assert "retry_after_s" in str(status)
            errors.append(str(status))
            clock[0] += 31
            assert await stub.ListTenants(request, metadata=auth(ROOT)) is not None
        events = [r.event async for r in store.iter_events("_admin")]
        failures = [e for e in events if "admin_key.authenticate.fail" in e]
        assert len(failures) == 3
        assert f'"key_id":"{parse_key(ROOT)}"' in failures[0] and '"source":"127.0.0.1"' in failures[0]
        assert '"locked":["source","key_id"]' in failures[2]
        secret = WRONG.rsplit("_", 1)[1]
        root_secret = ROOT.rsplit("_", 1)[1]
        for text in [*errors, *events, *(r.getMessage() for r in caplog.records)]:
            assert secret not in text and root_secret not in text
    finally:
        await channel.close()
        await server.stop(0)
        await store.close()


def test_the_limiter_counts_per_source_and_per_key_id_within_a_window():
    clock = [0.0]
    limiter = AuthFailureLimiter(max_failures=3, window_s=10, lockout_s=5, clock=lambda: clock[0])
    # One key id attacked from many sources is locked for everyone...
    for source in ("10.0.0.1", "10.0.0.2"):
        assert limiter.failed(source, "k1") == []
    assert limiter.failed("10.0.0.3", "k1") == ["key_id"]
    assert limiter.locked("10.9.9.9", "k1") == 5 and limiter.locked("10.9.9.9", "k2") == 0
    # ...and one source trying many key ids is locked whatever it names.
    for key_id in ("a", "b"):
        limiter.failed("10.0.0.7", key_id)
    assert limiter.failed("10.0.0.7", "c") == ["source"]
    assert limiter.locked("10.0.0.7", None) == 5
    clock[0] = 6
    assert limiter.locked("10.0.0.7", "k1") == 0
    # Failures spread beyond the window do not add up.
    for _ in range(5):
        clock[0] += 11
        assert limiter.failed("10.0.0.8", None) == []


def test_the_limiter_forgets_the_oldest_entries_beyond_its_bound():
    limiter = AuthFailureLimiter(max_failures=2, max_tracked=100)
    for i in range(10_000):
        limiter.failed(f"10.{i // 256}.{i % 256}.1", None)
    assert len(limiter._entries) == 100


@pytest.mark.parametrize("presented", [None, "", "Bearer", "not-a-key", WRONG])
def test_parse_key_never_raises(presented):
    assert parse_key(presented or "") in (None, parse_key(ROOT))


async def test_a_locked_key_id_refuses_guesses_but_never_its_holder_and_sources_come_from_envoy(tmp_path):
    store = SQLiteStore(tmp_path / "tessera.db")
    keyring = KeyRing(Secret(MASTER))
    await bootstrap_admin_key(store, Secret(ROOT))
    limiter = AuthFailureLimiter(max_failures=3, window_s=60, lockout_s=30)
    runtime = AdminRuntime(store, keyring, TokenAuthenticator(keyring), auth_limiter=limiter)
    server, _ = build_server(runtime)
    port = server.add_insecure_port("127.0.0.1:0")
    await server.start()
    channel = grpc.aio.insecure_channel(f"127.0.0.1:{port}")
    stub = tenants_grpc.TenantServiceStub(channel)
    request = tenants_pb.ListTenantsRequest()

    def via_envoy(key: str, client: str):  # the local Envoy forwards the client's address
        return (*auth(key), ("x-forwarded-for", client))

    try:
        # Guesses at one key id from three clients: each source fails once, the key id three times.
        for i in range(3):
            code, _ = await failure(stub.ListTenants(request, metadata=via_envoy(WRONG, f"203.0.113.{i}")))
            assert code is grpc.StatusCode.UNAUTHENTICATED
        code, _ = await failure(stub.ListTenants(request, metadata=via_envoy(WRONG, "203.0.113.9")))
        assert code is grpc.StatusCode.RESOURCE_EXHAUSTED
        # The key's holder is not locked out by someone else's guesses.
        assert await stub.ListTenants(request, metadata=via_envoy(ROOT, "198.51.100.7")) is not None
        events = [r.event async for r in store.iter_events("_admin")]
        failures = [e for e in events if "admin_key.authenticate.fail" in e]
        assert len(failures) == 3  # the refused guess during the lock wrote no event of its own
        assert {f'"source":"203.0.113.{i}"' in failures[i] for i in range(3)} == {True}
    finally:
        await channel.close()
        await server.stop(0)
        await store.close()
