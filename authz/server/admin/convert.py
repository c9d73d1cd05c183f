"""Conversions between the store's records and the admin API's messages (transport only)."""

from __future__ import annotations

import json
import math
from collections.abc import Mapping
from datetime import UTC, datetime
from typing import Any

from google.protobuf import json_format, struct_pb2, timestamp_pb2

from authz.api.admin.v1 import (
    admin_key_service_pb2 as keys_pb,
)
from authz.api.admin.v1 import (
    approval_service_pb2 as approvals_pb,
)
from authz.api.admin.v1 import (
    audit_service_pb2 as audit_pb,
)
from authz.api.admin.v1 import (
    policy_service_pb2 as policy_pb,
)
from authz.api.admin.v1 import (
    tenant_service_pb2 as tenants_pb,
)
from authz.api.admin.v1 import (
    token_service_pb2 as tokens_pb,
)
from authz.errors import InvalidArgument
from authz.storage import (
    AdminKey,
    Approval,
    PolicyDraft,
    PolicyVersion,
    Revocation,
    TenantSettings,
    approving_principals,
)
from authz.storage.protocols import AuditCheckpoint, AuditRecord


def timestamp(epoch: float | None) -> timestamp_pb2.Timestamp | None:
    if epoch is None:
        return None
    ts = timestamp_pb2.Timestamp()
    seconds = math.floor(epoch)
    ts.seconds, ts.nanos = seconds, min(round((epoch - seconds) * 1e9), 999_999_999)
    return ts


def timestamp_ms(ms: int) -> timestamp_pb2.Timestamp:
    ts = timestamp_pb2.Timestamp()
    ts.FromMilliseconds(int(ms))
    return ts


def timestamp_of(when: datetime | None) -> timestamp_pb2.Timestamp | None:
    return timestamp(when.timestamp()) if when is not None else None


def epoch(ts: timestamp_pb2.Timestamp, present: bool) -> float | None:
    return ts.seconds + ts.nanos / 1e9 if present else None


def datetime_of(message: Any, field: str) -> datetime | None:
    if not message.HasField(field):
        return None
    ts: timestamp_pb2.Timestamp = getattr(message, field)
    return datetime.fromtimestamp(ts.seconds + ts.nanos / 1e9, UTC)


def struct_of(data: Mapping[str, Any]) -> struct_pb2.Struct:
    message = struct_pb2.Struct()
    message.update(_jsonable(data))
    return message


def _jsonable(data: Any) -> Any:
    # Struct holds JSON only: go through JSON so tuples, ints and nested values come out uniform.
    return json.loads(json.dumps(data, default=str))


def dict_of(message: struct_pb2.Struct) -> dict[str, Any]:
    """A Struct as plain JSON values; integral numbers come back as ints (Struct keeps doubles)."""
    return _ints(json_format.MessageToDict(message))


def _ints(value: Any) -> Any:
    if isinstance(value, float) and value.is_integer() and abs(value) < 2**53:
        return int(value)
    if isinstance(value, list):
        return [_ints(v) for v in value]
    if isinstance(value, dict):
        return {k: _ints(v) for k, v in value.items()}
    return value


# -- tokens -----------------------------------------------------------------------------------------------
REVOCATION_KINDS = {"jti": tokens_pb.REVOCATION_KIND_JTI, "token_id": tokens_pb.REVOCATION_KIND_TOKEN_ID}


def revocation(r: Revocation) -> tokens_pb.Revocation:
    return tokens_pb.Revocation(
        tenant=r.tenant,
        kind=REVOCATION_KINDS.get(r.kind, tokens_pb.REVOCATION_KIND_UNSPECIFIED),
        value=r.value,
        reason=r.reason,
        revoked_at=timestamp(r.revoked_at),
        revoked_by=r.revoked_by,
    )


# -- policies ---------------------------------------------------------------------------------------------
OUTCOMES = {
    "allow": policy_pb.POLICY_OUTCOME_ALLOW,
    "deny": policy_pb.POLICY_OUTCOME_DENY,
    "escalate": policy_pb.POLICY_OUTCOME_ESCALATE,
}


def draft(d: PolicyDraft, *, with_source: bool = True) -> policy_pb.PolicyDraft:
    return policy_pb.PolicyDraft(
        tenant=d.tenant,
        name=d.name,
        source=d.source if with_source else "",
        content_hash=d.content_hash,
        created_at=timestamp(d.created_at),
        updated_at=timestamp(d.updated_at),
        updated_by=d.updated_by,
    )


def policy_version(p: PolicyVersion, *, with_source: bool = True) -> policy_pb.PolicyVersion:
    return policy_pb.PolicyVersion(
        tenant=p.tenant,
        version=p.version,
        source=p.source if with_source else "",
        content_hash=p.content_hash,
        created_at=timestamp(p.created_at),
        created_by=p.created_by,
        active=p.active,
    )


