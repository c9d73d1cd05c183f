"""The ext_authz servicer: transport only. Parses, runs the pipeline per message, records, answers."""

from __future__ import annotations

import asyncio
import logging
import time
from dataclasses import replace
from typing import Any

import grpc
from envoy.service.auth.v3 import external_auth_pb2, external_auth_pb2_grpc

from authz.audit import UnauthenticatedDenials
from authz.check import Decision, DecisionRecorder, Pipeline
from authz.check.models import unavailable
from authz.server import wire

log = logging.getLogger("tessera.check")


class AuthorizationService(external_auth_pb2_grpc.AuthorizationServicer):
    """``envoy.service.auth.v3.Authorization/Check``. Never raises: every failure is a deny reply."""

    def __init__(
        self,
        pipeline: Pipeline,
        recorder: DecisionRecorder,
        *,
        deadline_cap_s: float,
        strip_authorization: bool = True,
        metrics: Any = None,
        body_limits: Any = wire.DEFAULT_LIMITS,
        unauthenticated_window_s: float = 60.0,
        tracing: Any = None,
        listing: Any = None,
        receipts: Any = None,
    ):
        self._pipeline = pipeline
        # Token verification before the body is read (resolved once, not per check).
        self._authenticates = getattr(pipeline, "authenticates", None)
        self._recorder = recorder
        self._body_limits = body_limits
        # Tokenless and malformed requests from one source share an audit event per window.
        self._audit = UnauthenticatedDenials(recorder, window_s=unauthenticated_window_s)
        self._deadline_cap_s = deadline_cap_s
        self._strip_authorization = strip_authorization
        self._metrics = metrics
        #: authz.observability.Tracing when OTEL_* turned tracing on, else None (no span work at all).
        self._tracing = tracing
        self._listing = listing  # authz.check.listing.ListFilter: list responses are filtered
        #: authz.receipts.ReceiptSigner: each allowed request carries a signed receipt upstream (None: off).
        self._receipts = receipts

    async def Check(
        self, request: external_auth_pb2.CheckRequest, context: grpc.aio.ServicerContext
    ) -> external_auth_pb2.CheckResponse:
        try:
            if self._tracing is not None:
                return await self._check_traced(request, context)
            return await self._check(request, context)
        except Exception as exc:  # fail closed: a bug here must still be a deny
            decision = unavailable(None, f"internal error: {type(exc).__name__}")
            log.exception("check failed unexpectedly", extra={"decision_id": decision.decision_id})
            # Audited like every answer; bounded, since whatever failed may be the store itself.
            try:
                async with asyncio.timeout(self._deadline_cap_s):
                    if not await self._record([decision]):
                        self._unrecorded([decision])
            except TimeoutError:
                log.error("internal-error decision %s could not be audited in time", decision.decision_id)
            self._count([decision])
            return wire.denied_response(
                503,
                {"jsonrpc": "2.0", "id": None, "error": wire.decision_error(decision)},
                decision.decision_id,
            )

    async def _check_traced(self, request: external_auth_pb2.CheckRequest, context: grpc.aio.ServicerContext):
        from authz.observability import annotate_check_span, current_trace_id

        annotate_check_span(request)
        trace_id = current_trace_id()
        reply = await self._check(request, context, trace_id)
        if trace_id is not None:
            wire.add_trace_header(reply, trace_id)
        return reply

    async def _check(
        self,
        request: external_auth_pb2.CheckRequest,
        context: grpc.aio.ServicerContext,
        trace_id: str | None = None,
    ):
        deadline = wire.monotonic_deadline(context.time_remaining(), self._deadline_cap_s)
        source = request.attributes.source.address.socket_address.address
        parsed = wire.parse_request(
            request,
            deadline=deadline,
            limits=self._body_limits,
            authenticates=self._authenticates,
        )
        if parsed.protocol_error is not None:
            reply, decision = wire.protocol_denial(parsed)
            if trace_id is not None:
                decision = replace(decision, trace_id=trace_id)
            if not await self._record([decision], source, trace_id):
                self._unrecorded([decision])
            self._count([decision], trace_id)
            return reply
        # A batch is all or nothing: one denial denies it and then charges no element's budget.
        decisions = await self._pipeline.check_batch([m.input for m in parsed.messages])
        if time.monotonic() > deadline:
            # Envoy has given up on this request: nothing it carried was let through, and the audit
            # chain must not say otherwise.
            decisions = [
                unavailable(d, "check deadline exceeded before the answer") if d.allowed else d
                for d in decisions
            ]
        if trace_id is not None:
            decisions = [replace(d, trace_id=trace_id) for d in decisions]
        server = parsed.messages[0].input.server
        if server is not None:  # the audit names the tool server (several behind one endpoint)
            decisions = [replace(d, server=server) for d in decisions]
        positions: list[tuple[str, int, str]] = []
        if not await self._record(decisions, source, trace_id, positions):
            if decisions[-1].allowed:
                decisions[-1] = unavailable(
                    decisions[-1], "the decision could not be written to the audit chain"
                )
            self._unrecorded(decisions)
        self._count(decisions, trace_id)
        last = decisions[-1]
        if last.allowed:
            reply = wire.ok_response(decisions[0], parsed, strip_authorization=self._strip_authorization)
            if self._receipts is not None:
                wire.add_receipt(reply, self._receipts, request, decisions, positions)
            if self._listing is not None:
                denial = wire.mark_list_request(reply, parsed, decisions, self._listing)
                if denial is not None:
                    return denial
            return reply
        if parsed.resource_metadata and parsed.token_verified:  # OAuth mode: a scope the token lacks
            reply = wire.insufficient_scope(parsed, last, self._pipeline.authenticator)
            if reply is not None:
                return reply
        return wire.deny_for(parsed, last, parsed.messages)

    async def _record(
        self,
        decisions: list[Decision],
        source: str | None = None,
        trace_id: str | None = None,
        positions: list[tuple[str, int, str]] | None = None,
    ) -> bool:
        """Durably record before answering; False (and the caller denies) when that failed. Where the
        events landed in their chains goes into ``positions`` (for the signed receipt)."""
        started = time.perf_counter()
        try:
            if self._tracing is None:
                written = await self._write(decisions, source)
            else:
                with self._tracing.span("tessera.audit", **{"tessera.stage": "audit"}):
                    written = await self._write(decisions, source)
            if positions is not None and written:
                positions.extend(written)
        except Exception as exc:
            log.exception(
                "audit write failed",
                extra={"decision_id": decisions[-1].decision_id, "tenant": decisions[-1].tenant},
            )
            if self._metrics is not None:
                self._metrics.store_error("audit", exc)
            return False
        if self._metrics is not None:
            self._metrics.observe_audit_commit(time.perf_counter() - started, trace_id)
        return True

    async def _write(self, decisions: list[Decision], source: str | None) -> Any:
        if source is None:
            return await self._recorder.record(decisions)
        return await self._audit.record(decisions, source)

    def _unrecorded(self, decisions: list[Decision]) -> None:
        """Answered without an audit event (the store is down): counted, logged, kept for later."""
        defer = getattr(self._recorder, "defer", None)  # a recorder without a backlog just loses them
        if defer is not None:
            defer(decisions)
        else:
            log.error("%d decisions answered without an audit event", len(decisions))
        if self._metrics is not None:
            self._metrics.unrecorded += len(decisions)

    def _count(self, decisions: list[Decision], trace_id: str | None = None) -> None:
        if self._metrics is not None:
            for decision in decisions:
                self._metrics.observe(decision, trace_id)
        if log.isEnabledFor(logging.DEBUG):  # one cached lookup per check when not debugging
            for d in decisions:
                log.debug(
                    "%s %s%s",
                    d.outcome.value,
                    d.tool or d.rpc_method or "request",
                    f" ({d.check.value}, {d.code})" if d.check is not None else "",
                    extra={"decision_id": d.decision_id, "tenant": d.tenant, "trace_id": trace_id},
                )

    async def aclose(self) -> None:
        """Write the open windows of aggregated denials (before the recorder closes)."""
        await self._audit.aclose()
