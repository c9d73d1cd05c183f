"""``AuditService``: query, verify, export, checkpoints (ARCHITECTURE §9)."""

from __future__ import annotations

import csv
import logging
from collections.abc import AsyncIterator

from google.api import httpbody_pb2

from authz.api.admin.v1 import audit_service_pb2 as pb
from authz.api.admin.v1 import audit_service_pb2_grpc as pb_grpc
from authz.audit import (
    CSV_COLUMNS,
    Checkpoint,
    LineBuffer,
    checkpoint_public_key,
    csv_row,
    iter_audit_events,
    ndjson_line,
    sign_head,
    verify_chain,
)
from authz.audit.cli import CHECKPOINT_KEY_PURPOSE
from authz.errors import InvalidArgument, NotFound
from authz.server.admin import convert
from authz.server.admin._common import AdminRuntime
from authz.server.admin.access import in_scope
from authz.server.admin.auth import principal
from authz.token import valid_name

DEFAULT_PAGE, MAX_PAGE = 100, 1000
#: Events per streamed export chunk.
EXPORT_CHUNK = 500
CONTENT_TYPES = {"ndjson": "application/x-ndjson", "csv": "text/csv; charset=utf-8"}


def _decision(value: int) -> str | None:
    if not value:
        return None
    name = convert.AUDIT_DECISION_NAMES.get(value)
    if name is None:
        raise InvalidArgument(f"unknown audit decision {value}", metadata={"field": "decision"})
    return name


def _ms(request, field: str) -> int | None:
    when = convert.datetime_of(request, field)
    return int(when.timestamp() * 1000) if when is not None else None


log = logging.getLogger("tessera.admin")


