"""The store Protocols: the only way Tessera reaches persistent state.

Two implementations (SQLite, embedded default; PostgreSQL, several replicas) pass one conformance suite
(``tests/storage``). Every method is a coroutine. Errors: :class:`authz.errors.NotFound`,
:class:`authz.errors.AlreadyExists`, :class:`authz.errors.FailedPrecondition` for the caller's mistakes,
:class:`authz.errors.StoreUnavailable` when the database cannot be reached (the check path denies with
-32018), :class:`authz.errors.StorageError` for anything else. Driver exceptions never escape.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable, Coroutine, Sequence
from dataclasses import dataclass
from typing import Any, Protocol, TypeVar, runtime_checkable

from authz.storage.memory_writers import RegisteredWriter
from authz.storage.models import (
    AdminKey,
    Approval,
    ApprovalClaim,
    DeadLetter,
    ForwarderCursor,
    PolicyDraft,
    PolicyVersion,
    PruneResult,
    Reservation,
    ReserveResult,
    Revocation,
    SinkConfig,
    StoreVersions,
    TenantSettings,
)

T = TypeVar("T")


class TenantStore(Protocol):
    async def put_tenant(self, tenant: str, settings: TenantSettings) -> None:
        """Create the tenant or replace its settings; bumps the settings version."""

    async def get_tenant(self, tenant: str) -> TenantSettings | None: ...

    async def list_tenants(self) -> dict[str, TenantSettings]: ...


class PolicyStore(Protocol):
    async def promote_policy(self, tenant: str, source: str, content_hash: str, actor: str) -> PolicyVersion:
        """Store ``source`` as the tenant's next version and make it active, atomically."""

    async def activate_policy(self, tenant: str, version: int, actor: str) -> PolicyVersion:
        """Make an earlier version active again (rollback). NotFound for an unknown version."""

    async def active_policies(self) -> dict[str, PolicyVersion]:
        """The active version of every tenant that has one."""

    async def policy_history(self, tenant: str) -> list[PolicyVersion]:
        """Every version of the tenant, newest first."""


class RevocationStore(Protocol):
    async def revoke(self, revocation: Revocation) -> None:
        """Idempotent: revoking the same (tenant, kind, value) twice keeps the first record."""

    async def is_revoked(self, tenant: str, jti: str, token_ids: Sequence[str]) -> bool:
        """True when the jti or any of ``token_ids`` (a token and its ancestors) is revoked."""

    async def list_revocations(self, tenant: str | None = None) -> list[Revocation]: ...


class BudgetStore(Protocol):
    async def reserve(
        self,
        reservations: Sequence[Reservation],
        *,
        consume: ApprovalClaim | Sequence[ApprovalClaim] | None = None,
    ) -> ReserveResult:
        """Charge every reservation or none, atomically, never letting a counter pass its limit.

        A counter named by several reservations (elements of one JSON-RPC batch) is charged for each,
        cumulatively. With ``consume`` (one claim, or several for a batch), each approval moves from
        approved (and unexpired) to consumed in the same transaction; if one cannot (already consumed,
        expired), nothing is charged and the result says ``approval_unavailable``. So a call resumed
        twice is allowed once, and never charged twice.
        """

    async def usage(self, key: str, window_start: int) -> float:
        """What a counter has used (0 when it was never charged)."""

    async def prune_expired(
        self,
        now: float,
        *,
        grace_s: float = 300.0,
        approval_retention_s: float = 86400.0,
        batch: int = 10_000,
    ) -> PruneResult:
        """Delete the state no call can use any more, in short transactions of at most ``batch`` rows.

        Budget counters whose ``expires_at`` (see :class:`Reservation`) is before ``now - grace_s`` (the
        grace covers clocks of other replicas that lag: a counter is never deleted while any replica
        could still charge it, so pruning never resets a live window); counters without ``expires_at``
        stay. Approvals whose ``expires_at`` is before ``now - approval_retention_s`` (whatever their
        status: an expired approval can be neither decided nor consumed; the chain keeps its history).
        """