# -- approvals --------------------------------------------------------------------------------------------
APPROVAL_STATUS = {
    "pending": approvals_pb.APPROVAL_STATUS_PENDING,
    "approved": approvals_pb.APPROVAL_STATUS_APPROVED,
    "rejected": approvals_pb.APPROVAL_STATUS_REJECTED,
    "expired": approvals_pb.APPROVAL_STATUS_EXPIRED,
    "consumed": approvals_pb.APPROVAL_STATUS_CONSUMED,
}
STATUS_NAMES = {value: name for name, value in APPROVAL_STATUS.items()}
VERDICTS = {approvals_pb.VERDICT_APPROVE: "approve", approvals_pb.VERDICT_REJECT: "reject"}
_VERDICT_VALUES = {name: value for value, name in VERDICTS.items()}


def approval(a: Approval, now: float) -> approvals_pb.Approval:
    return approvals_pb.Approval(
        approval_id=a.approval_id,
        tenant=a.tenant,
        agent=a.agent or "",
        tool=a.tool,
        arguments_sha256=a.arguments_sha256,
        reason=a.reason,
        status=APPROVAL_STATUS.get(a.effective_status(now), approvals_pb.APPROVAL_STATUS_UNSPECIFIED),
        quorum=a.quorum,
        approvals=len(approving_principals(a)),
        created_at=timestamp(a.created_at),
        expires_at=timestamp(a.expires_at),
        decision_id=a.decision_id,
        decisions=[
            approvals_pb.ApprovalDecision(
                operator=str(d.get("operator", "")),
                verdict=_VERDICT_VALUES.get(d.get("verdict", ""), approvals_pb.VERDICT_UNSPECIFIED),
                note=str(d.get("note", "")),
                decided_at=timestamp(float(d["at"])) if "at" in d else None,
                principal=str(d.get("principal", "")),
            )
            for d in a.decisions
        ],
    )


# -- tenants ----------------------------------------------------------------------------------------------
INTENT_MODES = {
    "off": tenants_pb.INTENT_MODE_OFF,
    "advisory": tenants_pb.INTENT_MODE_ADVISORY,
    "enforce": tenants_pb.INTENT_MODE_ENFORCE,
}
_INTENT_NAMES = {value: name for name, value in INTENT_MODES.items()}
BUDGET_SCOPES = {"tenant": tenants_pb.BUDGET_SCOPE_TENANT, "agent": tenants_pb.BUDGET_SCOPE_AGENT}
_SCOPE_NAMES = {value: name for name, value in BUDGET_SCOPES.items()}
BUDGET_WINDOWS = {
    "minute": tenants_pb.BUDGET_WINDOW_MINUTE,
    "hour": tenants_pb.BUDGET_WINDOW_HOUR,
    "day": tenants_pb.BUDGET_WINDOW_DAY,
}
_WINDOW_NAMES = {value: name for name, value in BUDGET_WINDOWS.items()}
SETTINGS_FIELDS = tuple(f.name for f in tenants_pb.TenantSettings.DESCRIPTOR.fields)


def budget_rule(raw: Mapping[str, Any]) -> tenants_pb.BudgetRule:
    rule = tenants_pb.BudgetRule(
        scope=BUDGET_SCOPES.get(raw.get("scope", ""), tenants_pb.BUDGET_SCOPE_UNSPECIFIED),
        window=BUDGET_WINDOWS.get(raw.get("window", ""), tenants_pb.BUDGET_WINDOW_UNSPECIFIED),
        agent=raw.get("agent") or "",
    )
    for cap in ("max_calls", "max_cost"):
        if raw.get(cap) is not None:
            setattr(rule, cap, float(raw[cap]))
    return rule


def settings(s: TenantSettings) -> tenants_pb.TenantSettings:
    catalog = tenants_pb.ToolCatalog(negations=list(s.catalog.get("negations") or ()))
    for name, spec in (s.catalog.get("tools") or {}).items():
        spec = spec or {}
        catalog.tools[name].CopyFrom(
            tenants_pb.CatalogTool(
                description=str(spec.get("description") or ""),
                verbs=[str(v) for v in spec.get("verbs") or ()],
                keywords=[str(v) for v in spec.get("keywords") or ()],
                phrases=[str(v) for v in spec.get("phrases") or ()],
            )
        )
    return tenants_pb.TenantSettings(
        intent_mode=INTENT_MODES.get(s.intent_mode, tenants_pb.INTENT_MODE_UNSPECIFIED),
        require_prompt=s.require_prompt,
        provenance_required_tools=list(s.provenance_required_tools),
        catalog=catalog,
        tool_costs=dict(s.tool_costs),
        budget_rules=[budget_rule(r) for r in s.budget_rules],
        approval_webhook_url=s.approval_webhook_url or "",
        policy_engine=policy_engine(s.policy_engine),
    )


