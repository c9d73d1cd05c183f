"""``tessera intent eval|catalog|refresh``.

* ``eval --tools TOOLS.json --cases CASES.jsonl [--extractor URL]``: measured accuracy of the built-in
  extractor (catalog derived from ``TOOLS.json``, an MCP ``tools/list`` result) or of an HTTP extractor
  (reached under the outbound rules: ``TESSERA_OUTBOUND_ALLOW`` for a loopback or private address),
  printed as one JSON object (:func:`authz.intent._eval.evaluate`). ``--max-false-deny-rate`` and
  ``--min-catch-rate`` make the exit code 1 when a target is missed.
* ``catalog --tools TOOLS.json [--overrides CATALOG.yaml --tenant T]``: the catalog Tessera derives, as
  the hand-written catalog format (a starting point for overrides).
* ``refresh [--tenant T ...]``: fetch the upstream ``tools/list`` of tenants with ``intent.tools_url`` now
  and store it (the operator's "refresh on request"; check services pick it up within a poll interval).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import sys
from collections.abc import Callable
from typing import Any

from authz.errors import ConfigError

EXIT_OK, EXIT_FAILED = 0, 1


def add_intent_commands(
    sub: Any,
    open_store: Callable[[argparse.Namespace], Any],
    outbound: Callable[[argparse.Namespace], Any] | None = None,
) -> None:
    """Register ``tessera intent ...``; ``open_store(args)`` returns the configured store and
    ``outbound(args)`` the configured :class:`authz.outbound.OutboundClient` (``refresh`` needs both)."""
    intent = sub.add_parser("intent", help="evaluate the intent extractor, show derived catalogs, refresh")
    isub = intent.add_subparsers(dest="intent_command", required=True)

    ev = isub.add_parser("eval", help="measure an extractor on labelled cases (one JSON object out)")
    ev.add_argument("--tools", required=True, help='MCP tools/list result as JSON ({"tools": [...]})')
    ev.add_argument("--cases", required=True, help='JSON Lines: {"prompt", "tool", "expect": allow|deny}')
    ev.add_argument("--extractor", help="evaluate the HTTP extractor at this URL instead of the built-in one")
    ev.add_argument("--timeout", type=float, default=5.0, help="HTTP extractor timeout in seconds")
    ev.add_argument("--max-false-deny-rate", type=float, help="exit 1 when the false-deny rate is higher")
    ev.add_argument("--min-catch-rate", type=float, help="exit 1 when the catch rate is lower")
    ev.add_argument("--summary", action="store_true", help="leave the failing cases out of the output")
    ev.set_defaults(func=cmd_eval)

    cat = isub.add_parser("catalog", help="print the catalog derived from a tools/list result")
    cat.add_argument("--tools", required=True)
    cat.add_argument("--overrides", help="hand-written catalog file (YAML/JSON) applied over the derived one")
    cat.add_argument("--tenant", help="with --overrides: the tenant whose entries apply")
    cat.set_defaults(func=cmd_catalog)

    ref = isub.add_parser("refresh", help="fetch tenants' upstream tools/list now and store it")
    ref.add_argument("--database-url", help="sqlite:///path or postgresql://... (TESSERA_DATABASE_URL)")
    ref.add_argument("--var-dir", help="state directory (TESSERA_VAR_DIR, default ./var)")
    ref.add_argument("--tenant", action="append", help="only this tenant (repeatable)")
    ref.add_argument("--timeout", type=float, default=10.0)
    ref.set_defaults(func=lambda args: cmd_refresh(args, open_store, outbound))


def cmd_eval(args: argparse.Namespace) -> int:
    from authz.intent._eval import catalog_extractor, evaluate, load_cases, load_tools_list
    from authz.intent._http import HttpExtractor

    tools = load_tools_list(args.tools)
    cases = load_cases(args.cases)

    async def run() -> dict[str, Any]:
        if args.extractor:
            # the same outbound rules as the check service: a classifier on loopback or a private
            # address needs TESSERA_OUTBOUND_ALLOW
            from authz.config import outbound_config
            from authz.outbound import OutboundPolicy

            rules = outbound_config()
            policy = OutboundPolicy.build(rules.allow, rules.refused_ports)
            async with HttpExtractor(
                args.extractor, timeout=args.timeout, cache_size=0, policy=policy
            ) as http:
                return await evaluate(http, cases)
        return await evaluate(catalog_extractor(tools), cases)

    report = asyncio.run(run())
    report["extractor"] = args.extractor or "catalog"
    if args.summary:
        report.pop("failures")
    print(json.dumps(report, ensure_ascii=False, indent=1))
    missed = (
        args.max_false_deny_rate is not None and report["false_deny_rate"] > args.max_false_deny_rate
    ) or (args.min_catch_rate is not None and report["catch_rate"] < args.min_catch_rate)
    return EXIT_FAILED if missed else EXIT_OK


def cmd_catalog(args: argparse.Namespace) -> int:
    from authz.intent._catalog import load_catalogs
    from authz.intent._derive import catalog_from_tools_list
    from authz.intent._eval import load_tools_list

    overrides = None
    if args.overrides:
        catalogs = load_catalogs(args.overrides)
        if args.tenant not in catalogs:
            raise ConfigError(f"{args.overrides}: no entries for tenant {args.tenant!r} (use --tenant)")
        overrides = catalogs[args.tenant]
    catalog = catalog_from_tools_list(load_tools_list(args.tools), overrides=overrides)
    print(json.dumps({"version": 1, "tenants": {args.tenant or "tenant": catalog.to_mapping()}}, indent=1))
    return EXIT_OK


def cmd_refresh(
    args: argparse.Namespace,
    open_store: Callable[[argparse.Namespace], Any],
    outbound: Callable[[argparse.Namespace], Any] | None,
) -> int:
    from authz.intent._refresh import fetch_tools_list, refresh_catalogs

    if outbound is None:
        raise ConfigError("tessera intent refresh needs the outbound configuration")
    client = outbound(args)

    async def fetch(url: str) -> dict[str, Any]:
        return await fetch_tools_list(url, outbound=client, timeout_s=args.timeout)

    async def run() -> dict[str, str]:
        store = open_store(args)
        try:
            return await refresh_catalogs(store, tenants=args.tenant, fetch=fetch)
        finally:
            await store.close()
            await client.aclose()

    outcome = asyncio.run(run())
    print(json.dumps(outcome, indent=1))
    return (
        EXIT_FAILED
        if any(v.startswith(("failed", "no tools_url", "unknown")) for v in outcome.values())
        else EXIT_OK
    )


def main(argv: list[str] | None = None) -> int:  # pragma: no cover - `python -m authz.intent.cli`
    parser = argparse.ArgumentParser(prog="tessera")
    add_intent_commands(parser.add_subparsers(dest="command", required=True), lambda args: None)
    args = parser.parse_args(argv)
    return int(args.func(args))


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