class ApprovalStore(Protocol):
    async def create_approval(self, approval: Approval) -> None: ...

    async def get_approval(self, tenant: str, approval_id: str) -> Approval | None: ...

    async def list_approvals(
        self, tenant: str | None = None, status: str | None = None
    ) -> list[Approval]: ...

    async def record_approval_decision(
        self,
        tenant: str,
        approval_id: str,
        operator: str,
        verdict: str,
        note: str,
        now: float,
        *,
        principal: str | None = None,
    ) -> Approval:
        """Add one operator's verdict (approve|reject); a reject decides, approvals from ``quorum``
        distinct principals approve (:func:`authz.storage.approvals.add_decision`).

        FailedPrecondition when the approval is no longer pending (decided, consumed or expired) or the
        principal (or operator) already decided it; NotFound for an unknown id.
        """

    async def consume_approval(self, tenant: str, approval_id: str, now: float) -> bool:
        """Atomically move an approved, unexpired approval to consumed. False if it was not approved."""

    async def expire_approvals(self, now: float, limit: int = 100) -> list[Approval]:
        """Move pending approvals whose ``expires_at`` has passed (never decided: timed out) to
        ``expired`` and return them as updated, oldest deadline first. Atomic: of replicas sweeping at
        once, each approval is returned to one. Run inside ``run_audited`` to record each timeout."""


@dataclass(frozen=True, slots=True)
class AuditRecord:
    """One stored audit event: the chain link (``prev_hash``, ``hash``, lowercase hex) and the event.

    ``event`` is the RFC 8785 canonical JSON of the event exactly as hashed (UTF-8 text);
    ``time_ms``, ``decision`` and ``agent`` are index columns copied from it (see
    :func:`authz.audit.event_index`) so filters need not parse JSON.
    """

    tenant: str
    seq: int
    time_ms: int
    decision: str
    agent: str | None
    event: str
    prev_hash: str
    hash: str


@dataclass(frozen=True, slots=True)
class AuditCheckpoint:
    """A signed statement "tenant's chain had ``hash`` at ``seq``" (Ed25519, see :mod:`authz.audit`).

    ``created_at`` is RFC 3339 UTC; ``public_key`` (raw 32 bytes) and ``signature`` are base64url without
    padding. The store keeps it opaque: signing and checking live in :mod:`authz.audit`.
    """

    tenant: str
    seq: int
    hash: str
    created_at: str
    public_key: str
    signature: str


class AuditStore(Protocol):
    """The per-tenant audit hash chains (ARCHITECTURE §9).

    Each tenant has a contiguous sequence starting at 1 and a head row ``(seq, hash)`` that is updated in
    the same transaction as the events, so verification can tell a truncated chain from a short one.
    """

    async def append_events(self, events: Sequence[tuple[str, dict[str, Any]]]) -> list[tuple[str, int, str]]:
        """Append ``(tenant, event)`` pairs, in order, in ONE transaction; return ``(tenant, seq, hash)``
        for each.

        Inside the transaction, per tenant: read the head (``seq`` 0 and
        :data:`authz.audit.GENESIS_HASH` when there is none) while holding a write lock on it, then for
        each of its events ``canonical = authz.audit.canonical_event(event)``,
        ``hash = authz.audit.chain_hash(prev_hash, canonical)``, insert the row with ``seq = head + 1``,
        and finally write the new head. The lock is what keeps several writers (processes, replicas) one
        linear chain: SQLite takes it with ``BEGIN IMMEDIATE``; PostgreSQL must take it per tenant with
        ``INSERT ... ON CONFLICT DO NOTHING`` on the head row followed by ``SELECT ... FOR UPDATE``.
        Either every event is committed or none is (the error is raised); events of one call never
        interleave with another writer's in a tenant's chain.
        """

    async def run_audited(
        self,
        mutation: Callable[[], Coroutine[Any, Any, T]],
        events: Callable[[T], Sequence[tuple[str, dict[str, Any]]]],
    ) -> T:
        """Run ``mutation`` (one call of this store's own methods, e.g. ``lambda: store.put_tenant(...)``)
        and append ``events(result)`` as :meth:`append_events` would, in ONE transaction.

        If the mutation raises, or the events cannot be built or written, nothing of either stands and the
        error is raised: an admin change never stands without its audit event (ARCHITECTURE §11). The
        mutation's own transactions nest inside this one (savepoints); it must not call other stores.
        """

    def iter_events(
        self,
        tenant: str,
        *,
        after_seq: int = 0,
        batch: int = 1000,
        since_ms: int | None = None,
        until_ms: int | None = None,
        agent: str | None = None,
        decision: str | None = None,
    ) -> AsyncIterator[AuditRecord]:
        """The tenant's events with ``seq > after_seq`` in ascending seq order, filtered by
        ``since_ms <= time_ms < until_ms``, ``agent`` and ``decision`` when given.

        An async iterator (an ``async def`` generator in implementations) that fetches ``batch`` rows
        per query (keyset pagination on seq), so no caller holds the whole chain in memory and no read
        transaction stays open between batches.
        """

    async def audit_head(self, tenant: str) -> tuple[int, str] | None:
        """The tenant's stored head ``(seq, hash)``, None when the tenant has no events."""

    async def audit_tenants(self) -> list[str]:
        """Every tenant with a head row (including ``_gateway``), sorted."""

    async def put_checkpoint(self, checkpoint: AuditCheckpoint) -> None:
        """Store a signed checkpoint. One per ``(tenant, seq)``: a second one at the same seq is ignored."""

    async def list_checkpoints(self, tenant: str) -> list[AuditCheckpoint]:
        """The tenant's stored checkpoints, ascending seq."""


