"""Budgets: what a call must charge, as :class:`authz.storage.Reservation` values (ARCHITECTURE §3, §4).

Two sources, charged together and atomically by the budget stage (all or nothing):

- **Token caveats** ``max_calls`` / ``max_cost``: lifetime counters keyed by the chain signature after
  the caveat (hashed), so every descendant of a token shares its parent's counters and each attenuation
  adds its own — a sub-agent can never spend more than its parent allowed.
- **Tenant and agent rules** from tenant settings, per fixed UTC window::

      budget_rules:
        - {scope: tenant, window: hour, max_calls: 10000}
        - {scope: agent, window: hour, max_calls: 100}              # every agent, each its own counter
        - {scope: agent, agent: billing-bot, window: day, max_cost: 500}

  ``scope`` is ``tenant`` (one counter for the whole tenant) or ``agent`` (one counter per agent; with
  ``agent`` set, the rule applies to that agent only). ``window`` is ``minute``, ``hour`` or ``day``,
  aligned to UTC (an hour window resets at the top of the hour). A rule caps calls, cost, or both.

Per-tool costs come from the tenant's ``tool_costs`` (default 1 per call).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from authz.errors import InvalidArgument
from authz.storage import Reservation, TenantSettings

WINDOW_SECONDS = {"minute": 60, "hour": 3600, "day": 86400}
DEFAULT_TOOL_COST = 1.0


@dataclass(frozen=True, slots=True)
class BudgetRule:
    """One validated tenant/agent budget rule."""

    scope: str  # tenant | agent
    window: str  # minute | hour | day
    agent: str | None = None
    max_calls: float | None = None
    max_cost: float | None = None

    @classmethod
    def parse(cls, raw: Mapping[str, Any]) -> BudgetRule:
        if not isinstance(raw, Mapping):
            raise InvalidArgument("a budget rule must be a mapping")
        unknown = set(raw) - {"scope", "window", "agent", "max_calls", "max_cost"}
        if unknown:
            raise InvalidArgument(f"budget rule has unknown keys: {', '.join(sorted(unknown))}")
        scope, window, agent = raw.get("scope"), raw.get("window"), raw.get("agent")
        if scope not in ("tenant", "agent"):
            raise InvalidArgument("budget rule scope must be 'tenant' or 'agent'")
        if window not in WINDOW_SECONDS:
            raise InvalidArgument("budget rule window must be 'minute', 'hour' or 'day'")
        if agent is not None and (scope != "agent" or not isinstance(agent, str) or not agent):
            raise InvalidArgument("budget rule 'agent' needs scope 'agent' and a non-empty name")
        limits = {}
        for name in ("max_calls", "max_cost"):
            value = raw.get(name)
            if value is None:
                continue
            if isinstance(value, bool) or not isinstance(value, int | float) or value < 0:
                raise InvalidArgument(f"budget rule {name} must be a non-negative number")
            limits[name] = float(value)
        if not limits:
            raise InvalidArgument("budget rule needs max_calls or max_cost")
        return cls(scope, window, agent, limits.get("max_calls"), limits.get("max_cost"))

    def applies_to(self, agent: str | None) -> bool:
        return self.scope == "tenant" or self.agent is None or self.agent == agent

    def counter_key(self, tenant: str, agent: str | None, kind: str) -> str:
        who = "*" if self.scope == "tenant" else (agent or "-")
        return f"{tenant}/rule/{self.scope}/{who}/{self.window}/{kind}"

    def scope_name(self, kind: str) -> str:
        subject = "tenant" if self.scope == "tenant" else "agent"
        return f"{subject}:{self.window}:max_{kind}"


def parse_rules(raw_rules: Sequence[Mapping[str, Any]]) -> tuple[BudgetRule, ...]:
    return tuple(BudgetRule.parse(rule) for rule in raw_rules)


def window_bounds(window: str, now: float) -> tuple[int, int]:
    """(start, end) epoch seconds of the fixed UTC window that contains ``now``."""
    size = WINDOW_SECONDS[window]
    start = int(now // size) * size
    return start, start + size


def tool_cost(settings: TenantSettings, tool: str) -> float:
    return float(settings.tool_costs.get(tool, DEFAULT_TOOL_COST))


def token_reservations(tenant: str, counters: Sequence[Any], cost: float) -> list[Reservation]:
    """Reservations for a token's ``max_calls`` / ``max_cost`` caveats (lifetime counters)."""
    return [
        Reservation(
            key=f"{tenant}/token/{counter.kind}/{counter.key}",
            window_start=0,
            amount=1.0 if counter.kind == "calls" else cost,
            limit=float(counter.limit),
            scope=f"token:max_{counter.kind}",
            expires_at=counter.expires.timestamp() if counter.expires is not None else None,
        )
        for counter in counters
    ]


def rule_reservations(
    tenant: str, agent: str | None, rules: Sequence[BudgetRule], cost: float, now: float
) -> list[Reservation]:
    """Reservations for the tenant/agent rules that apply to this call, in their current windows."""
    reservations: dict[str, Reservation] = {}
    for rule in rules:
        if not rule.applies_to(agent):
            continue
        start, end = window_bounds(rule.window, now)
        for kind, limit, amount in (("calls", rule.max_calls, 1.0), ("cost", rule.max_cost, cost)):
            if limit is None:
                continue
            key = rule.counter_key(tenant, agent, kind)
            # Two rules naming the same counter (same scope, agent and window) share it: the
            # tighter limit applies, and a call is charged once.
            if key in reservations and reservations[key].limit <= limit:
                continue
            reservations[key] = Reservation(
                key=key,
                window_start=start,
                amount=amount,
                limit=limit,
                scope=rule.scope_name(kind),
                resets_at=float(end),
                expires_at=float(end),
            )
    return list(reservations.values())


__all__ = [
    "DEFAULT_TOOL_COST",
    "WINDOW_SECONDS",
    "BudgetRule",
    "parse_rules",
    "rule_reservations",
    "token_reservations",
    "tool_cost",
    "window_bounds",
]
