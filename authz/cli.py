"""``tessera``: run the services and the local stack, and manage tokens from a shell.

Exit codes: 0 success, 1 the operation failed (e.g. verification), 2 bad usage or input.
Secrets are never printed, except a freshly minted token, which is the command's output.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import signal
import sys
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from authz import config as config_mod
from authz.errors import TesseraError


def _config(args: argparse.Namespace):
    overrides = {
        "database_url": getattr(args, "database_url", None),
        "tenants_file": getattr(args, "tenants_file", None),
        "check_port": getattr(args, "check_port", None),
        "metrics_port": getattr(args, "metrics_port", None),
        "admin_port": getattr(args, "admin_port", None),
        "var_dir": getattr(args, "var_dir", None),
        "check_workers": getattr(args, "workers", None),
    }
    return config_mod.load(**overrides)


def _keyring(cfg):
    from authz.token import KeyRing

    return KeyRing(cfg.keys.master_key, active_kid=cfg.keys.active_kid, live_kids=cfg.keys.live_kids)


def _read_token(value: str) -> str:
    return sys.stdin.readline().strip() if value == "-" else value.strip()


def _parse_when(text: str) -> datetime:
    """An RFC 3339 time or a duration from now: 30s, 15m, 2h, 7d."""
    units = {"s": 1, "m": 60, "h": 3600, "d": 86400}
    if text and text[-1] in units and text[:-1].isdigit():
        return datetime.now(UTC) + timedelta(seconds=int(text[:-1]) * units[text[-1]])
    try:
        moment = datetime.fromisoformat(text.replace("Z", "+00:00"))
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a time or duration: {text!r}") from None
    if moment.tzinfo is None:
        raise argparse.ArgumentTypeError(f"time needs a timezone (Z or +hh:mm): {text!r}")
    return moment


def _caveat_flags(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--agent", help="bind the token to this agent id")
    parser.add_argument("--tools", help="comma-separated tools the token may call")
    parser.add_argument("--expires", type=_parse_when, help="RFC 3339 time or duration (e.g. 1h)")
    parser.add_argument("--not-before", type=_parse_when, help="RFC 3339 time or duration")
    parser.add_argument("--max-calls", type=int, help="cap on tool calls (shared with descendants)")
    parser.add_argument("--max-cost", help="cap on summed tool cost")
    parser.add_argument(
        "--arg",
        action="append",
        default=[],
        metavar="NAME OP VALUE",
        help="argument constraint, e.g. 'amount <= 1000' (repeatable)",
    )
    parser.add_argument("--prompt", help="bind the token to this exact user prompt (stores its SHA-256)")
    parser.add_argument("--caveat", action="append", default=[], help="a raw caveat (repeatable)")


def _caveats_from(args: argparse.Namespace) -> list[str]:
    from authz.token import format_time, hash_prompt

    caveats: list[str] = []
    if args.agent:
        caveats.append(f"agent = {args.agent}")
    if args.tools:
        caveats.append(f"tools = {args.tools}")
    if args.expires:
        caveats.append(f"expires < {format_time(args.expires)}")
    if args.not_before:
        caveats.append(f"not_before > {format_time(args.not_before)}")
    if args.max_calls is not None:
        caveats.append(f"max_calls = {args.max_calls}")
    if args.max_cost is not None:
        caveats.append(f"max_cost = {args.max_cost}")
    caveats += [a if a.startswith("arg:") else f"arg:{a}" for a in args.arg]
    if args.prompt:
        caveats.append(f"prompt_sha256 = {hash_prompt(args.prompt)}")
    return caveats + list(args.caveat)


def cmd_token_mint(args: argparse.Namespace) -> int:
    from authz.token import hash_prompt, mint

    cfg = _config(args)
    token = mint(
        _keyring(cfg),
        tenant=args.tenant,
        agent=args.agent,
        tools=args.tools.split(",") if args.tools else None,
        expires=args.expires,
        not_before=args.not_before,
        max_calls=args.max_calls,
        max_cost=args.max_cost,
        args=[a if a.startswith("arg:") else f"arg:{a}" for a in args.arg],
        prompt_sha256=hash_prompt(args.prompt) if args.prompt else None,
        extra_caveats=list(args.caveat),
    )
    print(token)
    return 0


def cmd_token_attenuate(args: argparse.Namespace) -> int:
    from authz.token import attenuate

    caveats = _caveats_from(args)
    if not caveats:
        print("tessera: attenuate needs at least one caveat", file=sys.stderr)
        return 2
    print(attenuate(_read_token(args.token), caveats))
    return 0


def cmd_token_inspect(args: argparse.Namespace) -> int:
    from authz.token import inspect

    info = inspect(_read_token(args.token))
    out: dict[str, Any] = {
        "version": info.version,
        "tenant": info.tenant,
        "kid": info.kid,
        "jti": info.jti,
        "token_id": info.token_id,
        "agent": info.agent,
        "tools": sorted(info.tools) if info.tools is not None else None,
        "expires": info.expires.isoformat() if info.expires else None,
        "not_before": info.not_before.isoformat() if info.not_before else None,
        "caveats": list(info.caveats),
        "problems": list(info.problems),
    }
    print(json.dumps(out, indent=2))
    return 0


def cmd_token_revoke(args: argparse.Namespace) -> int:
    from authz.storage import Revocation, open_store
    from authz.token import inspect

    cfg = _config(args)
    if args.token:
        info = inspect(_read_token(args.token))
        tenant = info.tenant
        kind, value = ("jti", info.jti) if args.family else ("token_id", info.token_id)
    else:
        if not args.tenant:
            print("tessera: --tenant is required with --jti or --token-id", file=sys.stderr)
            return 2
        tenant = args.tenant
        kind, value = ("jti", args.jti) if args.jti else ("token_id", args.token_id)

    async def revoke() -> None:
        store = open_store(cfg.store.database_url)
        try:
            await store.revoke(Revocation(tenant, kind, value, args.reason, time.time(), "cli"))
        finally:
            await store.close()

    asyncio.run(revoke())
    print(json.dumps({"tenant": tenant, "kind": kind, "value": value, "revoked": True}))
    return 0


def _redact_secrets(cfg) -> None:
    """Have the log handler redact the master key and the bootstrap admin key, should either ever be
    formatted into a message."""
    from authz.observability import redactor

    scrubber = redactor()
    if scrubber is not None:
        scrubber.add(cfg.keys.master_key)
        if os.environ.get("TESSERA_BOOTSTRAP_ADMIN_KEY"):
            scrubber.add(os.environ["TESSERA_BOOTSTRAP_ADMIN_KEY"])


def cmd_serve(args: argparse.Namespace) -> int:
    import uvloop

    from authz.server.app import serve_check

    cfg = _config(args)
    _redact_secrets(cfg)
    if cfg.check.workers > 1:
        from authz.server.workers import serve_workers

        return serve_workers(cfg, os.environ)
    uvloop.run(serve_check(cfg))
    return 0


def cmd_serve_admin(args: argparse.Namespace) -> int:
    import uvloop

    from authz.server.admin.app import serve_admin

    cfg = _config(args)
    _redact_secrets(cfg)
    uvloop.run(serve_admin(cfg))
    return 0


def cmd_serve_console(args: argparse.Namespace) -> int:
    import uvloop

    from authz.console import ConsoleSettings, serve_console

    env = dict(os.environ)
    if args.console_port:
        env["TESSERA_CONSOLE_PORT"] = str(args.console_port)
    uvloop.run(serve_console(ConsoleSettings.from_env(env)))
    return 0


def cmd_migrate(args: argparse.Namespace) -> int:
    """Apply pending schema migrations and exit: the Helm chart's pre-install/pre-upgrade Job, so a
    release migrates once instead of every replica racing at startup (they still check, under a lock)."""
    cfg = _config(args)
    url = cfg.store.database_url
    if url.startswith(("postgresql://", "postgres://")):
        import psycopg

        from authz.storage.postgres import migrate

        async def run() -> list[str]:
            async with await psycopg.AsyncConnection.connect(url, autocommit=True) as conn:
                return await migrate(conn)

        applied = asyncio.run(run())
    else:
        from authz.storage import open_store

        asyncio.run(open_store(url).close())  # SQLite migrates when the store opens
        applied = []
    print(f"migrations applied: {', '.join(applied) if applied else 'none pending'}")
    return 0


def _bootstrap_key_for_run(cfg) -> str | None:
    """A fresh admin key for ``tessera run`` to hand to the admin service and print once, when the
    store has no admin key yet (first start); None afterwards (the key was shown then)."""
    if os.environ.get("TESSERA_BOOTSTRAP_ADMIN_KEY"):
        return None
    from authz.admin.keys import generate_key
    from authz.storage import open_store

    async def has_keys() -> bool:
        store = open_store(cfg.store.database_url)
        try:
            return bool(await store.list_admin_keys(include_revoked=True))
        finally:
            await store.close()

    return None if asyncio.run(has_keys()) else generate_key()[1]


def _otlp_endpoint() -> tuple[str, int] | None:
    """Envoy's span destination for ``tessera run``: the OTLP/gRPC endpoint of OTEL_EXPORTER_OTLP_*
    when tracing is on over gRPC, else None (Envoy without tracing; its exporter speaks OTLP/gRPC)."""
    from urllib.parse import urlsplit

    from authz.observability import tracing_requested

    raw = os.environ.get("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT") or os.environ.get(
        "OTEL_EXPORTER_OTLP_ENDPOINT"
    )
    protocol = os.environ.get("OTEL_EXPORTER_OTLP_TRACES_PROTOCOL") or os.environ.get(
        "OTEL_EXPORTER_OTLP_PROTOCOL", "grpc"
    )
    if not tracing_requested() or not raw or protocol != "grpc":
        return None
    url = urlsplit(raw if "://" in raw else f"http://{raw}")
    return (url.hostname or "127.0.0.1", url.port or 4317)


def cmd_run(args: argparse.Namespace) -> int:
    """The whole local stack on its defaults: Envoy, check service, demo MCP server, SQLite in ./var."""
    from authz.local.stack import Stack, StackPorts
    from authz.token import mint

    var_dir = Path(args.var_dir or "var").resolve()
    # creates var/master.key on first start (unless TESSERA_MASTER_KEY[_FILE] is set)
    cfg = config_mod.load(var_dir=str(var_dir), database_url=args.database_url)
    bootstrap_key = _bootstrap_key_for_run(cfg)
    env = {"TESSERA_BOOTSTRAP_ADMIN_KEY": bootstrap_key} if bootstrap_key else {}
    if args.database_url:
        env["TESSERA_DATABASE_URL"] = args.database_url
    if args.replicas < 1:
        print("tessera: --replicas must be at least 1", file=sys.stderr)
        return 2
    # SIGTERM stops the stack as Ctrl-C does (children are stopped in order, not orphaned)
    signal.signal(signal.SIGTERM, signal.default_int_handler)
    ports = StackPorts(
        listen=args.port,
        envoy_admin=int(os.environ.get("TESSERA_ENVOY_ADMIN_PORT", "9901")),
        check=cfg.listen.check_port,
        admin=cfg.listen.admin_port,
        metrics=cfg.listen.metrics_port,
        upstream=int(os.environ.get("TESSERA_DEMO_PORT", "9000")),
        admin_metrics=cfg.listen.admin_metrics_port,
    )
    # The operator console runs when an OpenID provider is configured (TESSERA_OIDC_*, TESSERA_CONSOLE_*).
    console = {} if os.environ.get("TESSERA_OIDC_ISSUER") else None
    stack = Stack(
        var_dir, ports, env=env, replicas=args.replicas, otlp_endpoint=_otlp_endpoint(), console_env=console
    )
    print("starting Tessera: demo MCP server, check service, admin service, Envoy ...", flush=True)
    with stack:
        console_url = (
            f"{stack.url}/console/"
            if stack.console
            else "off (set TESSERA_OIDC_ISSUER: docs/configuration.md)"
        )
        token = mint(
            _keyring(cfg), tenant="demo", agent="demo-agent", expires=datetime.now(UTC) + timedelta(days=1)
        )
        print(
            f"""