class AdminStore(Protocol):
    """What the admin service (ARCHITECTURE §11) needs beyond the check path's stores: its own keys,
    policy drafts, the approval-webhook outbox, and a few read models over the audit chain and budgets.
    """

    # -- admin keys ------------------------------------------------------------------------------------
    async def create_admin_key(self, key: AdminKey) -> None:
        """Store a new key. AlreadyExists when ``key_id`` is taken."""

    async def bootstrap_admin_key(self, key: AdminKey) -> bool:
        """Store ``key`` only if there is no admin key at all (revoked ones count), atomically; True
        when it was stored. Several admin replicas starting at once create exactly one first key."""

    async def get_admin_key(self, key_id: str) -> AdminKey | None: ...

    async def list_admin_keys(
        self, tenant: str | None = None, include_revoked: bool = False
    ) -> list[AdminKey]:
        """Keys ordered by creation; ``tenant`` keeps only the keys scoped to that tenant."""

    async def revoke_admin_key(self, key_id: str, revoked_by: str, now: float) -> AdminKey:
        """Revoke a key; idempotent (a revoked key keeps its first revocation). NotFound for an unknown
        id; FailedPrecondition when it is the last active admin key with the all-tenants scope (checked
        in the same transaction, so two concurrent revocations cannot lock every administrator out)."""

    # -- policy drafts ---------------------------------------------------------------------------------
    async def create_draft(self, draft: PolicyDraft) -> None:
        """AlreadyExists when the tenant has a draft of that name."""

    async def update_draft(
        self,
        tenant: str,
        name: str,
        source: str,
        content_hash: str,
        actor: str,
        now: float,
        expected_hash: str | None = None,
    ) -> PolicyDraft:
        """Replace a draft's source. NotFound for an unknown draft; FailedPrecondition when
        ``expected_hash`` is given and the stored draft's hash differs (compare-and-set)."""

    async def get_draft(self, tenant: str, name: str) -> PolicyDraft | None: ...

    async def list_drafts(self, tenant: str) -> list[PolicyDraft]:
        """The tenant's drafts ordered by name (with their sources)."""

    async def delete_draft(self, tenant: str, name: str) -> bool:
        """True when a draft was deleted."""

    # -- approval webhook outbox -----------------------------------------------------------------------
    async def claim_approval_notifications(
        self, tenants: Sequence[str], now: float, retry_s: float, limit: int = 100
    ) -> list[Approval]:
        """Pending, unexpired, not yet notified approvals of ``tenants`` whose next attempt is due,
        oldest first; each one claimed is leased: its next attempt moves to
        ``now + min(retry_s * 2**attempts, 300)`` and its attempt count grows, in one transaction, so
        another replica polling at the same time does not claim it too and a failed delivery is retried
        with backoff. At-least-once: a claimer that dies before :meth:`mark_approval_notified` leaves it
        to be claimed again when the lease ends."""

    async def mark_approval_notified(self, tenant: str, approval_id: str, now: float) -> None:
        """Record a delivered notification; the approval is never claimed again."""

    # -- read models -----------------------------------------------------------------------------------
    async def decision_counts(self, tenants: Sequence[str], since_ms: int) -> dict[str, dict[str, int]]:
        """Per tenant, how many audit events of each decision (allow, deny, escalate, admin) were
        recorded at or after ``since_ms``; tenants without events map to ``{}``."""

    async def latest_events(
        self, tenant: str, limit: int, decisions: Sequence[str], before_seq: int | None = None
    ) -> list[AuditRecord]:
        """The tenant's last ``limit`` events whose decision is one of ``decisions`` (and whose seq is
        below ``before_seq`` when given, for paging backwards), newest first."""

    async def usage_counters(self, key_prefix: str, window_start: int) -> dict[str, float]:
        """Every budget counter whose key starts with ``key_prefix`` in the window starting at
        ``window_start``, key → used (e.g. every agent's counter of one per-agent rule)."""


