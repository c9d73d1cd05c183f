"""Records the stores hold. Plain frozen values: no behaviour, no I/O."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any


@dataclass(frozen=True, slots=True)
class TenantSettings:
    """Per-tenant settings the check path reads (ARCHITECTURE §5, §8, budgets).

    ``catalog`` maps tool name to ``{description, verbs, keywords}`` for the built-in intent extractor.
    ``tool_costs`` gives each tool's cost for ``max_cost`` caveats and cost budgets (default 1).
    ``approval_webhook_url``: where the admin service posts pending approvals (None: no webhook); it is
    written to JSON only when set, so settings stored before it existed read back unchanged.
    """

    intent_mode: str = "off"  # off | advisory | enforce
    require_prompt: bool = False
    provenance_required_tools: tuple[str, ...] = ()
    catalog: dict[str, Any] = field(default_factory=dict)
    tool_costs: dict[str, float] = field(default_factory=dict)
    budget_rules: tuple[dict[str, Any], ...] = ()
    approval_webhook_url: str | None = None
    #: ``{engine: opa, url, path, timeout_ms, push}`` to evaluate through an OPA server
    #: (:mod:`authz.policy._opa`); None: the embedded engine. Written to JSON only when set.
    policy_engine: dict[str, Any] | None = None
    #: Intent (authz/intent): ``deny`` or ``policy`` for prompts the extractor did not understand in
    #: enforce mode; the upstream MCP endpoint whose ``tools/list`` the catalog is derived from, and the
    #: last list fetched from it. Each is written to JSON only when set.
    intent_undetermined: str = "deny"
    tools_url: str | None = None
    upstream_tools: tuple[dict[str, Any], ...] | None = None
    #: Seconds between scheduled refreshes of ``upstream_tools``; None: the service's
    #: ``TESSERA_INTENT_REFRESH_S``. Written to JSON only when set.
    intent_refresh_s: float | None = None
    #: Catalogs per MCP tool server (``/v1/mcp/<name>``): server name → ``{catalog: {tool: entry},
    #: tools_url: str, upstream_tools: [tool, ...]}`` (each member optional), the same three things the
    #: fields above hold for the main endpoint. A request to a named server uses that server's catalog
    #: (none registered: an empty one), never the main endpoint's (authz.check.directory). Written to
    #: JSON only when set.
    server_catalogs: dict[str, dict[str, Any]] = field(default_factory=dict)

    def to_json(self) -> dict[str, Any]:
        data: dict[str, Any] = {
            "intent_mode": self.intent_mode,
            "require_prompt": self.require_prompt,
            "provenance_required_tools": list(self.provenance_required_tools),
            "catalog": self.catalog,
            "tool_costs": self.tool_costs,
            "budget_rules": list(self.budget_rules),
        }
        if self.approval_webhook_url:
            data["approval_webhook_url"] = self.approval_webhook_url
        if self.policy_engine:
            data["policy_engine"] = self.policy_engine
        if self.intent_undetermined != "deny":
            data["intent_undetermined"] = self.intent_undetermined
        if self.tools_url:
            data["tools_url"] = self.tools_url
        if self.upstream_tools is not None:
            data["upstream_tools"] = list(self.upstream_tools)
        if self.intent_refresh_s is not None:
            data["intent_refresh_s"] = self.intent_refresh_s
        if self.server_catalogs:
            data["server_catalogs"] = self.server_catalogs
        return data

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> TenantSettings:
        return cls(
            intent_mode=data.get("intent_mode", "off"),
            require_prompt=bool(data.get("require_prompt", False)),
            provenance_required_tools=tuple(data.get("provenance_required_tools", ())),
            catalog=dict(data.get("catalog", {})),
            tool_costs={k: float(v) for k, v in dict(data.get("tool_costs", {})).items()},
            budget_rules=tuple(data.get("budget_rules", ())),
            approval_webhook_url=data.get("approval_webhook_url") or None,
            policy_engine=dict(data["policy_engine"]) if data.get("policy_engine") else None,
            intent_undetermined=data.get("intent_undetermined", "deny"),
            tools_url=data.get("tools_url") or None,
            upstream_tools=(
                tuple(data["upstream_tools"]) if isinstance(data.get("upstream_tools"), list) else None
            ),
            intent_refresh_s=(
                float(data["intent_refresh_s"]) if data.get("intent_refresh_s") is not None else None
            ),
            server_catalogs={str(k): dict(v) for k, v in dict(data.get("server_catalogs") or {}).items()},
        )


@dataclass(frozen=True, slots=True)
class PolicyVersion:
    """One promoted policy of a tenant. Versions count from 1 per tenant; ``active`` marks the live one."""

    tenant: str
    version: int
    source: str
    content_hash: str
    created_at: float
    created_by: str
    active: bool


@dataclass(frozen=True, slots=True)
class Revocation:
    """``kind`` is ``jti`` (a whole token family) or ``token_id`` (one token and its descendants)."""

    tenant: str
    kind: str
    value: str
    reason: str
    revoked_at: float
    revoked_by: str


@dataclass(frozen=True, slots=True)
class Reservation:
    """One counter a call must charge. All reservations of a call succeed together or none does.

    ``window_start`` is 0 for lifetime counters (token caveats) or the UTC epoch second where a fixed
    window (minute/hour/day) began; ``scope`` names the counter for denials (e.g. ``token:max_calls``).
    """

    key: str
    window_start: int
    amount: float
    limit: float
    scope: str
    resets_at: float | None = None
    #: After this epoch second the counter can never be charged again (its window ended, or every token
    #: sharing it expired), so pruning may delete it; None: never (a token counter without expiry).
    expires_at: float | None = None


@dataclass(frozen=True, slots=True)
class ReserveResult:
    """``ok`` when every reservation was charged; else ``exhausted`` names the first that would overrun,
    or ``approval_unavailable`` says the approval to consume with them was no longer approved."""

    ok: bool
    exhausted: Reservation | None = None
    used: float = 0.0
    approval_unavailable: bool = False


@dataclass(frozen=True, slots=True)
class PruneResult:
    """What one :meth:`~authz.storage.protocols.BudgetStore.prune_expired` call deleted."""

    counters: int = 0
    approvals: int = 0


@dataclass(frozen=True, slots=True)
class ApprovalClaim:
    """An approved approval a call consumes in the same transaction as its budget reservations."""

    tenant: str
    approval_id: str
    now: float


def claims_of(consume: ApprovalClaim | Sequence[ApprovalClaim] | None) -> tuple[ApprovalClaim, ...]:
    """The approvals a reservation consumes: none, one, or one per element of a JSON-RPC batch."""
    if consume is None:
        return ()
    if isinstance(consume, ApprovalClaim):
        return (consume,)
    return tuple(consume)


@dataclass(frozen=True, slots=True)
class Approval:
    """A pending human decision (ARCHITECTURE §7), bound to tenant, agent, tool and argument hash.

    ``status``: pending | approved | rejected | expired | consumed. ``decisions`` lists
    ``{"operator", "verdict", "note", "at"}`` and ``"principal"`` (the person the deciding admin key
    belongs to); approval needs ``quorum`` distinct approving principals (a decision recorded without one
    counts as its operator's), and a principal decides once, whichever of its keys it uses.
    """

    approval_id: str
    tenant: str
    agent: str | None
    tool: str
    arguments_sha256: str
    reason: str
    status: str
    quorum: int
    created_at: float
    expires_at: float
    decision_id: str
    decisions: tuple[dict[str, Any], ...] = ()

    def effective_status(self, now: float) -> str:
        """``expired`` once past ``expires_at`` unless already decided for good."""
        if self.status in ("pending", "approved") and now >= self.expires_at:
            return "expired"
        return self.status


@dataclass(frozen=True, slots=True)
class StoreVersions:
    """Change counters a replica polls (SQLite) or is notified of (PostgreSQL) to refresh its caches."""

    policies: int
    revocations: int
    settings: int


@dataclass(frozen=True, slots=True)
class AdminKey:
    """A credential of the admin API (ARCHITECTURE §11); the key itself is never stored.

    The key a caller presents is ``tsk_<key_id>_<secret>``; ``secret_sha256`` is the SHA-256 hex of that
    whole string. ``role``: viewer | operator | admin. ``tenant``: the one tenant the key may act on,
    None for all tenants. ``revoked_at`` is None while the key is active.
    """

    key_id: str
    name: str
    role: str
    tenant: str | None
    secret_sha256: str
    created_at: float
    created_by: str
    revoked_at: float | None = None
    revoked_by: str | None = None
    #: The person the key belongs to (set at creation; approval quorums count distinct principals).
    principal: str = ""

    @property
    def active(self) -> bool:
        return self.revoked_at is None


@dataclass(frozen=True, slots=True)
class PolicyDraft:
    """An editable, not yet promoted policy source of a tenant (ARCHITECTURE §6), unique by name.

    ``content_hash`` is ``"sha256:" + hex`` of the UTF-8 source, as a promotion of it would record.
    """

    tenant: str
    name: str
    source: str
    content_hash: str
    created_at: float
    updated_at: float
    updated_by: str


@dataclass(frozen=True, slots=True)
class ForwarderCursor:
    """How far a sink has acknowledged a tenant's audit chain (authz.forward).

    ``seq`` is the last acknowledged sequence number (0: nothing yet); every event up to it reached the
    sink or sits in a dead letter. ``last_error`` is the latest failure since the last success (None once
    a batch is acknowledged again); times are Unix seconds.
    """

    tenant: str
    sink: str
    seq: int = 0
    last_success_at: float | None = None
    last_error: str | None = None
    last_error_at: float | None = None


@dataclass(frozen=True, slots=True)
class DeadLetter:
    """A batch of a tenant's events (``from_seq``..``to_seq``, inclusive) a sink kept refusing.

    The events stay in the chain; the record says which to resend. ``replayed_at`` is set once an operator's
    replay was acknowledged by the sink.
    """

    id: int
    tenant: str
    sink: str
    from_seq: int
    to_seq: int
    reason: str
    attempts: int
    created_at: float
    replayed_at: float | None = None
    #: When an operator asked for a replay (ReplayDeadLetter); the sink's forwarder then resends it.
    replay_requested_at: float | None = None


@dataclass(frozen=True, slots=True)
class SinkConfig:
    """A forwarder sink or notification route configured for one tenant through the admin API.

    ``spec`` is its validated JSON (:mod:`authz.forward._tenant`): kind options, the *names* of its
    secrets, driver settings, and for notification routes the match and rate rule. Never a secret's value.
    ``version`` starts at 1 and grows with each update.
    """

    tenant: str
    name: str
    kind: str
    spec: dict[str, Any]
    version: int = 1
    created_at: float = 0.0
    updated_at: float = 0.0
