"""Audit events: OCSF API Activity (class 6003) naming plus a ``tessera`` object (ARCHITECTURE §9).

An event is plain JSON (what is hashed is its RFC 8785 form). Argument *values* never enter an event:
a decision carries only the argument keys and the SHA-256 of the canonical arguments.

The ``tessera`` object of a decision event always has the same keys (null when unknown):
``decision`` (allow|deny|escalate), ``check``, ``code``, ``reason``, ``decision_id``, ``tenant``
(null for gateway-level decisions), ``agent``, ``token_id``, ``jti``, ``tool``, ``rpc_method``,
``argument_keys``, ``argument_keys_truncated``, ``arguments_sha256``, ``prompt_sha256``,
``policy_version``, ``policy_hash``, ``approval_id``, ``latency_us``, ``data`` (the scalar extras of the
denial: budget scope/limit/resets_at, approval expiry, retry_after_ms, protocol code); ``memory_writers``
only when memory entries were presented (the writers named by them, ``(hmac)`` for the deprecated tags).
An admin event's ``tessera`` object has ``decision`` = ``admin``, ``tenant``, ``actor``, ``action``,
``target``, ``details``, ``reason``, ``agent`` (null).
"""

from __future__ import annotations

import os
import time
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

from authz import __version__
from authz.audit._sanitize import GATEWAY_TENANT, clean_text, json_safe
from authz.canonical import PlainJSON, plain_json

if TYPE_CHECKING:  # no runtime import: the store imports this package, and must not pull in the pipeline
    from authz.check.models import Decision

OCSF_VERSION = "1.3.0"
CLASS_UID = 6003  # API Activity
CATEGORY_UID = 6  # Application Activity
_ACTIVITIES = {"create": 1, "read": 2, "update": 3, "delete": 4}
_ACTIVITY_NAMES = {0: "Unknown", 1: "Create", 2: "Read", 3: "Update", 4: "Delete", 99: "Other"}
_ALLOW, _ESCALATE = "allow", "escalate"  # authz.check.models.Outcome values
_SEVERITY_NAMES = {1: "Informational", 2: "Low", 3: "Medium", 4: "High"}

#: At most this many argument keys are kept (each cut at 256 characters); the arguments hash covers all.
MAX_ARGUMENT_KEYS = 256


def chain_tenant(decision: Decision) -> str:
    """The chain a decision belongs to: its tenant, or :data:`GATEWAY_TENANT` when none is known."""
    return decision.tenant or GATEWAY_TENANT


def _severity(decision: Decision) -> int:
    if decision.outcome == _ALLOW:
        return 1
    if decision.outcome == _ESCALATE:
        return 2
    if decision.check is not None and decision.check.value == "unavailable":
        return 4  # fail-closed: a dependency is down
    return 3


def _metadata(uid: str, tenant: str) -> dict[str, Any]:
    return {
        "version": OCSF_VERSION,
        "uid": uid,
        "tenant_uid": tenant,
        "product": {"name": "Tessera", "vendor_name": "Tessera", "version": __version__},
    }


def _base(activity_id: int, severity_id: int, time_ms: int, success: bool) -> dict[str, Any]:
    return {
        "class_uid": CLASS_UID,
        "class_name": "API Activity",
        "category_uid": CATEGORY_UID,
        "category_name": "Application Activity",
        "activity_id": activity_id,
        "activity_name": _ACTIVITY_NAMES[activity_id],
        "type_uid": CLASS_UID * 100 + activity_id,
        "type_name": f"API Activity: {_ACTIVITY_NAMES[activity_id]}",
        "time": int(time_ms),
        "severity_id": severity_id,
        "severity": _SEVERITY_NAMES[severity_id],
        "status_id": 1 if success else 2,
        "status": "Success" if success else "Failure",
    }


