"""``ApprovalService``: list, get and decide approvals (ARCHITECTURE §7)."""

from __future__ import annotations

from authz.api.admin.v1 import approval_service_pb2 as pb
from authz.api.admin.v1 import approval_service_pb2_grpc as pb_grpc
from authz.errors import InvalidArgument, NotFound
from authz.server.admin import convert
from authz.server.admin._common import AdminRuntime
from authz.server.admin.access import in_scope
from authz.server.admin.auth import principal
from authz.storage import Approval, approving_principals

MAX_NOTE = 1000
# Which stored statuses can have each effective status ("expired" is computed from expires_at, and
# stored once authz.admin.expiry recorded the timeout of a pending one).
_STORED = {
    "pending": ("pending",),
    "approved": ("approved",),
    "expired": ("pending", "approved", "expired"),
    "rejected": ("rejected",),
    "consumed": ("consumed",),
}


class ApprovalService(pb_grpc.ApprovalServiceServicer):
    def __init__(self, runtime: AdminRuntime):
        self.rt = runtime

    async def _get(self, tenant: str, approval_id: str) -> Approval:
        found = await self.rt.store.get_approval(tenant, approval_id) if approval_id else None
        if found is None:
            raise NotFound(
                f"tenant {tenant!r} has no approval {approval_id!r}",
                reason="APPROVAL_NOT_FOUND",
                metadata={"approval_id": approval_id},
            )
        return found

    async def ListApprovals(self, request: pb.ListApprovalsRequest, context) -> pb.ListApprovalsResponse:
        caller = principal()
        tenant = request.tenant or (None if caller.all_tenants else caller.tenant)
        wanted = convert.STATUS_NAMES.get(request.status) if request.status else None
        if request.status and wanted is None:
            raise InvalidArgument(f"unknown approval status {request.status}")
        now = self.rt.clock()
        found: list[Approval] = []
        for stored in _STORED[wanted] if wanted else (None,):
            found += await self.rt.store.list_approvals(tenant, stored)
        if wanted:
            found = [a for a in found if a.effective_status(now) == wanted]
        allowed = set(in_scope(caller, sorted({a.tenant for a in found})))
        found = sorted((a for a in found if a.tenant in allowed), key=lambda a: a.created_at, reverse=True)
        return pb.ListApprovalsResponse(approvals=[convert.approval(a, now) for a in found])

    async def GetApproval(self, request: pb.GetApprovalRequest, context) -> pb.GetApprovalResponse:
        found = await self._get(request.tenant, request.approval_id)
        return pb.GetApprovalResponse(approval=convert.approval(found, self.rt.clock()))

    async def DecideApproval(self, request: pb.DecideApprovalRequest, context) -> pb.DecideApprovalResponse:
        verdict = convert.VERDICTS.get(request.verdict)
        if verdict is None:
            raise InvalidArgument(
                "verdict must be VERDICT_APPROVE or VERDICT_REJECT", metadata={"field": "verdict"}
            )
        if len(request.note) > MAX_NOTE:
            raise InvalidArgument(f"note is limited to {MAX_NOTE} characters", metadata={"field": "note"})
        await self._get(request.tenant, request.approval_id)
        now = self.rt.clock()
        caller = principal()
        decided = await self.rt.audited(
            lambda: self.rt.store.record_approval_decision(
                request.tenant,
                request.approval_id,
                caller.identity,
                verdict,
                request.note,
                now,
                principal=caller.principal,
            ),
            request.tenant,
            "approval.decide",
            lambda d: f"approval:{d.approval_id}",
            lambda d: {
                "verdict": verdict,
                "note": request.note,
                "status": d.status,
                "principal": caller.principal,
                "approvals": len(approving_principals(d)),
                "quorum": d.quorum,
                "tool": d.tool,
                "agent": d.agent,
            },
        )
        return pb.DecideApprovalResponse(approval=convert.approval(decided, now))