def policy_engine(raw: Mapping[str, Any] | None) -> tenants_pb.PolicyEngine | None:
    if not raw:
        return None
    return tenants_pb.PolicyEngine(
        engine=str(raw.get("engine", "")),
        url=str(raw.get("url", "")),
        path=str(raw.get("path", "")),
        timeout_ms=int(raw.get("timeout_ms", 0)),
        push=bool(raw.get("push", True)),
    )


def policy_engine_fields(message: tenants_pb.TenantSettings) -> dict[str, Any] | None:
    """The ``policy_engine`` mapping of a settings message (None when unset); validated later."""
    if not message.HasField("policy_engine"):
        return None
    engine = message.policy_engine
    raw: dict[str, Any] = {"engine": engine.engine, "url": engine.url}
    if engine.path:
        raw["path"] = engine.path
    if engine.timeout_ms:
        raw["timeout_ms"] = engine.timeout_ms
    if engine.HasField("push"):
        raw["push"] = engine.push
    return raw


def settings_fields(message: tenants_pb.TenantSettings) -> dict[str, Any]:
    """Every settings field of ``message`` as the store's TenantSettings values (not yet validated)."""
    catalog: dict[str, Any] = {}
    if message.catalog.tools or message.catalog.negations:
        catalog["tools"] = {
            name: {
                "description": tool.description,
                "verbs": list(tool.verbs),
                "keywords": list(tool.keywords),
                "phrases": list(tool.phrases),
            }
            for name, tool in sorted(message.catalog.tools.items())
        }
        if message.catalog.negations:
            catalog["negations"] = list(message.catalog.negations)
    rules = []
    for index, rule in enumerate(message.budget_rules):
        if rule.scope not in _SCOPE_NAMES or rule.window not in _WINDOW_NAMES:
            raise InvalidArgument(f"budget_rules[{index}] needs a scope and a window")
        raw: dict[str, Any] = {"scope": _SCOPE_NAMES[rule.scope], "window": _WINDOW_NAMES[rule.window]}
        if rule.agent:
            raw["agent"] = rule.agent
        for cap in ("max_calls", "max_cost"):
            if rule.HasField(cap):
                value = getattr(rule, cap)
                raw[cap] = int(value) if float(value).is_integer() else value
        rules.append(raw)
    return {
        "intent_mode": _INTENT_NAMES.get(message.intent_mode, "off"),
        "require_prompt": message.require_prompt,
        "provenance_required_tools": tuple(message.provenance_required_tools),
        "catalog": catalog,
        "tool_costs": {k: float(v) for k, v in sorted(message.tool_costs.items())},
        "budget_rules": tuple(rules),
        "approval_webhook_url": message.approval_webhook_url or None,
        "policy_engine": policy_engine_fields(message),
    }


# -- audit ------------------------------------------------------------------------------------------------
AUDIT_DECISIONS = {
    "allow": audit_pb.AUDIT_DECISION_ALLOW,
    "deny": audit_pb.AUDIT_DECISION_DENY,
    "escalate": audit_pb.AUDIT_DECISION_ESCALATE,
    "admin": audit_pb.AUDIT_DECISION_ADMIN,
}
AUDIT_DECISION_NAMES = {value: name for name, value in AUDIT_DECISIONS.items()}


def audit_event(r: AuditRecord) -> audit_pb.AuditEvent:
    return audit_pb.AuditEvent(
        tenant=r.tenant,
        seq=r.seq,
        time=timestamp_ms(r.time_ms),
        decision=AUDIT_DECISIONS.get(r.decision, audit_pb.AUDIT_DECISION_UNSPECIFIED),
        agent=r.agent or "",
        prev_hash=r.prev_hash,
        hash=r.hash,
        event=struct_of(json.loads(r.event)),
    )


def checkpoint(c: AuditCheckpoint, exported: str) -> audit_pb.AuditCheckpoint:
    return audit_pb.AuditCheckpoint(
        tenant=c.tenant,
        seq=c.seq,
        hash=c.hash,
        created_at=c.created_at,
        public_key=c.public_key,
        signature=c.signature,
        exported=exported,
    )


# -- admin keys -------------------------------------------------------------------------------------------
ROLES = {"viewer": keys_pb.ROLE_VIEWER, "operator": keys_pb.ROLE_OPERATOR, "admin": keys_pb.ROLE_ADMIN}
ROLE_NAMES = {value: name for name, value in ROLES.items()}


def admin_key(k: AdminKey) -> keys_pb.AdminKey:
    return keys_pb.AdminKey(
        key_id=k.key_id,
        name=k.name,
        role=ROLES.get(k.role, keys_pb.ROLE_UNSPECIFIED),
        tenant=k.tenant or "",
        created_at=timestamp(k.created_at),
        created_by=k.created_by,
        revoked=k.revoked_at is not None,
        revoked_at=timestamp(k.revoked_at),
        revoked_by=k.revoked_by or "",
        principal=k.principal or k.name,
    )