class ForwarderStore(Protocol):
    """The audit fan-out's durable state (:mod:`authz.forward`): leases, cursors and dead letters.

    A **lease** per sink makes exactly one forwarder instance active across replicas; a cursor write or a
    dead letter names the holder and is refused (FailedPrecondition) unless that holder's lease is still
    unexpired, so an instance that lost its lease (paused, partitioned) cannot move a cursor its successor
    owns. A **cursor** per (tenant, sink) only moves forward and only after the sink acknowledged. A batch
    the sink keeps refusing becomes a **dead letter** and the cursor passes it in the same transaction:
    nothing is skipped silently, the record says which events to replay.
    """

    async def acquire_forwarder_lease(self, sink: str, holder: str, now: float, ttl_s: float) -> bool:
        """Take or renew the sink's lease until ``now + ttl_s``: True when ``holder`` holds it afterwards
        (it was free, expired, or already ``holder``'s). Atomic: of two holders racing, one wins."""

    async def release_forwarder_lease(self, sink: str, holder: str) -> None:
        """Give the lease up (only if ``holder`` holds it), so a successor need not wait for it to expire."""

    async def forwarder_lease(self, sink: str) -> tuple[str, float] | None:
        """``(holder, expires_at)`` of the sink's lease as stored (it may have expired), None when free."""

    async def forwarder_cursors(self, sink: str | None = None) -> list[ForwarderCursor]:
        """Every stored cursor (of ``sink`` when given), ordered by sink then tenant."""

    async def get_forwarder_cursor(self, tenant: str, sink: str) -> ForwarderCursor:
        """The cursor, or a fresh one at seq 0 when the sink never acknowledged anything of the tenant."""

    async def advance_forwarder_cursor(
        self, tenant: str, sink: str, holder: str, seq: int, now: float
    ) -> None:
        """Record that the sink acknowledged every event up to ``seq``: the cursor becomes
        ``max(cursor, seq)``, ``last_success_at`` = now and ``last_error`` is cleared. FailedPrecondition
        when ``holder`` does not hold an unexpired lease on the sink at ``now``."""

    async def advance_forwarder_cursors(
        self, advances: Sequence[tuple[str, str, str, int, float]], now: float
    ) -> list[bool]:
        """Several :meth:`advance_forwarder_cursor` ``(tenant, sink, holder, seq, lease_ttl_s)`` in ONE
        write transaction (the sinks of one forwarder process acknowledging in the same cycle), each
        applied one also renewing its sink's lease to at least ``now + lease_ttl_s`` (0: not renewed), so
        an active sink needs no lease transaction of its own. Per advance, whether it was applied: False
        when ``holder`` does not hold the sink's lease at ``now`` (that one changes nothing; the others
        still apply)."""

    async def record_forwarder_error(self, tenant: str, sink: str, error: str, now: float) -> None:
        """Remember the latest failure (for health); the cursor does not move."""

    async def dead_letter_batch(
        self,
        tenant: str,
        sink: str,
        holder: str,
        from_seq: int,
        to_seq: int,
        reason: str,
        attempts: int,
        now: float,
    ) -> DeadLetter:
        """In ONE transaction: store the dead letter and advance the cursor to ``to_seq`` (as
        :meth:`advance_forwarder_cursor`, but keeping ``reason`` as ``last_error``). FailedPrecondition
        without the lease, and then nothing is stored."""

    async def list_dead_letters(
        self, tenant: str | None = None, sink: str | None = None, *, include_replayed: bool = False
    ) -> list[DeadLetter]:
        """Dead letters, oldest first; replayed ones only with ``include_replayed``."""

    async def mark_dead_letter_replayed(self, dead_letter_id: int, now: float) -> DeadLetter:
        """Record that a replay was acknowledged. NotFound for an unknown id; idempotent (the first time
        stays)."""

    async def request_dead_letter_replay(self, dead_letter_id: int, now: float) -> DeadLetter:
        """Ask for a dead letter to be resent: sets ``replay_requested_at`` (kept when already set) and
        returns the record; the sink's forwarder resends the requested ones on its next pass. NotFound
        for an unknown id; FailedPrecondition when it was replayed already."""

    # -- per-tenant configuration (admin API) ----------------------------------------------------------
    async def create_sink_config(self, config: SinkConfig) -> None:
        """Store a new sink or notification route. AlreadyExists when the tenant has one of that name."""

    async def update_sink_config(
        self, tenant: str, name: str, spec: dict[str, Any], now: float, expected_version: int | None = None
    ) -> SinkConfig:
        """Replace its spec and bump its version. NotFound for an unknown one; FailedPrecondition when
        ``expected_version`` is given and differs from the stored version (compare-and-set)."""

    async def get_sink_config(self, tenant: str, name: str) -> SinkConfig | None: ...

    async def list_sink_configs(self, tenant: str | None = None) -> list[SinkConfig]:
        """Ordered by tenant then name; every tenant's when ``tenant`` is None."""

    async def delete_sink_config(self, tenant: str, name: str) -> bool:
        """True when one was deleted. Its cursors and dead letters stay (history, replay)."""


