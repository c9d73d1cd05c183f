"""Tessera: an authorization gateway for AI agents' tool calls.

Envoy asks Tessera's check service (ext_authz v3) whether a tool call may pass; the pipeline in
:mod:`authz.check` answers allow, deny or escalate, and every decision lands in the audit chain.
"""

__version__ = "0.1.0"
