"""Tessera-guarded tools as LangChain tools
(needs ``langchain-core``: ``pip install 'tessera-authz[langchain]'``).

::

    from authz.client import Gateway
    from authz.client.langchain import load_tools

    gateway = Gateway("http://127.0.0.1:8080", token)
    tools = load_tools(gateway, ["read_invoice", "list_invoices"], intent_prompt=lambda: current_user_prompt)
    agent = create_agent(model, tools)          # any LangChain / LangGraph agent

Every invocation is a :meth:`Gateway.tool_call`: the model's arguments go through the gateway's checks,
the tool's text is the model-facing content and the whole :class:`ToolResult` the message's artifact.
A result with ``isError`` raises LangChain's ``ToolException``. Denials raise the SDK's typed
exceptions (``PolicyError``...), or, with ``handle_errors=True``, come back to the model as an error
message it can react to (a :class:`GatewayError` always propagates: the model cannot fix a network).
"""

from __future__ import annotations

import json
from collections.abc import Callable, Iterable, Mapping
from typing import Any

try:
    from langchain_core.tools import StructuredTool, ToolException
except ImportError as exc:  # pragma: no cover - exercised only without the extra
    raise ImportError(
        "authz.client.langchain needs langchain-core: pip install 'tessera-authz[langchain]'"
    ) from exc

from ._errors import GatewayError, TesseraError
from ._gateway import AsyncGateway, Gateway
from ._protocol import ToolResult

Prompt = str | Callable[[], str | None] | None


def tessera_tool(
    gateway: Gateway | AsyncGateway,
    tool: str | Mapping[str, Any],
    *,
    description: str | None = None,
    args_schema: Mapping[str, Any] | None = None,
    intent_prompt: Prompt = None,
    wait_for_approval: float | None = None,
    handle_errors: bool = False,
) -> StructuredTool:
    """One LangChain tool that calls ``tool`` through ``gateway``.

    ``tool`` is a tool name or an MCP tool definition (a ``tools/list`` entry: ``name``, ``description``,
    ``inputSchema``). Given only a name, the definition is fetched from a blocking :class:`Gateway`; with
    an :class:`AsyncGateway` use :func:`aload_tools` or pass ``description`` and ``args_schema``.
    ``intent_prompt`` is the user's request, or a callable returning it at call time (an agent's prompt
    changes every turn). A blocking gateway makes a tool with ``invoke`` (``ainvoke`` runs it in a
    thread); an async one makes a tool with ``ainvoke`` only.
    """
    if isinstance(tool, Mapping):
        definition: Mapping[str, Any] = tool
    elif description is None or args_schema is None:
        if not isinstance(gateway, Gateway):
            raise ValueError(
                "with an AsyncGateway pass description and args_schema, or use: await aload_tools(gateway)"
            )
        definition = _find(gateway.list_tools(), tool)
    else:
        definition = {"name": tool}
    name = definition["name"]
    schema = dict(args_schema or definition.get("inputSchema") or {"type": "object", "properties": {}})
    text = description or definition.get("description") or f"Call the {name} tool through Tessera."

    def prompt() -> str | None:
        return intent_prompt() if callable(intent_prompt) else intent_prompt

    def denied(exc: TesseraError) -> Exception:
        if handle_errors and not isinstance(exc, GatewayError):
            error = ToolException(f"Tessera refused the call: {exc}")
            error.__cause__ = exc
            return error
        return exc

    common = {
        "name": name,
        "description": text,
        "args_schema": schema,
        "response_format": "content_and_artifact",
        "handle_tool_error": handle_errors,
    }
    if isinstance(gateway, AsyncGateway):

        async def arun(**arguments: Any) -> tuple[str, ToolResult]:
            try:
                result = await gateway.tool_call(
                    name, arguments, intent_prompt=prompt(), wait_for_approval=wait_for_approval
                )
            except TesseraError as exc:
                raise denied(exc) from exc
            return _output(result)

        return StructuredTool.from_function(coroutine=arun, **common)
    if not isinstance(gateway, Gateway):
        raise TypeError("gateway must be a Gateway or an AsyncGateway")

    def run(**arguments: Any) -> tuple[str, ToolResult]:
        try:
            result = gateway.tool_call(
                name, arguments, intent_prompt=prompt(), wait_for_approval=wait_for_approval
            )
        except TesseraError as exc:
            raise denied(exc) from exc
        return _output(result)

    return StructuredTool.from_function(func=run, **common)


def load_tools(gateway: Gateway, names: Iterable[str] | None = None, **options: Any) -> list[StructuredTool]:
    """LangChain tools for ``names`` (default: every tool the server lists), one ``tools/list`` call."""
    return _build(gateway, gateway.list_tools(), names, options)


async def aload_tools(
    gateway: AsyncGateway, names: Iterable[str] | None = None, **options: Any
) -> list[StructuredTool]:
    """:func:`load_tools` for an :class:`AsyncGateway`."""
    return _build(gateway, await gateway.list_tools(), names, options)


def _build(
    gateway: Gateway | AsyncGateway,
    listed: list[dict[str, Any]],
    names: Iterable[str] | None,
    options: dict[str, Any],
) -> list[StructuredTool]:
    wanted = [d["name"] for d in listed if isinstance(d.get("name"), str)] if names is None else list(names)
    return [tessera_tool(gateway, _find(listed, name), **options) for name in wanted]


def _find(listed: list[dict[str, Any]], name: str) -> Mapping[str, Any]:
    for definition in listed:
        if definition.get("name") == name:
            return definition
    raise ValueError(f"the server behind the gateway offers no tool named {name!r}")


def _output(result: ToolResult) -> tuple[str, ToolResult]:
    text = result.text
    if not text and result.structured_content is not None:
        text = json.dumps(result.structured_content, ensure_ascii=False)
    if result.is_error:
        raise ToolException(text or "the tool reported an error")
    return text, result


__all__ = ["aload_tools", "load_tools", "tessera_tool"]