Tessera is running.
  MCP endpoint      {stack.url}/v1/mcp          (POST, MCP streamable HTTP)
  tool-call         {stack.url}/v1/tool-call    (POST {{"tool": ..., "arguments": {{...}}}})
  Envoy admin       http://127.0.0.1:{stack.ports.envoy_admin}/
  check service     {", ".join(f"127.0.0.1:{c.port}" for c in stack.checks)} (gRPC ext_authz), metrics http://127.0.0.1:{stack.ports.metrics}/metrics
  admin API (REST)  {stack.url}/v1/admin/...  e.g. GET {stack.url}/v1/admin/tenants
  admin API (gRPC)  127.0.0.1:{stack.ports.admin} (reflection on: buf curl / grpcurl), metrics http://127.0.0.1:{stack.ports.admin_metrics}/metrics
  demo upstream     {stack.upstream_url}/mcp   (refuses requests without a Tessera receipt)
  intent catalog    derived from the demo upstream's tools/list: GET {stack.url}/v1/admin/tenants/demo/intent
  console           {console_url}
  state             {var_dir} ({"PostgreSQL" if args.database_url else "SQLite"}, master key, logs)

Demo token (tenant demo, agent demo-agent, valid 24h):
  export TOKEN={token}

Try:
  curl -s {stack.url}/v1/tool-call -H "Authorization: Bearer $TOKEN" \\
       -d '{{"tool": "read_invoice", "arguments": {{"invoice_id": "INV-1001"}}}}'