def event_from_decision(decision: Decision, *, time_ms: int) -> dict[str, Any]:
    """The audit event of one decision, ``time_ms`` being when it was recorded (epoch milliseconds)."""
    d = decision
    tenant = chain_tenant(d)
    operation = clean_text(d.tool or d.rpc_method or "unknown", 256)
    agent = clean_text(d.agent, 256) if d.agent is not None else None
    code = d.code
    reason = clean_text(d.reason)
    keys = [clean_text(k, 256) for k in d.argument_keys[:MAX_ARGUMENT_KEYS]]
    event = _base(99, _severity(d), time_ms, d.outcome == _ALLOW)
    event["activity_name"] = "Authorize"  # OCSF "Other" (99) with a descriptive name
    event["message"] = f"{d.outcome.value} {operation}" + (f": {reason}" if reason else "")
    if code is not None:
        event["status_code"] = str(code)
    if reason:
        event["status_detail"] = reason
    event["api"] = {"operation": operation, "request": {"uid": d.decision_id}}
    if code is not None:
        event["api"]["response"] = {
            "code": code,
            "error": d.check.value if d.check else "",
            "message": reason,
        }
    user: dict[str, Any] = {"name": agent or "unknown", "type": "Agent"}
    if agent is not None:
        user["uid"] = agent
    event["actor"] = {"user": user}
    event["metadata"] = _metadata(d.decision_id, tenant)
    event["tessera"] = {
        "decision": d.outcome.value,
        "check": d.check.value if d.check is not None else None,
        "code": code,
        "reason": reason,
        "decision_id": d.decision_id,
        "tenant": clean_text(d.tenant, 256) if d.tenant is not None else None,
        "agent": agent,
        "token_id": json_safe(d.token_id, max_len=256),
        "jti": json_safe(d.jti, max_len=256),
        "tool": clean_text(d.tool, 256) if d.tool is not None else None,
        "rpc_method": clean_text(d.rpc_method, 256) if d.rpc_method is not None else None,
        "argument_keys": keys,
        "argument_keys_truncated": len(d.argument_keys) > MAX_ARGUMENT_KEYS,
        "arguments_sha256": json_safe(d.arguments_sha256, max_len=128),
        "prompt_sha256": json_safe(d.prompt_sha256, max_len=128),
        "policy_version": json_safe(d.policy_version),
        "policy_hash": json_safe(d.policy_hash, max_len=256),
        "approval_id": json_safe(d.approval_id, max_len=256),
        "latency_us": json_safe(d.latency_us),
        "data": _scalar_data(d.data),
    }
    if d.server is not None:  # only with several tool servers behind one endpoint
        event["tessera"]["server"] = clean_text(d.server, 256)
        event["api"]["service"] = {"name": clean_text(d.server, 256)}
    if d.item is not None:  # a prompt read or resource read: which one (a name or URI, never content)
        event["tessera"]["item"] = clean_text(d.item, 1024)
    if d.trace_id is not None:  # only with tracing on: from an event to its trace
        event["tessera"]["trace_id"] = json_safe(d.trace_id, max_len=64)
    if d.intent_determined is not None:  # which words the intent extractor matched, never the prompt
        event["tessera"]["intent"] = {
            "determined": d.intent_determined,
            "terms": [clean_text(term, 64) for term in d.intent_terms[:32]],
        }
    if d.memory_writers:  # whose memory entries shaped the call (ARCHITECTURE §8)
        event["tessera"]["memory_writers"] = [clean_text(w, 128) for w in d.memory_writers[:32]]
    return event


def vouched_event_from_decision(decision: Decision, *, time_ms: int) -> dict[str, Any]:
    """:func:`event_from_decision`, as a :class:`~authz.canonical.PlainJSON` when every value is of a
    type the fast canonical encoding takes as it is (the recorder's events: encoded once, at once).

    Everything the event builds itself is a ``str`` from :func:`clean_text`, an ``int``, a bool, null or
    a list of those, under literal ASCII keys; the values passed through :func:`json_safe` (which keeps
    floats) and the denial data (keys from the caller) are checked here.
    """
    event = event_from_decision(decision, time_ms=time_ms)
    tessera = event["tessera"]
    if (
        type(decision.decision_id) is str
        and type(tessera["latency_us"]) is not float
        and type(tessera["policy_version"]) is not float
        and type(tessera.get("trace_id")) is not float
        and type(tessera.get("intent", {}).get("determined", True)) is bool
        and plain_json(tessera["data"])
    ):
        return PlainJSON(event)
    return event


def _scalar_data(data: Mapping[str, Any]) -> dict[str, Any]:
    """The denial extras, scalars only (nested values are dropped: they have no stable audit meaning)."""
    out: dict[str, Any] = {}
    for key, value in list(data.items())[:32]:
        if value is None or isinstance(value, (str, int, float, bool)):
            out[clean_text(str(key), 64)] = json_safe(value, max_len=512)
    return out


