"""The check pipeline: capability → intent → provenance → policy → budget (ARCHITECTURE §4).

The first stage that does not pass decides; later stages do not run. The budget stage runs last and
reserves atomically, so a call denied earlier consumes nothing. :meth:`Pipeline.check` is the one
place where an exception, a timeout or a cancellation inside a stage becomes a deny (-32018): no
error path can produce an allow. After the stages, a passed deadline still turns the answer into a deny.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import inspect
import logging
import time
import uuid
from collections.abc import Awaitable, Callable, Collection, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any, Protocol

from authz.budget import rule_reservations, token_reservations, tool_cost
from authz.canonical import stable_json
from authz.check.directory import TenantDirectory, TenantView
from authz.check.listing import ListFilter, caller_context
from authz.check.models import RETRY_AFTER_MS, Check, CheckInput, Decision, Outcome, new_decision_id
from authz.echo import bounded_reason, echo
from authz.intent import judge_intent
from authz.provenance import NOT_PRESENTED, ProvenanceResult, verify_entries
from authz.storage import Approval, ApprovalClaim, Reservation, ReserveResult, Store
from authz.token import AuthenticatedToken

log = logging.getLogger("tessera.check")


@dataclass(slots=True)
class CallState:
    """What the stages learn about one call, in order. Lives for one ``Pipeline.check``."""

    input: CheckInput
    decision_id: str
    now: datetime
    stage: str = "capability"
    token: Any = None  # authz.token.AuthenticatedToken
    tenant: TenantView | None = None
    arguments_sha256: str | None = None
    prompt_sha256: str | None = None
    intent: Any = None  # authz.intent.Intent
    provenance: ProvenanceResult = NOT_PRESENTED
    approval: Approval | None = None
    approval_status: str | None = None
    approval_to_consume: bool = False
    escalation: Decision | None = None
    audit: dict[str, Any] = field(default_factory=dict)
    #: False for the elements of a batch: the budget stage only plans its charge (``planned``) and
    #: :meth:`Pipeline.check_batch` charges every element's plan in one reservation.
    charge: bool = True
    planned: tuple[list[Reservation], ApprovalClaim | None] | None = None
    #: The running stage's span when tracing is on (spans opened inside a stage nest under it).
    span: Any = None


Stage = Callable[[CallState], Awaitable[Decision | None]]


class StageObserver(Protocol):
    """Metrics seam: told how long the stages took and which stage failed (authz.observability)."""

    def observe_stages(self, stages: Sequence[tuple[str, Any]], marks: Sequence[float]) -> None:
        """``marks[0]`` is when ``stages[0]`` started, ``marks[i + 1]`` when ``stages[i]`` ended;
        one call per check (stages not run have no mark)."""

    def store_error(self, operation: str, exc: BaseException | None = None) -> None: ...


class PipelineTracer(Protocol):
    """Tracing seam: a span per call and per stage (authz.observability implements it on OpenTelemetry).

    Absent (None) when tracing is off, so an untraced check builds no span object and no attributes.
    """

    def call(self, inp: CheckInput) -> contextlib.AbstractContextManager[Any]: ...

    def stage(self, name: str, within: Any = None) -> contextlib.AbstractContextManager[Any]:
        """The span of one stage, a child of ``within`` (a stage's span) or else of the call's span;
        entering it gives the span (what a nested span names as ``within``)."""
        ...

    def finish(self, span: Any, decision: Decision) -> None: ...


_NO_SPAN = contextlib.nullcontext()


class Pipeline:
    """Runs the stages for one call and returns a :class:`Decision`. No gRPC in here."""

    def __init__(
        self,
        *,
        authenticator: Any,
        store: Store,
        directory: TenantDirectory,
        memory_key: Callable[[str], bytes],
        approval_ttl_s: int = 900,
        approval_quorum: int = 1,
        default_deadline_s: float = 0.45,
        clock: Callable[[], float] = time.time,
        observer: StageObserver | None = None,
        tracer: PipelineTracer | None = None,
    ):
        self._auth = authenticator
        self._store = store
        self._directory = directory
        self._memory_key = memory_key
        self._approval_ttl_s = approval_ttl_s
        self._approval_quorum = approval_quorum
        self._default_deadline_s = default_deadline_s
        self._clock = clock
        self._full: tuple[tuple[str, Stage], ...] = (
            ("capability", self._capability),
            ("intent", self._intent),
            ("provenance", self._provenance),
            ("policy", self._policy),
            ("budget", self._budget),
        )
        self._session: tuple[tuple[str, Stage], ...] = (("capability", self._capability),)
        # A get/read of a prompt or resource: the token, then that item's list-phase judgement.
        self._item_read: tuple[tuple[str, Stage], ...] = (
            ("capability", self._capability),
            ("policy", self._item_access),
        )
        self._listing = ListFilter(authenticator=authenticator, directory=directory, clock=clock)
        self._observer = observer
        self._observe_stages = observer.observe_stages if observer is not None else None
        self._tracer = tracer
        if tracer is not None:
            # Traced checks go through a wrapper chosen once here, so an untraced check pays not even
            # a branch or an extra coroutine frame for tracing.
            self._check = self._check_traced  # type: ignore[method-assign]

    @property
    def authenticator(self) -> Any:
        """The token authenticator (shared, with its cache, by the list filter)."""
        return self._auth

    def authenticates(self, token: str | None, tenant: str | None = None) -> bool:
        """Does ``token`` verify (signature and key id, cached), and belong to ``tenant`` when one is
        given (a route pinned to a tenant)? For the transport to decide, before reading a body, whether
        the caller is worth that work, and in OAuth mode whether to challenge it. The full check still
        runs in :meth:`check`."""
        if not token:
            return False
        try:
            token_ = self._auth.authenticate(token)
        except Exception:  # a malformed token must not cost more than a denial
            return False
        return isinstance(token_, AuthenticatedToken) and (tenant is None or token_.tenant == tenant)

    # -- the one fail-closed boundary --------------------------------------------------------------------
    async def check(self, inp: CheckInput) -> Decision:
        decision, _ = await self._check(inp, charge=True)
        return decision

    async def check_batch(self, inputs: Sequence[CheckInput]) -> list[Decision]:
        """A JSON-RPC batch, all or nothing: one denial denies the batch, and then no element's budget
        is consumed.

        The elements run the stages in order until one is not allowed; the budget stage of each only
        plans its charge, and the plans of all elements are charged in ONE reservation at the end (so
        counters shared by several elements are charged cumulatively, and an exhausted one leaves every
        counter untouched). When the batch is denied, the elements that had passed are recorded as
        denied with it (nothing of the batch reaches the upstream). Fails closed like :meth:`check`.
        """
        if len(inputs) == 1:
            return [await self.check(inputs[0])]
        decisions: list[Decision] = []
        states: list[CallState] = []
        late = False
        for inp in inputs:
            if decisions and inp.deadline is not None and time.monotonic() > inp.deadline:
                late = True  # the rest is not worth checking: the answer is a deny now
                break
            decision, state = await self._check(inp, charge=False)
            decisions.append(decision)
            states.append(state)
            if not decision.allowed:
                break
        deadline = inputs[-1].deadline
        if late or (deadline is not None and time.monotonic() > deadline):
            decisions = [
                self._unavailable(s, "check deadline exceeded before the answer") if d.allowed else d
                for d, s in zip(decisions, states, strict=True)
            ]
        elif decisions[-1].allowed:
            index, denial = await self._charge_batch(states, deadline)
            if denial is not None:
                decisions[index] = denial
        denial = next((d for d in decisions if not d.allowed), None)
        if denial is None:
            return decisions
        where = decisions.index(denial) + 1
        return [
            self._decide(
                s,
                Outcome.DENY,
                denial.check,
                f"batch denied: message {where} was denied: {denial.reason}",
                batch_denied_by=denial.decision_id,
            )
            if d.allowed
            else d
            for d, s in zip(decisions, states, strict=True)
        ]

    async def _charge_batch(
        self, states: list[CallState], deadline: float | None
    ) -> tuple[int, Decision | None]:
        """Charge every element's planned budget in one reservation; ``(index, denial)`` of the element
        the batch is denied for (the last one that uses an exhausted counter), or ``(0, None)``."""
        reservations: list[Reservation] = []
        claims: list[ApprovalClaim] = []
        for state in states:
            planned = state.planned or ([], None)
            reservations += planned[0]
            if planned[1] is not None:
                claims.append(planned[1])
        if not reservations and not claims:
            return 0, None
        last = states[-1]
        last.stage = "budget"
        try:
            timeout = None if deadline is None else max(0.0, deadline - time.monotonic())
            async with asyncio.timeout(timeout):
                result = await self._store.reserve(reservations, consume=claims or None)
        except TimeoutError:
            return len(states) - 1, self._unavailable(last, "check deadline exceeded during the budget stage")
        except Exception as exc:
            log.warning("budget stage failed for batch decision %s: %s", last.decision_id, exc)
            return len(states) - 1, self._unavailable(last, f"the budget stage failed: {_describe(exc)}")
        if result.ok:
            return 0, None
        index = len(states) - 1
        if result.exhausted is not None:
            key = (result.exhausted.key, result.exhausted.window_start)
            index = max(
                i
                for i, s in enumerate(states)
                if any((r.key, r.window_start) == key for r in (s.planned or ([], None))[0])
            )
        elif result.approval_unavailable:
            index = max(i for i, s in enumerate(states) if s.planned and s.planned[1] is not None)
        state = states[index]
        state.stage = "budget"
        return index, self._reserve_denial(state, result)

    async def _check(self, inp: CheckInput, *, charge: bool) -> tuple[Decision, CallState]:
        started = time.perf_counter()
        state = CallState(inp, new_decision_id(), datetime.fromtimestamp(self._clock(), UTC), charge=charge)
        deadline = inp.deadline if inp.deadline is not None else time.monotonic() + self._default_deadline_s
        try:
            async with asyncio.timeout(max(0.0, deadline - time.monotonic())):
                decision = await self._run(state)
        except TimeoutError:
            decision = self._unavailable(state, f"check deadline exceeded during the {state.stage} stage")
        except asyncio.CancelledError:
            task = asyncio.current_task()
            if task is not None and task.cancelling():
                raise  # the caller went away; there is nobody to answer
            decision = self._unavailable(state, f"the {state.stage} stage was cancelled")
        except Exception as exc:
            log.warning(
                "%s stage failed for decision %s: %s",
                state.stage,
                state.decision_id,
                exc,
                extra={"decision_id": state.decision_id, "tenant": inp.pinned_tenant or _tenant_of(state)},
            )
            if self._observer is not None:
                self._observer.store_error(state.stage, exc)
            decision = self._unavailable(state, f"the {state.stage} stage failed: {_describe(exc)}")
        if decision.allowed and time.monotonic() > deadline:
            decision = self._unavailable(state, "check deadline exceeded before the answer")
        # The decision was built by this call and is not shared yet: stamping it avoids a copy per call.
        object.__setattr__(decision, "latency_us", int((time.perf_counter() - started) * 1e6))
        return decision, state

    async def _check_traced(self, inp: CheckInput, *, charge: bool) -> tuple[Decision, CallState]:
        """:meth:`_check` inside the call's span (one per message, batch elements included)."""
        tracer = self._tracer
        assert tracer is not None
        with tracer.call(inp) as span:
            decision, state = await Pipeline._check(self, inp, charge=charge)
            tracer.finish(span, decision)
        return decision, state

    def _span(self, name: str, state: CallState) -> contextlib.AbstractContextManager[Any]:
        return _NO_SPAN if self._tracer is None else self._tracer.stage(name, state.span)

    async def _run(self, state: CallState) -> Decision:
        inp = state.input
        stages = (
            self._full if inp.full_pipeline else self._item_read if inp.item is not None else self._session
        )
        observe, tracer = self._observe_stages, self._tracer
        # One timestamp per stage boundary, handed to the metrics once per check (cheaper than a
        # histogram update per stage).
        marks = [time.perf_counter()] if observe is not None else None
        denial = None
        for name, stage in stages:
            state.stage = name
            if tracer is None:
                denial = await stage(state)
            else:
                with tracer.stage(name) as state.span:
                    denial = await stage(state)
                state.span = None
            if marks is not None:
                marks.append(time.perf_counter())
            if denial is not None:
                break
        if marks is not None:
            observe(stages, marks)
        if denial is not None:
            return denial
        state.stage = "done"
        return self._decide(state, Outcome.ALLOW)

    # -- decisions -------------------------------------------------------------------------------------
    def _decide(
        self, state: CallState, outcome: Outcome, check: Check | None = None, reason: str = "", **data: Any
    ) -> Decision:
        token, tenant, inp = state.token, state.tenant, state.input
        # The policy version is recorded once the policy stage has run (it decided, or it let the call on).
        policy = None
        if tenant is not None and state.stage in ("policy", "budget", "done"):
            policy = tenant.policy_version
        return Decision(
            decision_id=state.decision_id,
            outcome=outcome,
            check=check,
            reason=reason,
            data=data,
            tenant=token.tenant if token is not None else inp.pinned_tenant,
            agent=token.agent if token is not None else None,
            token_id=token.token_id if token is not None else None,
            jti=token.jti if token is not None else None,
            tool=inp.tool,
            rpc_method=inp.rpc_method,
            arguments_sha256=state.arguments_sha256,
            argument_keys=tuple(sorted(inp.arguments)) if inp.tool is not None else (),
            prompt_sha256=state.prompt_sha256,
            policy_version=policy.version if policy is not None else None,
            policy_hash=policy.content_hash if policy is not None else None,
            approval_id=state.approval.approval_id if state.approval is not None else inp.approval_id,
            intent_terms=state.intent.terms if state.intent is not None else (),
            intent_determined=state.intent.determined if state.intent is not None else None,
            memory_writers=state.provenance.writers,
            item=inp.item,
        )

    def _deny(self, state: CallState, check: Check, reason: str, **data: Any) -> Decision:
        return self._decide(state, Outcome.DENY, check, reason, **data)

    def _unavailable(self, state: CallState, reason: str) -> Decision:
        return self._deny(state, Check.UNAVAILABLE, reason, retry_after_ms=RETRY_AFTER_MS)

    # -- stages ----------------------------------------------------------------------------------------
    async def _capability(self, state: CallState) -> Decision | None:
        inp = state.input
        if not inp.token:
            return self._deny(
                state, Check.CAPABILITY, "capability token missing (Authorization: Bearer <token>)"
            )
        authenticated = self._auth.authenticate(inp.token)
        if not isinstance(authenticated, AuthenticatedToken):  # a TokenRejection
            return self._deny(state, Check.CAPABILITY, authenticated.reason)
        rejection = authenticated.check(
            now=state.now,
            tool=inp.tool,
            arguments=inp.arguments if inp.tool is not None else None,
            prompt=inp.intent_prompt,
            expected_tenant=inp.pinned_tenant,
            server=inp.server,  # every request names its server: None is the main endpoint
            item=(inp.item_kind, inp.item) if inp.item_kind is not None and inp.item is not None else None,
        )
        if rejection is not None:
            return self._deny(state, Check.CAPABILITY, rejection.reason)
        state.token = authenticated
        tenant = self._directory.get(authenticated.tenant)
        if tenant is None:
            return self._deny(state, Check.CAPABILITY, f"unknown tenant {echo(authenticated.tenant)}")
        state.tenant = tenant
        if tenant.settings_error is not None and inp.tool is not None:
            return self._unavailable(state, tenant.settings_error)
        if await self._store.is_revoked(authenticated.tenant, authenticated.jti, authenticated.ancestor_ids):
            return self._deny(state, Check.CAPABILITY, "token revoked")
        if inp.tool is not None:
            state.arguments_sha256 = hashlib.sha256(stable_json(dict(inp.arguments))).hexdigest()
        if inp.intent_prompt is not None:
            state.prompt_sha256 = hashlib.sha256(inp.intent_prompt.encode()).hexdigest()
        return None

    async def _intent(self, state: CallState) -> Decision | None:
        tenant, inp = state.tenant, state.input
        assert tenant is not None and inp.tool is not None
        settings = tenant.settings
        if settings.intent_mode == "off":
            return None
        # Catalogs are per (tenant, server): a named server's tools are matched against its own catalog.
        extractor = tenant.extractor if inp.server is None else tenant.extractor_for(inp.server)
        if inp.intent_prompt and extractor is not None:
            state.intent = await extractor.extract(tenant.name, state.token.agent, inp.intent_prompt)
        verdict = judge_intent(
            mode=settings.intent_mode,
            require_prompt=settings.require_prompt,
            prompt=inp.intent_prompt,
            intent=state.intent,
            tool=inp.tool,
            undetermined=settings.intent_undetermined,
        )
        if not verdict.allowed:
            return self._deny(state, Check.INTENT, verdict.reason, intent=verdict.intent)
        return None

    async def _provenance(self, state: CallState) -> Decision | None:
        tenant, inp = state.tenant, state.input
        assert tenant is not None
        if inp.provenance is not None:
            state.provenance = verify_entries(
                self._memory_key(tenant.name), inp.provenance, tenant.writers, state.now.timestamp()
            )
            if state.provenance.error is not None:
                return self._deny(state, Check.PROVENANCE, state.provenance.error)
        elif inp.tool in tenant.settings.provenance_required_tools:
            return self._deny(
                state,
                Check.PROVENANCE,
                f"tool {inp.tool!r} requires memory provenance and none was presented",
            )
        return None

    async def _policy(self, state: CallState) -> Decision | None:
        tenant, inp, token = state.tenant, state.input, state.token
        assert tenant is not None and inp.tool is not None
        if inp.approval_id:
            with self._span("approval", state):
                denial = await self._load_approval(state)
            if denial is not None:
                return denial
        if tenant.policy is None:
            return self._deny(state, Check.POLICY, f"tenant {tenant.name!r} has no active policy")
        result = tenant.policy.evaluate(self._policy_input(state, getattr(tenant.policy, "input_keys", None)))
        if inspect.isawaitable(result):  # a policy server (OPA) answers asynchronously
            result = await result
        if result.outcome == "deny":
            return self._deny(state, Check.POLICY, bounded_reason(result.reason) or "denied by policy")
        approved = state.approval is not None and state.approval_status == "approved"
        if result.outcome == "escalate" and not approved:
            if state.approval is not None:  # still pending: answer with the same approval
                return self._escalation(state, state.approval)
            approval = Approval(
                approval_id=str(uuid.uuid4()),
                tenant=tenant.name,
                agent=token.agent,
                tool=inp.tool,
                arguments_sha256=state.arguments_sha256 or "",
                reason=bounded_reason(result.reason) or "policy requires human approval",
                status="pending",
                quorum=max(1, result.quorum or self._approval_quorum),
                created_at=self._clock(),
                expires_at=self._clock() + self._approval_ttl_s,
                decision_id=state.decision_id,
            )
            with self._span("approval", state):
                await self._store.create_approval(approval)
            state.approval = approval
            return self._escalation(state, approval)
        state.approval_to_consume = approved
        return None

    async def _item_access(self, state: CallState) -> Decision | None:
        """A ``prompts/get``, ``resources/read``, ``resources/(un)subscribe`` or ``completion/complete``:
        allowed exactly when the item would be listed to this caller (the same list-phase input, see
        :meth:`ListFilter.item_verdict`), except that ``escalate`` denies: a read cannot wait for an
        approval, which is bound to a tool call."""
        tenant, inp = state.tenant, state.input
        assert tenant is not None and inp.item_kind is not None and inp.item is not None
        if tenant.settings_error is not None:
            return self._unavailable(state, tenant.settings_error)
        ctx = caller_context(state.token, inp, inp.rpc_method or "")
        verdict = self._listing.item_verdict(ctx, inp.item, inp.item_kind)
        if verdict is True:
            return None
        what = f"{inp.item_kind.replace('_', ' ')} {echo(inp.item)}"
        if verdict is False:
            return self._deny(state, Check.POLICY, f"{what} is not available to this caller")
        if inspect.isawaitable(verdict):  # a policy server (OPA) answers asynchronously
            verdict = await verdict
        if verdict.outcome == "allow":
            return None
        if verdict.outcome == "escalate":
            return self._deny(
                state, Check.POLICY, f"{what} needs a human approval, which a read cannot wait for"
            )
        reason = bounded_reason(verdict.reason) or "denied by policy"
        return self._deny(state, Check.POLICY, f"{what}: {reason}")

    async def _load_approval(self, state: CallState) -> Decision | None:
        inp, token = state.input, state.token
        approval = await self._store.get_approval(token.tenant, inp.approval_id)
        if approval is None:
            return self._deny(state, Check.POLICY, f"unknown approval {echo(inp.approval_id)}")
        if (approval.agent, approval.tool, approval.arguments_sha256) != (
            token.agent,
            inp.tool,
            state.arguments_sha256,
        ):
            return self._deny(
                state, Check.POLICY, f"approval {approval.approval_id} was granted for a different call"
            )
        status = approval.effective_status(self._clock())
        if status in ("rejected", "expired", "consumed"):
            return self._deny(state, Check.POLICY, f"approval {approval.approval_id} is {status}")
        state.approval, state.approval_status = approval, status
        return None

    def _escalation(self, state: CallState, approval: Approval) -> Decision:
        expires = _rfc3339(approval.expires_at)
        return self._decide(
            state,
            Outcome.ESCALATE,
            Check.APPROVAL,
            approval.reason,
            approval_id=approval.approval_id,
            expires_at=expires,
            resume_header="X-Approval-Id",
        )

    def _policy_input(self, state: CallState, keys: Collection[str] | None = None) -> dict[str, Any]:
        """The policy's ``input``; with ``keys`` (what the compiled policy can read) only those of the
        costlier parts are built, since the engine is given nothing else."""
        inp, token = state.input, state.token
        doc: dict[str, Any] = {
            "phase": "call",  # "list" when authz.check.listing asks whether to list a tool
            "tenant": token.tenant,
            "agent": token.agent,
            "tool": inp.tool,
        }
        if keys is None or "token" in keys:
            doc["token"] = {"id": token.token_id, "jti": token.jti, "caveats": list(token.raw_caveats)}
        if keys is None or "request" in keys:
            doc["request"] = {
                "transport": inp.transport,
                "method": inp.http_method,
                "path": inp.path,
                "source_ip": inp.source_ip,
            }
        if keys is None or "arguments" in keys:
            doc["arguments"] = dict(inp.arguments)
        if keys is None or "intent" in keys:
            doc["intent"] = state.intent.to_policy_input() if state.intent is not None else None
        if keys is None or "provenance" in keys:
            doc["provenance"] = state.provenance.to_policy_input()
        if keys is None or "approval" in keys:
            doc["approval"] = (
                {"id": state.approval.approval_id, "status": state.approval_status}
                if state.approval
                else None
            )
        if keys is None or "time" in keys:
            doc["time"] = {"now": _rfc3339(state.now.timestamp()), "unix": int(state.now.timestamp())}
        if inp.server is not None:  # several tool servers behind one endpoint: which one
            doc["server"] = inp.server
        return doc

    async def _budget(self, state: CallState) -> Decision | None:
        token, tenant, inp = state.token, state.tenant, state.input
        assert tenant is not None and inp.tool is not None
        cost = tool_cost(tenant.settings, inp.tool)
        reservations = token_reservations(token.tenant, token.budget_counters, cost)
        if tenant.budget_rules:
            reservations += rule_reservations(
                token.tenant, token.agent, tenant.budget_rules, cost, self._clock()
            )
        approval = state.approval if state.approval_to_consume else None
        claim = ApprovalClaim(token.tenant, approval.approval_id, self._clock()) if approval else None
        if not state.charge:
            state.planned = (reservations, claim)
            return None
        if reservations or claim is not None:
            result = await self._store.reserve(reservations, consume=claim)
            if not result.ok:
                return self._reserve_denial(state, result)
        return None

    def _reserve_denial(self, state: CallState, result: ReserveResult) -> Decision:
        if result.approval_unavailable:
            approval_id = (
                state.approval.approval_id if state.approval is not None else state.input.approval_id
            )
            return self._deny(state, Check.POLICY, f"approval {approval_id} was already used")
        exhausted = result.exhausted
        assert exhausted is not None
        return self._deny(
            state,
            Check.BUDGET,
            f"budget exhausted: {exhausted.scope} limit {_num(exhausted.limit)} reached",
            scope=exhausted.scope,
            limit=_num(exhausted.limit),
            used=_num(result.used),
            resets_at=_rfc3339(exhausted.resets_at) if exhausted.resets_at else None,
        )


def _tenant_of(state: CallState) -> str | None:
    return state.token.tenant if state.token is not None else None


def _rfc3339(epoch: float) -> str:
    return datetime.fromtimestamp(epoch, UTC).isoformat().replace("+00:00", "Z")


def _num(value: float) -> int | float:
    return int(value) if float(value).is_integer() else value


def _describe(exc: BaseException) -> str:
    text = str(exc).strip()
    return f"{type(exc).__name__}: {text}" if text else type(exc).__name__
