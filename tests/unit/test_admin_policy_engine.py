"""The admin API sets a tenant's policy engine (OPA): validated, vetted by the outbound rules (a refused
address is audited and answered with why), stored, and read back (real admin gRPC server, SQLite)."""

from __future__ import annotations

import grpc
from google.protobuf import field_mask_pb2

from authz.api.admin.v1 import tenant_service_pb2 as tenants_pb
from authz.api.admin.v1 import tenant_service_pb2_grpc as tenants_grpc
from authz.secrets import Secret
from authz.server.admin._common import AdminRuntime
from authz.server.admin.app import bootstrap_admin_key, build_server
from authz.storage import TenantSettings
from authz.storage.sqlite import SQLiteStore
from authz.token import KeyRing, TokenAuthenticator
from tests.unit.test_admin_service import MASTER, ROOT, auth, failure


async def test_policy_engine_is_validated_vetted_stored_and_read_back(tmp_path):
    store = SQLiteStore(tmp_path / "tessera.db")
    await store.put_tenant("acme", TenantSettings())
    keyring = KeyRing(Secret(MASTER))
    await bootstrap_admin_key(store, Secret(ROOT))
    server, _ = build_server(AdminRuntime(store, keyring, TokenAuthenticator(keyring)))
    port = server.add_insecure_port("127.0.0.1:0")
    await server.start()
    channel = grpc.aio.insecure_channel(f"127.0.0.1:{port}")
    stub = tenants_grpc.TenantServiceStub(channel)
    mask = field_mask_pb2.FieldMask(paths=["policy_engine"])

    def update(**engine):
        settings = tenants_pb.TenantSettings(policy_engine=tenants_pb.PolicyEngine(**engine))
        request = tenants_pb.UpdateTenantSettingsRequest(tenant="acme", settings=settings, update_mask=mask)
        return stub.UpdateTenantSettings(request, metadata=auth(ROOT))

    try:
        code, status = await failure(update(engine="wasm", url="http://opa.invalid:8181"))
        assert code is grpc.StatusCode.INVALID_ARGUMENT and "policy_engine.engine" in status.message
        code, status = await failure(update(engine="opa", url="http://127.0.0.1:8181"))
        assert code is grpc.StatusCode.INVALID_ARGUMENT and "loopback" in status.message
        assert (await store.get_tenant("acme")).policy_engine is None
        refused = [r.event async for r in store.iter_events("acme") if "tenant.settings.refused" in r.event]
        assert len(refused) == 1 and "policy_engine.url" in refused[0]
        # A name that does not resolve yet is accepted (vetted again when the check service connects).
        answer = await update(engine="opa", url="http://opa.invalid:8181", timeout_ms=150, push=False)
        assert answer.settings.policy_engine.url == "http://opa.invalid:8181"
        assert (await store.get_tenant("acme")).policy_engine == {
            "engine": "opa",
            "url": "http://opa.invalid:8181",
            "path": "tessera/decision",
            "timeout_ms": 150,
            "push": False,
        }
        got = await stub.GetTenant(tenants_pb.GetTenantRequest(tenant="acme"), metadata=auth(ROOT))
        assert (
            got.tenant.settings.policy_engine.timeout_ms == 150 and not got.tenant.settings.policy_engine.push
        )
        # An update of other fields keeps it.
        other = tenants_pb.UpdateTenantSettingsRequest(
            tenant="acme",
            settings=tenants_pb.TenantSettings(require_prompt=True),
            update_mask=field_mask_pb2.FieldMask(paths=["require_prompt"]),
        )
        await stub.UpdateTenantSettings(other, metadata=auth(ROOT))
        assert (await store.get_tenant("acme")).policy_engine["url"] == "http://opa.invalid:8181"
    finally:
        await channel.close()
        await server.stop(0)
        await store.close()