Ctrl-C stops everything.""",
            flush=True,
        )
        if bootstrap_key:
            print(
                f"""
{"=" * 78}
First start: an admin key (role admin, all tenants) was created. It is shown this once and
stored only as a hash; keep it somewhere safe:

  export ADMIN_KEY={bootstrap_key}
  curl -s {stack.url}/v1/admin/tenants -H "Authorization: Bearer $ADMIN_KEY"
{"=" * 78}""",
                flush=True,
            )
        try:
            services = [*stack.checks, *([stack.admin] if stack.admin is not None else [])]
            while all(p.proc is not None and p.proc.poll() is None for p in services):
                time.sleep(0.5)
            print(f"a Tessera service exited; see the logs in {var_dir}", file=sys.stderr)
            return 1
        except KeyboardInterrupt:
            print("\nstopping", flush=True)
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="tessera", description=__doc__.splitlines()[0])
    parser.add_argument(
        "--log-level",
        type=str.upper,
        choices=("DEBUG", "INFO", "WARNING", "ERROR"),
        help="log level (TESSERA_LOG_LEVEL, default INFO); logs are JSON lines (TESSERA_LOG_FORMAT=text)",
    )
    sub = parser.add_subparsers(dest="command", required=True)

    def common(p: argparse.ArgumentParser) -> None:
        p.add_argument("--database-url", help="sqlite:///path or postgresql://... (TESSERA_DATABASE_URL)")
        p.add_argument("--var-dir", help="state directory (TESSERA_VAR_DIR, default ./var)")

    serve = sub.add_parser("serve", help="run the check service (ext_authz gRPC)")
    common(serve)
    serve.add_argument("--tenants-file", help="tenants YAML applied at startup (TESSERA_TENANTS_FILE)")
    serve.add_argument("--check-port", type=int)
    serve.add_argument("--metrics-port", type=int)
    serve.add_argument(
        "--workers", type=int, help="check processes sharing the check port (TESSERA_CHECK_WORKERS)"
    )
    serve.set_defaults(func=cmd_serve)

    serve_admin = sub.add_parser("serve-admin", help="run the admin service (gRPC, REST through Envoy)")
    common(serve_admin)
    serve_admin.add_argument(
        "--admin-port", type=int, help="admin gRPC port (TESSERA_ADMIN_PORT, default 9192)"
    )
    serve_admin.set_defaults(func=cmd_serve_admin)

    console = sub.add_parser("serve-console", help="run the operator console (HTML over the admin API)")
    console.add_argument(
        "--console-port", type=int, help="console HTTP port (TESSERA_CONSOLE_PORT, default 9470)"
    )
    console.set_defaults(func=cmd_serve_console)

    migrate = sub.add_parser("migrate", help="apply pending database migrations and exit (Helm hook Job)")
    common(migrate)
    migrate.set_defaults(func=cmd_migrate)

    from authz.local.envoy_modes import add_envoy_config_command

    add_envoy_config_command(sub)

    from authz.forward.cli import add_forward_command

    add_forward_command(sub, common)

    run = sub.add_parser("run", help="run the whole local stack (Envoy, check service, demo MCP server)")
    run.add_argument("--var-dir")
    run.add_argument("--port", type=int, default=8080, help="Envoy listener port (default 8080)")
    run.add_argument(
        "--database-url",
        help="postgresql://... to run on PostgreSQL instead of SQLite (TESSERA_DATABASE_URL)",
    )
    run.add_argument(
        "--replicas",
        type=int,
        default=1,
        help="check service replicas, each its own Envoy endpoint (default 1)",
    )
    run.set_defaults(func=cmd_run)

    token = sub.add_parser("token", help="mint, attenuate, inspect and revoke capability tokens")
    tsub = token.add_subparsers(dest="token_command", required=True)
    m = tsub.add_parser("mint", help="mint a token (needs the master key)")
    common(m)
    m.add_argument("--tenant", required=True)
    _caveat_flags(m)
    m.set_defaults(func=cmd_token_mint)
    a = tsub.add_parser("attenuate", help="append caveats to a token (offline, no key needed)")
    a.add_argument("token", help="the token, or - to read it from stdin")
    _caveat_flags(a)
    a.set_defaults(func=cmd_token_attenuate)
    i = tsub.add_parser("inspect", help="show a token's identifier and caveats (offline, unverified)")
    i.add_argument("token", help="the token, or - to read it from stdin")
    i.set_defaults(func=cmd_token_inspect)
    r = tsub.add_parser("revoke", help="revoke one token (and descendants) or a whole family (jti)")
    common(r)
    who = r.add_mutually_exclusive_group(required=True)
    who.add_argument("--token", help="the token to revoke, or - for stdin")
    who.add_argument("--jti")
    who.add_argument("--token-id")
    r.add_argument("--family", action="store_true", help="with --token: revoke its whole jti family")
    r.add_argument("--tenant", help="required with --jti/--token-id")
    r.add_argument("--reason", default="revoked from the CLI")
    r.set_defaults(func=cmd_token_revoke)

    from authz.client.cli import add_call_command

    add_call_command(sub)

    from authz.client.writer_cli import add_memory_writer_commands

    add_memory_writer_commands(sub)

    from authz.intent.cli import add_intent_commands

    def open_store_for(args: argparse.Namespace):
        from authz.storage import open_store

        return open_store(_config(args).store.database_url)

    def outbound_for(args: argparse.Namespace):
        from authz.outbound import OutboundClient, policy_from_config

        return OutboundClient(policy_from_config(_config(args)), purpose="intent tools/list")

    add_intent_commands(sub, open_store_for, outbound_for)

    try:
        from authz.audit.cli import add_audit_commands
    except ImportError:
        pass
    else:

        def open_runtime(args: argparse.Namespace):
            from authz.storage import open_store

            cfg = _config(args)
            return cfg, open_store(cfg.store.database_url), _keyring(cfg)

        add_audit_commands(sub, open_runtime)
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    from authz.observability import configure_logging

    try:
        configure_logging(
            args.log_level or os.environ.get("TESSERA_LOG_LEVEL") or "INFO",
            (os.environ.get("TESSERA_LOG_FORMAT") or "json").lower(),
        )
    except ValueError as exc:
        print(f"tessera: {exc}", file=sys.stderr)
        return 2
    try:
        return int(args.func(args) or 0)
    except TesseraError as exc:
        print(f"tessera: {exc.message}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        return 130


if __name__ == "__main__":
    sys.exit(main())
