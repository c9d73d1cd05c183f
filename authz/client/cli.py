"""``tessera call TOOL --arg key=value --prompt "..."``: try a tool call through the gateway from a shell.

Wired into ``tessera`` by :func:`add_call_command`; also runs standalone as
``python -m authz.client.cli call ...``. Uses only the agent SDK.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from typing import Any

from ._errors import ApprovalRequired, GatewayError, TesseraError, UnavailableError
from ._gateway import Gateway
from ._protocol import TOKEN_ENV, ToolResult

URL_ENV = "TESSERA_URL"
DEFAULT_URL = "http://127.0.0.1:8080"

EXIT_OK = 0
EXIT_TOOL_ERROR = 1
EXIT_USAGE = 2
EXIT_DENIED = 3
EXIT_APPROVAL = 4
EXIT_UNAVAILABLE = 5

_EPILOG = """\
values: --arg amount=5000 sends the number 5000; any value that parses as JSON is sent as that JSON
(true, null, [1,2], "quoted"), anything else as a string. --args '{"amount": 5000}' sets them all at once.

exit codes: 0 allowed and the tool succeeded; 1 the tool ran and reported an error; 2 bad usage;
3 denied (capability, intent, policy, budget, provenance, protocol); 4 approval required (the approval
id is printed: rerun with --approval-id ID, or wait with --wait SECONDS); 5 gateway unreachable or
unavailable.
"""


def _key_value(text: str) -> tuple[str, Any]:
    key, sep, raw = text.partition("=")
    if not sep or not key.strip():
        raise argparse.ArgumentTypeError(f"expected key=value, got {text!r}")
    try:
        value = json.loads(raw)
    except ValueError:
        value = raw
    return key.strip(), value


def add_call_command(subparsers: Any) -> argparse.ArgumentParser:
    """Add ``call`` to a ``tessera`` argparse subparsers object; the handler is ``args.func``."""
    parser = subparsers.add_parser(
        "call",
        help="call a tool through the gateway, as an agent would",
        description="Call a tool through Tessera (MCP tools/call on <url>/v1/mcp) and print its result.",
        epilog=_EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("tool", help="the tool to call, e.g. read_invoice")
    parser.add_argument(
        "--arg",
        "-a",
        dest="arg_pairs",
        action="append",
        type=_key_value,
        default=[],
        metavar="KEY=VALUE",
        help="one argument (repeatable)",
    )
    parser.add_argument("--args", dest="args_json", metavar="JSON", help="all arguments as a JSON object")
    parser.add_argument("--prompt", "-p", help="the user's request that led to this call (X-Intent-Prompt)")
    parser.add_argument("--url", help=f"the gateway (${URL_ENV}, default {DEFAULT_URL})")
    parser.add_argument("--token", help=f"capability token, or - to read it from stdin (${TOKEN_ENV})")
    parser.add_argument("--approval-id", help="resume a call a human approved")
    parser.add_argument("--wait", type=float, metavar="SECONDS", help="wait this long for an approval")
    parser.add_argument("--timeout", type=float, default=10.0, help="per-request timeout in seconds")
    parser.add_argument("--json", action="store_true", help="print the whole result (or error) as JSON")
    parser.set_defaults(func=run_call)
    return parser


def _arguments(args: argparse.Namespace) -> dict[str, Any]:
    arguments: dict[str, Any] = {}
    if args.args_json:
        try:
            loaded = json.loads(args.args_json)
        except ValueError as exc:
            raise ValueError(f"--args is not JSON: {exc}") from None
        if not isinstance(loaded, dict):
            raise ValueError("--args must be a JSON object")
        arguments.update(loaded)
    arguments.update(dict(args.arg_pairs))
    return arguments


def _usage(message: str) -> int:
    print(f"tessera call: {message}", file=sys.stderr)
    return EXIT_USAGE


def _print_result(result: ToolResult, as_json: bool) -> None:
    if as_json:
        doc = {
            "decision_id": result.decision_id,
            "is_error": result.is_error,
            "content": result.content,
            "structured_content": result.structured_content,
        }
        print(json.dumps(doc, indent=2, ensure_ascii=False))
        return
    for block in result.content:
        if block.get("type") == "text" and isinstance(block.get("text"), str):
            print(block["text"])
        else:
            print(json.dumps(block, ensure_ascii=False))
    if result.decision_id:
        print(f"decision {result.decision_id}", file=sys.stderr)


def _exit_code(exc: TesseraError) -> int:
    if isinstance(exc, ApprovalRequired):
        return EXIT_APPROVAL
    if isinstance(exc, GatewayError | UnavailableError):
        return EXIT_UNAVAILABLE
    return EXIT_DENIED


def run_call(args: argparse.Namespace) -> int:
    token = args.token if args.token is not None else os.environ.get(TOKEN_ENV)
    if token == "-":
        token = sys.stdin.readline().strip()
    if not token:
        return _usage(f"no token: pass --token or set {TOKEN_ENV}")
    url = args.url or os.environ.get(URL_ENV) or DEFAULT_URL
    try:
        arguments = _arguments(args)
    except ValueError as exc:
        return _usage(str(exc))
    try:
        with Gateway(url, token, timeout=args.timeout) as gateway:
            result = gateway.tool_call(
                args.tool,
                arguments,
                intent_prompt=args.prompt,
                approval_id=args.approval_id,
                wait_for_approval=args.wait,
            )
    except TesseraError as exc:
        if args.json:
            print(
                json.dumps({"error": {"code": exc.code, "message": exc.message, "data": exc.data}}, indent=2)
            )
        kind = type(exc).__name__
        print(f"tessera call: {kind}: {exc}", file=sys.stderr)
        if isinstance(exc, ApprovalRequired) and exc.approval_id:
            print(
                f"tessera call: once approved, rerun with --approval-id {exc.approval_id}"
                + (f" (expires {exc.expires_at.isoformat()})" if exc.expires_at else ""),
                file=sys.stderr,
            )
        return _exit_code(exc)
    except ValueError as exc:  # bad URL or prompt, caught before anything is sent
        return _usage(str(exc))
    _print_result(result, args.json)
    return EXIT_TOOL_ERROR if result.is_error else EXIT_OK


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="tessera", description="Tessera agent SDK command line")
    add_call_command(parser.add_subparsers(dest="command", required=True))
    args = parser.parse_args(argv)
    return int(args.func(args))


if __name__ == "__main__":
    sys.exit(main())
