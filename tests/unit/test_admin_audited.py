"""Admin mutations and their audit events commit together: when the chain refuses the event, the
admin API answers an error and the change does not stand (real admin gRPC server, real SQLite store;
the fault is a trigger in the database that refuses audit inserts)."""

from __future__ import annotations

import grpc
import pytest

from authz.api.admin.v1 import admin_key_service_pb2 as keys_pb
from authz.api.admin.v1 import admin_key_service_pb2_grpc as keys_grpc
from authz.api.admin.v1 import audit_service_pb2 as audit_pb
from authz.api.admin.v1 import audit_service_pb2_grpc as audit_grpc
from authz.api.admin.v1 import policy_service_pb2 as policy_pb
from authz.api.admin.v1 import policy_service_pb2_grpc as policy_grpc
from authz.api.admin.v1 import tenant_service_pb2 as tenants_pb
from authz.api.admin.v1 import tenant_service_pb2_grpc as tenants_grpc
from authz.api.admin.v1 import token_service_pb2 as tokens_pb
from authz.api.admin.v1 import token_service_pb2_grpc as tokens_grpc
from authz.audit import append_admin_event
from authz.secrets import Secret
from authz.server.admin._common import AdminRuntime
from authz.server.admin.app import bootstrap_admin_key, build_server
from authz.storage import TenantSettings
from authz.storage.sqlite import SQLiteStore
from authz.token import KeyRing, TokenAuthenticator
from tests.unit.test_admin_service import ALLOW_ALL, MASTER, ROOT, auth


async def test_a_refused_audit_event_undoes_the_admin_change(tmp_path):
    store = SQLiteStore(tmp_path / "tessera.db")
    await store.put_tenant("acme", TenantSettings())
    keyring = KeyRing(Secret(MASTER))
    await bootstrap_admin_key(store, Secret(ROOT))
    server, _ = build_server(AdminRuntime(store, keyring, TokenAuthenticator(keyring)))
    port = server.add_insecure_port("127.0.0.1:0")
    await server.start()
    channel = grpc.aio.insecure_channel(f"127.0.0.1:{port}")
    try:
        await append_admin_event(store, "acme", "alice", "tenant.create", "tenant:acme", {})
        head = await store.audit_head("acme")
        store.db.conn.execute(
            "CREATE TRIGGER refuse_audit BEFORE INSERT ON audit_events "
            "BEGIN SELECT RAISE(ABORT, 'audit refused'); END"
        )
        calls = [
            tenants_grpc.TenantServiceStub(channel).CreateTenant(
                tenants_pb.CreateTenantRequest(tenant="globex"), metadata=auth(ROOT)
            ),
            policy_grpc.PolicyServiceStub(channel).PromotePolicy(
                policy_pb.PromotePolicyRequest(tenant="acme", source=ALLOW_ALL), metadata=auth(ROOT)
            ),
            tokens_grpc.TokenServiceStub(channel).RevokeToken(
                tokens_pb.RevokeTokenRequest(tenant="acme", jti="j1"), metadata=auth(ROOT)
            ),
            keys_grpc.AdminKeyServiceStub(channel).CreateAdminKey(
                keys_pb.CreateAdminKeyRequest(name="ops", role=keys_pb.ROLE_OPERATOR), metadata=auth(ROOT)
            ),
            audit_grpc.AuditServiceStub(channel).CreateAuditCheckpoint(
                audit_pb.CreateAuditCheckpointRequest(tenant="acme"), metadata=auth(ROOT)
            ),
        ]
        for call in calls:
            with pytest.raises(grpc.aio.AioRpcError):
                await call
        assert await store.get_tenant("globex") is None
        assert await store.policy_history("acme") == []
        assert await store.list_revocations("acme") == []
        assert [k.name for k in await store.list_admin_keys()] == ["bootstrap"]
        assert await store.list_checkpoints("acme") == []
        assert await store.audit_head("acme") == head
    finally:
        await channel.close()
        await server.stop(0)
        await store.close()