class MemoryWriterStore(Protocol):
    """Each tenant's registered memory writers (ARCHITECTURE §8, :mod:`authz.storage.memory_writers`).

    Every write bumps the settings version in its transaction (PostgreSQL also NOTIFYs), so the check
    services reload the writers into memory; the check path never reads this table per call.
    """

    async def create_memory_writer(self, writer: RegisteredWriter) -> None:
        """AlreadyExists when the tenant has a writer with that id (disabled ones included)."""

    async def get_memory_writer(self, tenant: str, writer_id: str) -> RegisteredWriter | None: ...

    async def list_memory_writers(self, tenant: str | None = None) -> list[RegisteredWriter]:
        """One tenant's writers, or every tenant's, ordered by (tenant, writer_id); disabled ones too."""

    async def disable_memory_writer(
        self, tenant: str, writer_id: str, actor: str, now: float
    ) -> RegisteredWriter:
        """Disable for good (NotFound when unknown); disabling twice keeps the first record."""

    async def rotate_memory_writer(
        self, tenant: str, writer_id: str, public_key: bytes, previous_until: float | None, now: float
    ) -> RegisteredWriter:
        """Replace the key. ``previous_until`` set: the replaced key stays valid until then (None: it
        stops at once, e.g. after a leak). NotFound when unknown, FailedPrecondition when disabled."""


class ExchangeStore(Protocol):
    """How often each OAuth subject token was exchanged for a capability token (``POST /v1/oauth/token``
    with an allowance's ``max_exchanges_per_jti``, :mod:`authz.oauth`)."""

    async def count_exchange(
        self, tenant: str, jti: str, *, limit: int, expires_at: float, now: float
    ) -> int | None:
        """Count one more exchange of the subject token ``jti`` of ``tenant`` unless ``limit`` are
        counted already (atomic across replicas): the new count, or None when the limit is reached
        (nothing counted). ``expires_at``: when the subject token expires; its count is kept until
        then (the latest ``expires_at`` of a counted exchange wins). Counts expired at ``now`` are deleted."""


@runtime_checkable
class Store(
    TenantStore,
    PolicyStore,
    RevocationStore,
    BudgetStore,
    ApprovalStore,
    AuditStore,
    AdminStore,
    ForwarderStore,
    MemoryWriterStore,
    ExchangeStore,
    Protocol,
):
    """Everything a Tessera process needs from its database."""

    async def versions(self) -> StoreVersions:
        """Cheap change counters for cache refresh."""

    async def close(self) -> None: ...
