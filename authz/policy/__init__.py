"""Rego policies, evaluated in-process by ``regopy`` (rego-cpp), or per tenant by an OPA server.

A tenant's policy is compiled once per version (:func:`compile_policy`) into a bundle and evaluated per
call (:meth:`CompiledPolicy.evaluate`, about a hundred microseconds for a small policy);
:class:`PolicySet` holds the active version per tenant and swaps it atomically.

Entrypoint
----------
The policy must be ``package tessera`` (Rego v1 syntax) and define ``decision``, one object::

    {"allow": bool,                  # required
     "escalate": bool,               # optional, default false; true = a human must approve
     "reason": str,                  # optional; passed through to the agent and the audit event
     "requires_step_up": bool,       # optional, default false
     "quorum": int >= 1}             # optional; approvers needed when escalating

Outcome: ``escalate: true`` → escalate (whatever ``allow`` says); otherwise ``allow: true`` → allow,
``allow: false`` → deny. Anything else denies with ``PolicyResult.error = True``: an undefined
decision, several values, a non-object, a missing ``allow``, a wrong type, an unknown key (rejected so
a typo cannot change the meaning), a ``quorum`` below 1, an evaluation error (conflicting rule values,
failing built-in — built-in errors are strict, unknown function, …) or an input the engine cannot take.

Input
-----
What the check pipeline passes as ``input`` (all keys present; ``null`` where noted)::

    tenant        str
    agent         str
    token         {id: str (SHA-256 of the final signature), jti: str, caveats: [str]}
    request       {transport: "mcp" | "http", method: str, path: str, source_ip: str}
    tool          str
    arguments     object (the tool call's arguments, as sent)
    intent        {allowed_tools: [str], forbidden_tools: [str], confidence: number, rationale: str,
                   source: "catalog" | "http", summary: str} | null (no prompt, or intent mode off)
    provenance    {presented: bool, verified: bool, entries: [object]}
    approval      {id: str, status: "pending" | "approved" | "rejected" | "expired"} | null
    time          {now: str (RFC 3339, UTC), unix: int}

The input must be JSON-compatible (mappings with string keys, lists, str, int, float, bool, None).
"""

# A tenant with ``policy_engine: {engine: opa, ...}`` decides through :class:`OpaPolicy` instead (same
# input, same decision contract, every failure a deny); see :mod:`authz.policy._opa`.
from authz.policy._compiled import (
    MAX_POLICY_SOURCE_BYTES,
    POLICY_ENGINES,
    CompiledPolicy,
    PolicySet,
    compile_policy,
    default_policy_source,
    policy_hash,
)
from authz.policy._engine import ENTRYPOINT
from authz.policy._opa import OpaClients, OpaPolicy, OpaSettings
from authz.policy._result import DECISION_KEYS, OUTCOMES, PolicyResult

__all__ = [
    "DECISION_KEYS",
    "ENTRYPOINT",
    "MAX_POLICY_SOURCE_BYTES",
    "OUTCOMES",
    "POLICY_ENGINES",
    "CompiledPolicy",
    "OpaClients",
    "OpaPolicy",
    "OpaSettings",
    "PolicyResult",
    "PolicySet",
    "compile_policy",
    "default_policy_source",
    "policy_hash",
]