class AuditService(pb_grpc.AuditServiceServicer):
    def __init__(self, runtime: AdminRuntime):
        self.rt = runtime

    def _seed(self, tenant: str) -> bytes:
        return self.rt.keyring.derive_subkey(CHECKPOINT_KEY_PURPOSE, tenant)

    async def _chains(self, tenant: str) -> list[str]:
        """The chains a request names: one tenant, or every chain in the caller's scope."""
        if tenant:
            if not valid_name(tenant):
                raise InvalidArgument(f"invalid tenant name {tenant!r}", metadata={"field": "tenant"})
            return [tenant]
        return in_scope(principal(), await self.rt.store.audit_tenants())

    async def QueryAuditEvents(
        self, request: pb.QueryAuditEventsRequest, context
    ) -> pb.QueryAuditEventsResponse:
        if not valid_name(request.tenant):
            raise InvalidArgument(f"invalid tenant name {request.tenant!r}", metadata={"field": "tenant"})
        size = request.page_size or DEFAULT_PAGE
        if not 0 < size <= MAX_PAGE:
            raise InvalidArgument(f"page_size must be 1-{MAX_PAGE}", metadata={"field": "page_size"})
        after = 0
        if request.page_token:
            if not request.page_token.isdigit():
                raise InvalidArgument("invalid page_token", metadata={"field": "page_token"})
            after = int(request.page_token)
        events = self.rt.store.iter_events(
            request.tenant,
            after_seq=after,
            batch=size + 1,
            since_ms=_ms(request, "since"),
            until_ms=_ms(request, "until"),
            agent=request.agent or None,
            decision=_decision(request.decision),
        )
        page = []
        try:
            async for record in events:
                page.append(record)
                if len(page) > size:
                    break
        finally:
            await events.aclose()
        more = len(page) > size
        page = page[:size]
        return pb.QueryAuditEventsResponse(
            events=[convert.audit_event(r) for r in page], next_page_token=str(page[-1].seq) if more else ""
        )

    async def VerifyAuditChain(
        self, request: pb.VerifyAuditChainRequest, context
    ) -> pb.VerifyAuditChainResponse:
        exported = None
        if request.checkpoint:
            if not request.tenant:
                raise InvalidArgument("verifying against a checkpoint needs the tenant")
            exported = Checkpoint.from_export(request.checkpoint)
        results = []
        for tenant in await self._chains(request.tenant):
            result = await verify_chain(
                self.rt.store,
                tenant,
                checkpoint=exported,
                public_key=checkpoint_public_key(self._seed(tenant)),
            )
            results.append(
                pb.ChainVerification(
                    tenant=result.tenant,
                    ok=result.ok,
                    events_checked=result.events_checked,
                    head_seq=result.head_seq or 0,
                    chain_seq=result.chain_seq,
                    chain_hash=result.chain_hash,
                    first_bad_seq=result.first_bad_seq or 0,
                    problem=result.problem or "",
                    checkpoints_checked=result.checkpoints_checked,
                    summary=result.summary(),
                )
            )
        metrics = self.rt.extras.get("metrics")
        if metrics is not None:
            for result in results:
                metrics.observe_verification(result.ok)
        for result in results:
            if not result.ok:
                await self._record_failure(result)
        return pb.VerifyAuditChainResponse(results=results, ok=all(r.ok for r in results))

    async def _record_failure(self, result: pb.ChainVerification) -> None:
        """A failed verification goes into the (damaged) chain itself, appended at its head, so SIEM sinks
        and notification routes (``audit.verify_failed``) hear of it; who verified is the actor."""
        try:
            await self.rt.audit(
                result.tenant,
                "audit.verify_failed",
                f"chain:{result.tenant}",
                {
                    "error": result.problem or result.summary,
                    "first_bad_seq": result.first_bad_seq or None,
                    "events_checked": result.events_checked,
                },
            )
        except Exception as exc:  # a chain too damaged to append to: the answer still says what is wrong
            log.error("could not record the failed verification of %s: %s", result.tenant, exc)

    async def ExportAuditEvents(
        self, request: pb.ExportAuditEventsRequest, context
    ) -> AsyncIterator[httpbody_pb2.HttpBody]:
        fmt = "csv" if request.format == pb.EXPORT_FORMAT_CSV else "ndjson"
        if request.format not in (
            pb.EXPORT_FORMAT_UNSPECIFIED,
            pb.EXPORT_FORMAT_NDJSON,
            pb.EXPORT_FORMAT_CSV,
        ):
            raise InvalidArgument(f"unknown export format {request.format}", metadata={"field": "format"})
        decision = _decision(request.decision)
        since, until = _ms(request, "since"), _ms(request, "until")
        chains = await self._chains(request.tenant)
        buffer = LineBuffer()
        writer = csv.writer(buffer, lineterminator="\r\n") if fmt == "csv" else None
        if writer is not None:
            writer.writerow(CSV_COLUMNS)
        content_type, count = CONTENT_TYPES[fmt], 0
        first = True
        for tenant in chains:
            records = iter_audit_events(
                self.rt.store,
                tenant=tenant,
                since=since,
                until=until,
                agent=request.agent or None,
                decision=decision,
                batch=EXPORT_CHUNK,
            )
            try:
                async for record in records:
                    if writer is None:
                        buffer.write(ndjson_line(record))
                    else:
                        writer.writerow(csv_row(record))
                    count += 1
                    if count % EXPORT_CHUNK == 0:
                        # The first message's content type is what a REST client sees.
                        yield httpbody_pb2.HttpBody(content_type=content_type, data=buffer.take().encode())
                        first = False
            finally:
                await records.aclose()
        rest = buffer.take()
        if rest or first:
            yield httpbody_pb2.HttpBody(content_type=content_type, data=rest.encode())

    async def CreateAuditCheckpoint(
        self, request: pb.CreateAuditCheckpointRequest, context
    ) -> pb.CreateAuditCheckpointResponse:
        if not valid_name(request.tenant):
            raise InvalidArgument(f"invalid tenant name {request.tenant!r}", metadata={"field": "tenant"})
        if await self.rt.store.audit_head(request.tenant) is None:
            raise NotFound(f"tenant {request.tenant!r} has no audit chain", reason="CHAIN_NOT_FOUND")
        checkpoint = await sign_head(self.rt.store, request.tenant, self._seed(request.tenant))
        await self.rt.audited(  # the stored checkpoint and its event stand or fall together
            lambda: self.rt.store.put_checkpoint(checkpoint.to_record()),
            request.tenant,
            "audit.checkpoint.create",
            f"checkpoint:{checkpoint.seq}",
            {"seq": checkpoint.seq, "hash": checkpoint.hash},
        )
        return pb.CreateAuditCheckpointResponse(
            checkpoint=convert.checkpoint(checkpoint.to_record(), checkpoint.export())
        )

    async def ListAuditCheckpoints(
        self, request: pb.ListAuditCheckpointsRequest, context
    ) -> pb.ListAuditCheckpointsResponse:
        stored = await self.rt.store.list_checkpoints(request.tenant)
        return pb.ListAuditCheckpointsResponse(
            checkpoints=[convert.checkpoint(c, Checkpoint.from_record(c).export()) for c in stored]
        )
