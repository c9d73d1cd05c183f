"""The filtered tools/list rows of `make bench`: what the list processor (ext_proc) costs.

The bench's Envoy answers the list route with a ``direct_response`` holding the demo server's four tools,
so the upstream does not count; the check still runs (token only) and the list processor still filters
the answer per caller (demo policy: three of the four are listed). Tool calls must open no processor
stream: the report compares the processor's stream count with the number of list requests.
"""

from __future__ import annotations

import json
from typing import Any

LIST_REQUEST = {"jsonrpc": "2.0", "id": 7, "method": "tools/list"}

_TOOLS = [
    {"name": name, "description": f"demo tool {name}", "inputSchema": {"type": "object", "properties": {}}}
    for name in ("read_invoice", "list_invoices", "transfer_funds", "delete_invoice")
]
LIST_ANSWER = {"jsonrpc": "2.0", "id": 7, "result": {"tools": _TOOLS}}

STREAMS_STAT = "http.tessera_ingress.ext_proc.tessera_list.streams_started"


def answer_lists_in_envoy(routes: list[dict[str, Any]]) -> None:
    """Make the list route answer the four-tool list itself (its list processor stays on)."""
    route = next(r for r in routes if r.get("name") == "mcp_list")
    route.pop("route")
    route["direct_response"] = {"status": 200, "body": {"inline_string": json.dumps(LIST_ANSWER)}}
    route["response_headers_to_add"] = [
        {
            "header": {"key": "content-type", "value": "application/json"},
            "append_action": "OVERWRITE_IF_EXISTS_OR_ADD",
        }
    ]


def report(by: dict[str, dict], streams: int) -> list[str]:
    lines = []
    for conns in (1, 32):
        listed, called = (
            by[f"Envoy + Tessera, tools/list, {conns} in flight"],
            by[f"Envoy + Tessera, {conns} in flight"],
        )
        lines.append(
            f"filtered tools/list vs tools/call, {conns:>2} in flight: p50 {listed['p50']:.2f} vs "
            f"{called['p50']:.2f} ms, {listed['rps']:.0f} vs {called['rps']:.0f} req/s"
        )
    lists = sum(by[f"Envoy + Tessera, tools/list, {c} in flight"]["ok"] for c in (1, 32))
    lines.append(
        f"list processor streams: {streams} for {lists} answered list requests "
        f"(tool calls open none: {'OK' if streams <= lists + 64 else 'TOOL CALLS PROCESSED'})"
    )
    return lines
