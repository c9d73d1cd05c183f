"""``PolicyService``: drafts, validate, dry-run, promote, rollback, active, history (ARCHITECTURE §6)."""

from __future__ import annotations

import asyncio
import re

from authz.admin import policies as logic
from authz.api.admin.v1 import policy_service_pb2 as pb
from authz.api.admin.v1 import policy_service_pb2_grpc as pb_grpc
from authz.errors import FailedPrecondition, InvalidArgument, NotFound
from authz.policy import MAX_POLICY_SOURCE_BYTES, compile_policy, policy_hash
from authz.server.admin import convert
from authz.server.admin._common import AdminRuntime
from authz.server.admin.auth import principal
from authz.storage import PolicyDraft

_DRAFT_NAME = re.compile(r"[A-Za-z0-9._\-]{1,128}")


def _check_name(name: str) -> None:
    if not _DRAFT_NAME.fullmatch(name):
        raise InvalidArgument(
            "draft names are 1-128 characters: letters, digits, '.', '_', '-'", metadata={"field": "name"}
        )


def _check_source(source: str) -> None:
    size = len(source.encode("utf-8"))
    if size > MAX_POLICY_SOURCE_BYTES:
        raise InvalidArgument(f"policy source is {size} bytes, the limit is {MAX_POLICY_SOURCE_BYTES}")