def admin_event(
    tenant: str,
    actor: str,
    action: str,
    target: str,
    details: Mapping[str, Any] | None = None,
    *,
    time_ms: int,
    uid: str | None = None,
) -> dict[str, Any]:
    """The audit event of an admin mutation (same chain as the tenant's decisions).

    ``action`` is a verb-first name such as ``policy.promote`` or ``token.revoke``; its OCSF activity is
    Create/Read/Update/Delete when the verb part says so (``create``, ``delete``, ...), else Other.
    ``details`` must not hold secrets (it is stored verbatim, after :func:`json_safe`).
    """
    actor_name = clean_text(actor, 256)
    action = clean_text(action, 128)
    target = clean_text(target, 512)
    verb = action.rsplit(".", 1)[-1].lower()
    activity_id = _ACTIVITIES.get(verb, 99)
    uid = uid or f"{time.time_ns() // 1_000_000:012x}{os.urandom(8).hex()}"  # like decision ids
    reason = f"{action} {target} by {actor_name}"
    event = _base(activity_id, 1, time_ms, True)
    event["message"] = reason
    event["api"] = {"operation": action, "request": {"uid": uid}}
    event["actor"] = {"user": {"name": actor_name, "uid": actor_name, "type": "Admin"}}
    event["resources"] = [{"uid": target}]
    event["metadata"] = _metadata(uid, tenant)
    event["tessera"] = {
        "decision": "admin",
        "tenant": tenant,
        "agent": None,
        "actor": actor_name,
        "action": action,
        "target": target,
        "details": json_safe(dict(details or {})),
        "reason": reason,
    }
    return event


def outage_event(tenant: str, count: int, first_ms: int, last_ms: int, *, time_ms: int) -> dict[str, Any]:
    """The gap of an audit outage: ``count`` decisions of the tenant were answered (all denied or
    unavailable) while the store was down and could not be kept for writing later. Written once the
    store is back, so the chain says that something happened and when."""
    uid = f"{time.time_ns() // 1_000_000:012x}{os.urandom(8).hex()}"
    event = _base(99, 4, time_ms, False)
    event["message"] = f"{count} decisions answered without an audit event while the store was unavailable"
    event["api"] = {"operation": "audit.outage", "request": {"uid": uid}}
    event["actor"] = {"user": {"name": "tessera", "type": "System"}}
    event["metadata"] = _metadata(uid, tenant)
    event["tessera"] = {
        "decision": "outage",
        "tenant": tenant,
        "agent": None,
        "reason": event["message"],
        "data": {"count": count, "first_time": first_ms, "last_time": last_ms},
    }
    return event


def list_event(
    tenant: str,
    *,
    agent: str | None,
    token_id: str,
    jti: str,
    method: str,
    server: str | None,
    listed: Mapping[str, int],
    withheld: Mapping[str, int],
    outcome: str,
    reason: str,
    time_ms: int,
    failed: Mapping[str, int] | None = None,
) -> dict[str, Any]:
    """The audit event of one list answer the list processor handled (``tools/list``, ``prompts/list``,
    ``resources/list``, ``resources/templates/list``, or list results on a GET stream).

    ``outcome`` is ``filtered`` (the caller got the list, ``withheld`` counts the hidden items per kind)
    or ``withheld`` (the whole answer was replaced by a JSON-RPC error: ``reason`` says why). ``failed``
    (only when some were) counts, per kind, the withheld items whose policy evaluation failed. Only
    counts per kind are kept, never item names or anything the caller sent."""
    uid = f"{time.time_ns() // 1_000_000:012x}{os.urandom(8).hex()}"
    agent = clean_text(agent, 256) if agent is not None else None
    method = clean_text(method, 64)
    reason = clean_text(reason)
    shown = {clean_text(k, 32): int(v) for k, v in listed.items()}
    hidden = {clean_text(k, 32): int(v) for k, v in withheld.items()}
    success = outcome == "filtered"
    event = _base(2, 1 if success else 4, time_ms, success)  # Read
    event["message"] = f"{method} {outcome}: listed {sum(shown.values())}, withheld {sum(hidden.values())}"
    event["api"] = {"operation": method, "request": {"uid": uid}}
    if server is not None:
        event["api"]["service"] = {"name": clean_text(server, 256)}
    user: dict[str, Any] = {"name": agent or "unknown", "type": "Agent"}
    if agent is not None:
        user["uid"] = agent
    event["actor"] = {"user": user}
    event["metadata"] = _metadata(uid, tenant)
    event["tessera"] = {
        "decision": "list",
        "outcome": outcome,
        "tenant": clean_text(tenant, 256),
        "agent": agent,
        "token_id": json_safe(token_id, max_len=256),
        "jti": json_safe(jti, max_len=256),
        "rpc_method": method,
        "server": clean_text(server, 256) if server is not None else None,
        "listed": shown,
        "withheld": hidden,
        "reason": reason,
    }
    if failed:
        event["tessera"]["failed"] = {clean_text(k, 32): int(v) for k, v in failed.items()}
    return event
