"""``AdminKeyService``: create (secret shown once), list, revoke admin keys (ARCHITECTURE §11)."""

from __future__ import annotations

from authz.admin.keys import new_admin_key
from authz.api.admin.v1 import admin_key_service_pb2 as pb
from authz.api.admin.v1 import admin_key_service_pb2_grpc as pb_grpc
from authz.errors import InvalidArgument, NotFound, PermissionDenied
from authz.server.admin import convert
from authz.server.admin._common import AdminRuntime
from authz.server.admin.auth import principal


class AdminKeyService(pb_grpc.AdminKeyServiceServicer):
    def __init__(self, runtime: AdminRuntime):
        self.rt = runtime

    async def CreateAdminKey(self, request: pb.CreateAdminKeyRequest, context) -> pb.CreateAdminKeyResponse:
        role = convert.ROLE_NAMES.get(request.role)
        if role is None:
            raise InvalidArgument(
                "role must be ROLE_VIEWER, ROLE_OPERATOR or ROLE_ADMIN", metadata={"field": "role"}
            )
        if request.tenant:
            await self.rt.require_tenant(request.tenant)
        caller = principal()
        # Without a principal the key is the caller's own: one person, however many keys.
        record, secret = new_admin_key(
            request.name,
            role,
            request.tenant or None,
            caller.identity,
            principal=request.principal or caller.principal,
        )
        await self.rt.audited(
            lambda: self.rt.store.create_admin_key(record),
            record.tenant,
            "admin_key.create",
            f"admin_key:{record.key_id}",
            {
                "name": record.name,
                "role": record.role,
                "tenant": record.tenant,
                "principal": record.principal,
                "created_by_principal": caller.principal,
            },
        )
        return pb.CreateAdminKeyResponse(key=convert.admin_key(record), secret=secret)

    async def ListAdminKeys(self, request: pb.ListAdminKeysRequest, context) -> pb.ListAdminKeysResponse:
        caller = principal()
        keys = await self.rt.store.list_admin_keys(
            None if caller.all_tenants else caller.tenant, include_revoked=request.include_revoked
        )
        return pb.ListAdminKeysResponse(keys=[convert.admin_key(k) for k in keys])

    async def RevokeAdminKey(self, request: pb.RevokeAdminKeyRequest, context) -> pb.RevokeAdminKeyResponse:
        caller = principal()
        target = await self.rt.store.get_admin_key(request.key_id) if request.key_id else None
        if target is None:
            raise NotFound(f"admin key {request.key_id!r} not found", reason="ADMIN_KEY_NOT_FOUND")
        if not caller.all_tenants and target.tenant != caller.tenant:
            raise PermissionDenied(
                f"key {caller.key_id} is limited to tenant {caller.tenant}; key {target.key_id} is not",
                reason="TENANT_SCOPE",
            )
        now = self.rt.clock()
        revoked = await self.rt.audited(
            lambda: self.rt.store.revoke_admin_key(target.key_id, caller.identity, now),
            target.tenant,
            "admin_key.revoke",
            f"admin_key:{target.key_id}",
            {"name": target.name, "role": target.role, "tenant": target.tenant},
        )
        return pb.RevokeAdminKeyResponse(key=convert.admin_key(revoked))