class PolicyService(pb_grpc.PolicyServiceServicer):
    def __init__(self, runtime: AdminRuntime):
        self.rt = runtime

    async def _draft(self, tenant: str, name: str) -> PolicyDraft:
        _check_name(name)
        draft = await self.rt.store.get_draft(tenant, name)
        if draft is None:
            raise NotFound(f"tenant {tenant!r} has no draft named {name!r}", reason="DRAFT_NOT_FOUND")
        return draft

    async def _candidate_source(self, request) -> str:
        """The source a validate/dry-run/promote request names: a stored draft or inline text."""
        if bool(request.draft) == bool(request.source):
            raise InvalidArgument("give exactly one of draft and source")
        if request.draft:
            return (await self._draft(request.tenant, request.draft)).source
        _check_source(request.source)
        return request.source

    async def _active(self, tenant: str):
        return (await self.rt.store.active_policies()).get(tenant)

    # -- drafts ------------------------------------------------------------------------------------------
    async def CreateDraft(self, request: pb.CreateDraftRequest, context) -> pb.CreateDraftResponse:
        await self.rt.require_tenant(request.tenant)
        _check_name(request.name)
        _check_source(request.source)
        now = self.rt.clock()
        draft = PolicyDraft(
            request.tenant,
            request.name,
            request.source,
            policy_hash(request.source),
            now,
            now,
            principal().identity,
        )
        await self.rt.audited(
            lambda: self.rt.store.create_draft(draft),
            request.tenant,
            "policy.draft.create",
            f"draft:{draft.name}",
            {"content_hash": draft.content_hash},
        )
        return pb.CreateDraftResponse(draft=convert.draft(draft))

    async def UpdateDraft(self, request: pb.UpdateDraftRequest, context) -> pb.UpdateDraftResponse:
        _check_name(request.name)
        _check_source(request.source)
        now = self.rt.clock()
        draft = await self.rt.audited(
            lambda: self.rt.store.update_draft(
                request.tenant,
                request.name,
                request.source,
                policy_hash(request.source),
                principal().identity,
                now,
                expected_hash=request.expected_hash or None,
            ),
            request.tenant,
            "policy.draft.update",
            lambda d: f"draft:{d.name}",
            lambda d: {"content_hash": d.content_hash},
        )
        return pb.UpdateDraftResponse(draft=convert.draft(draft))

    async def GetDraft(self, request: pb.GetDraftRequest, context) -> pb.GetDraftResponse:
        return pb.GetDraftResponse(draft=convert.draft(await self._draft(request.tenant, request.name)))

    async def ListDrafts(self, request: pb.ListDraftsRequest, context) -> pb.ListDraftsResponse:
        drafts = await self.rt.store.list_drafts(request.tenant)
        return pb.ListDraftsResponse(drafts=[convert.draft(d, with_source=False) for d in drafts])

    async def DeleteDraft(self, request: pb.DeleteDraftRequest, context) -> pb.DeleteDraftResponse:
        _check_name(request.name)

        async def delete() -> None:
            if not await self.rt.store.delete_draft(request.tenant, request.name):
                raise NotFound(
                    f"tenant {request.tenant!r} has no draft named {request.name!r}", reason="DRAFT_NOT_FOUND"
                )

        await self.rt.audited(delete, request.tenant, "policy.draft.delete", f"draft:{request.name}", {})
        return pb.DeleteDraftResponse(name=request.name)

    # -- validate and dry-run ----------------------------------------------------------------------------
    async def ValidatePolicy(self, request: pb.ValidatePolicyRequest, context) -> pb.ValidatePolicyResponse:
        source = await self._candidate_source(request)
        result = await asyncio.to_thread(logic.validate_source, source, self.rt.policy_engine)
        return pb.ValidatePolicyResponse(
            valid=result.valid,
            diagnostics=[
                pb.Diagnostic(line=d.line, column=d.column, message=d.message) for d in result.diagnostics
            ],
            content_hash=result.content_hash,
        )

    async def DryRunPolicy(self, request: pb.DryRunPolicyRequest, context) -> pb.DryRunPolicyResponse:
        await self.rt.require_tenant(request.tenant)
        source = await self._candidate_source(request)
        candidate = await asyncio.to_thread(logic.compile_or_raise, source, self.rt.policy_engine)
        active_version = await self._active(request.tenant)
        active = None
        if active_version is not None:
            try:
                active = await asyncio.to_thread(
                    compile_policy,
                    active_version.source,
                    version=active_version.version,
                    engine=self.rt.policy_engine,
                )
            except InvalidArgument:
                active = None  # a stored policy that no longer compiles: the tenant denies everything
        replayed = not request.inputs
        meta = None
        if replayed:
            calls = await logic.replay_calls(
                self.rt.store, request.tenant, logic.replay_count(request.replay_last)
            )
            inputs = [data for _, data, _, _ in calls]
            meta = [(record.seq, recorded, decision_id) for record, _, recorded, decision_id in calls]
        else:
            if request.replay_last:
                raise InvalidArgument("replay_last applies only when no inputs are given")
            if len(request.inputs) > logic.MAX_REPLAY:
                raise InvalidArgument(f"at most {logic.MAX_REPLAY} inputs per dry-run")
            inputs = [logic.complete_input(request.tenant, convert.dict_of(i)) for i in request.inputs]
        items = await asyncio.to_thread(logic.evaluate_all, candidate, active, inputs, meta)
        results = [self._result(item) for item in items]
        changes = [r for r, item in zip(results, items, strict=True) if item.changed or item.candidate.error]
        return pb.DryRunPolicyResponse(
            candidate_hash=candidate.content_hash,
            active_version=active_version.version if active_version else 0,
            active_hash=active_version.content_hash if active_version else "",
            evaluated=len(items),
            changed=sum(1 for item in items if item.changed),
            candidate_errors=sum(1 for item in items if item.candidate.error),
            replayed=replayed,
            changes=changes,
            results=[] if replayed else results,
        )

    @staticmethod
    def _result(item: logic.DryRunItem) -> pb.DryRunResult:
        return pb.DryRunResult(
            index=item.index,
            input=convert.struct_of(item.input),
            active_outcome=convert.OUTCOMES[item.active.outcome]
            if item.active
            else pb.POLICY_OUTCOME_UNSPECIFIED,
            active_reason=item.active.reason if item.active else "the tenant has no active policy",
            candidate_outcome=convert.OUTCOMES[item.candidate.outcome],
            candidate_reason=item.candidate.reason,
            candidate_error=item.candidate.error,
            changed=item.changed,
            audit_seq=item.audit_seq,
            recorded_decision=item.recorded_decision,
            decision_id=item.decision_id,
        )

    # -- promote, rollback, read -------------------------------------------------------------------------
    async def PromotePolicy(self, request: pb.PromotePolicyRequest, context) -> pb.PromotePolicyResponse:
        await self.rt.require_tenant(request.tenant)
        source = await self._candidate_source(request)
        compiled = await asyncio.to_thread(logic.compile_or_raise, source, self.rt.policy_engine)
        previous = await self._active(request.tenant)
        version = await self.rt.audited(
            lambda: self.rt.store.promote_policy(
                request.tenant, source, compiled.content_hash, principal().identity
            ),
            request.tenant,
            "policy.promote",
            lambda v: f"policy:v{v.version}",
            lambda v: {
                "version": v.version,
                "content_hash": v.content_hash,
                "previous_version": previous.version if previous else None,
                "draft": request.draft or None,
            },
        )
        return pb.PromotePolicyResponse(
            policy=convert.policy_version(version), previous_version=previous.version if previous else 0
        )

    async def RollbackPolicy(self, request: pb.RollbackPolicyRequest, context) -> pb.RollbackPolicyResponse:
        await self.rt.require_tenant(request.tenant)
        if request.version < 0:
            raise InvalidArgument("version must not be negative")
        history = await self.rt.store.policy_history(request.tenant)
        current = next((p for p in history if p.active), None)
        target = request.version
        if target == 0:
            if current is None:
                raise FailedPrecondition(f"tenant {request.tenant!r} has no active policy to roll back")
            older = [p.version for p in history if p.version < current.version]
            if not older:
                raise FailedPrecondition(
                    f"tenant {request.tenant!r} has no version before v{current.version}"
                )
            target = max(older)
        source = next((p.source for p in history if p.version == target), None)
        if source is None:
            raise NotFound(
                f"tenant {request.tenant!r} has no policy version {target}", reason="POLICY_VERSION_NOT_FOUND"
            )
        await asyncio.to_thread(
            logic.compile_or_raise, source, self.rt.policy_engine
        )  # never activate what the check path cannot load
        version = await self.rt.audited(
            lambda: self.rt.store.activate_policy(request.tenant, target, principal().identity),
            request.tenant,
            "policy.rollback",
            lambda v: f"policy:v{v.version}",
            lambda v: {
                "version": v.version,
                "content_hash": v.content_hash,
                "previous_version": current.version if current else None,
            },
        )
        return pb.RollbackPolicyResponse(
            policy=convert.policy_version(version), previous_version=current.version if current else 0
        )

    async def GetActivePolicy(
        self, request: pb.GetActivePolicyRequest, context
    ) -> pb.GetActivePolicyResponse:
        active = await self._active(request.tenant)
        if active is None:
            raise NotFound(f"tenant {request.tenant!r} has no active policy", reason="NO_ACTIVE_POLICY")
        return pb.GetActivePolicyResponse(policy=convert.policy_version(active))

    async def ListPolicyHistory(
        self, request: pb.ListPolicyHistoryRequest, context
    ) -> pb.ListPolicyHistoryResponse:
        history = await self.rt.store.policy_history(request.tenant)
        return pb.ListPolicyHistoryResponse(
            versions=[convert.policy_version(p, with_source=request.include_source) for p in history]
        )
