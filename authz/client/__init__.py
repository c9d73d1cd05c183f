"""Tessera's agent SDK: call tools through the gateway, with one typed exception per kind of denial.

::

    from authz.client import Gateway

    with Gateway("http://127.0.0.1:8080", token) as gw:
        print(gw.tool_call("read_invoice", {"invoice_id": "INV-1001"}, intent_prompt="show INV-1001").text)

:class:`Gateway` blocks, :class:`AsyncGateway` is its async twin (same arguments, results and errors).
Tool calls travel as MCP ``tools/call`` over ``POST <gateway>/v1/mcp`` (ARCHITECTURE §2); results come
back as :class:`ToolResult`. Tokens are narrowed offline for sub-agents with :func:`attenuate` and read
with :func:`inspect`; an agent with an access token from its organisation's authorization server
trades it for a capability token with :func:`exchange_token`. Memory writers sign the entries agents
present as provenance with :class:`MemoryWriter`. Agents on the official ``mcp`` SDK get the same
headers and errors from :func:`tessera_transport`, :func:`tessera_meta` and :func:`mcp_errors`.

Exceptions (the JSON-RPC code the gateway sent, and the check that decided)::

    TesseraError                 base: code, message, data, check, reason, decision_id
    ├── CapabilityError   -32010 token missing, malformed, forged, expired, revoked, or call outside a caveat
    ├── IntentError       -32011 the tool does not match what the user's prompt asked for
    ├── PolicyError       -32012 the tenant's policy denied; an approval was rejected or expired
    ├── BudgetError       -32013 max_calls / max_cost / budget exhausted (scope, limit, resets_at)
    ├── ProvenanceError   -32014 a memory entry is unsigned or forged, or required and missing
    ├── UnavailableError  -32018 a gateway dependency failed, fail closed (retry_after seconds)
    ├── ApprovalRequired  -32019 a human must approve (approval_id, expires_at)
    ├── ProtocolError            any other JSON-RPC error, or a reply that is not valid JSON-RPC
    └── GatewayError             cannot connect, timeout, non-2xx HTTP status, or a non-JSON body

Importing this package needs only httpx and pymacaroons: no server module, gRPC, Rego or database
driver is imported (a test keeps it so).
"""

from ._errors import (
    ApprovalRequired,
    BudgetError,
    CapabilityError,
    GatewayError,
    IntentError,
    PolicyError,
    ProtocolError,
    ProvenanceError,
    TesseraError,
    UnavailableError,
    error_from_rpc,
)
from ._exchange import aexchange_token, exchange_token
from ._gateway import AsyncGateway, Gateway
from ._mcp import error_from_mcp, mcp_errors, mcp_headers, mcp_http_client, tessera_meta, tessera_transport
from ._memory import MemoryWriter
from ._protocol import ToolResult
from ._tokens import TokenInfo, attenuate, inspect

__all__ = [
    "ApprovalRequired",
    "AsyncGateway",
    "BudgetError",
    "CapabilityError",
    "Gateway",
    "GatewayError",
    "IntentError",
    "MemoryWriter",
    "PolicyError",
    "ProtocolError",
    "ProvenanceError",
    "TesseraError",
    "TokenInfo",
    "ToolResult",
    "UnavailableError",
    "aexchange_token",
    "attenuate",
    "error_from_mcp",
    "error_from_rpc",
    "exchange_token",
    "inspect",
    "mcp_errors",
    "mcp_headers",
    "mcp_http_client",
    "tessera_meta",
    "tessera_transport",
]
