"""``IntegrationService``: the audit forwarders' health and dead letters (read-only, viewer role)."""

from __future__ import annotations

from authz.api.admin.v1 import integration_service_pb2 as pb
from authz.api.admin.v1 import integration_service_pb2_grpc as pb_grpc
from authz.forward import forwarder_health
from authz.server.admin import convert
from authz.server.admin._common import AdminRuntime
from authz.server.admin.auth import principal


class IntegrationService(pb_grpc.IntegrationServiceServicer):
    def __init__(self, runtime: AdminRuntime):
        self.rt = runtime

    async def ForwarderHealth(
        self, request: pb.ForwarderHealthRequest, context
    ) -> pb.ForwarderHealthResponse:
        caller = principal()  # an explicit tenant was checked by the access rules; else narrow here
        rows = await forwarder_health(
            self.rt.store, tenant=request.tenant or None, sink=request.sink or None, now=self.rt.clock()
        )
        out = []
        for row in rows:
            if not caller.may_act_on(row.cursor.tenant):
                continue
            c = row.cursor
            out.append(
                pb.ForwarderHealth(
                    sink=c.sink,
                    tenant=c.tenant,
                    cursor_seq=c.seq,
                    head_seq=row.head_seq,
                    lag_events=row.lag_events,
                    lag_seconds=row.lag_seconds,
                    last_success_at=convert.timestamp(c.last_success_at),
                    last_error=c.last_error or "",
                    last_error_at=convert.timestamp(c.last_error_at),
                    dead_letters=row.dead_letters,
                    lease_holder=row.lease[0] if row.lease else "",
                    lease_expires_at=convert.timestamp(row.lease[1] if row.lease else None),
                )
            )
        return pb.ForwarderHealthResponse(forwarders=out)

    async def ListDeadLetters(
        self, request: pb.ListDeadLettersRequest, context
    ) -> pb.ListDeadLettersResponse:
        caller = principal()
        dead = await self.rt.store.list_dead_letters(
            request.tenant or None, request.sink or None, include_replayed=request.include_replayed
        )
        return pb.ListDeadLettersResponse(
            dead_letters=[
                pb.DeadLetter(
                    id=d.id,
                    tenant=d.tenant,
                    sink=d.sink,
                    from_seq=d.from_seq,
                    to_seq=d.to_seq,
                    reason=d.reason,
                    attempts=d.attempts,
                    created_at=convert.timestamp(d.created_at),
                    replayed_at=convert.timestamp(d.replayed_at),
                )
                for d in dead
                if caller.may_act_on(d.tenant)
            ]
        )
