"""``tessera envoy-config``: the gateway's Envoy bootstrap for a deployment mode, from the one renderer.

The local stack, the Helm chart and anyone wiring Envoy by hand get their config from
:func:`authz.local.envoy_config.render_envoy_config` over the shipped template; this module only picks
the defaults each mode needs. The chart runs this very command in an init container, so the config a
pod runs is the config a test validates with ``envoy --mode validate``.

Modes:

- ``front-proxy``: Envoy is its own Deployment (the gateway). It listens on all addresses, reaches the
  check replicas through a (headless) Service name, so each pod is its own endpoint (Envoy puts every
  Check of a worker on one HTTP/2 connection per endpoint), and forwards allowed calls to the tool
  server's Service.
- ``sidecar``: Envoy runs in the check service's pod (or in the tool server's pod, next to a check
  container): the check service is on loopback, the tool server is ``--upstream``.
- ``local``: what ``tessera run`` starts: every address on loopback.
"""

from __future__ import annotations

import argparse
import os
import sys
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from authz.errors import ConfigError
from authz.local.envoy_config import render_envoy_config, validate_envoy_config
from authz.local.envoy_oauth import ENV as TOKEN_RATE_ENV
from authz.local.envoy_oauth import TokenRateLimit


@dataclass(frozen=True)
class ModeDefaults:
    listen: str
    checks: tuple[str, ...]
    admins: tuple[str, ...]
    upstream: str


MODES: dict[str, ModeDefaults] = {
    "front-proxy": ModeDefaults("0.0.0.0:8080", ("tessera-check:9191",), ("tessera-admin:9192",), ""),
    "sidecar": ModeDefaults("0.0.0.0:8080", ("127.0.0.1:9191",), ("tessera-admin:9192",), "127.0.0.1:9000"),
    "local": ModeDefaults("127.0.0.1:8080", ("127.0.0.1:9191",), ("127.0.0.1:9192",), "127.0.0.1:9000"),
}


def parse_address(text: str) -> tuple[str, int]:
    """``host:port`` (``[v6]:port`` for an IPv6 literal) as ``(host, port)``; ConfigError otherwise."""
    host, sep, port = text.strip().rpartition(":")
    host = host.removeprefix("[").removesuffix("]")
    if not sep or not host or not port.isdigit() or not 0 < int(port) < 65536:
        raise ConfigError(f"not a host:port address: {text!r}", reason="ENVOY_CONFIG_VALUE")
    return host, int(port)


def render_for_mode(
    mode: str,
    *,
    listen: str | None = None,
    envoy_admin_port: int = 9901,
    checks: list[str] | None = None,
    admins: list[str] | None = None,
    upstream: str | None = None,
    check_timeout_ms: int = 500,
    max_request_bytes: int = 1048576,
    otlp: str | None = None,
    mcp: dict | None = None,
) -> str:
    """The Envoy bootstrap for ``mode`` with the mode's defaults for every address not given.

    ``otlp`` (``HOST:PORT`` of an OTLP/gRPC collector) keeps the shipped tracing on; None turns it off.
    ``mcp``: the MCP options of :func:`render_envoy_config` (``cors_origins``, ``mcp_idle_timeout_ms``,
    ``oauth_resource``, ``oauth_authorization_servers``, ``oauth_tenants``), passed through."""
    if mode not in MODES:
        raise ConfigError(f"unknown mode {mode!r}; one of {', '.join(MODES)}", reason="ENVOY_CONFIG_VALUE")
    defaults = MODES[mode]
    upstream = upstream or defaults.upstream
    if not upstream:
        raise ConfigError(
            f"mode {mode} needs --upstream HOST:PORT (the tool server)", reason="ENVOY_CONFIG_VALUE"
        )
    listen_host, listen_port = parse_address(listen or defaults.listen)
    return render_envoy_config(
        listen_port=listen_port,
        listen_address=listen_host,
        admin_port=envoy_admin_port,
        check_endpoints=[parse_address(a) for a in (checks or defaults.checks)],
        admin_endpoints=[parse_address(a) for a in (admins or defaults.admins)],
        upstream=parse_address(upstream),
        check_timeout_ms=check_timeout_ms,
        max_request_bytes=max_request_bytes,
        otlp_endpoint=parse_address(otlp) if otlp else None,
        **(mcp or {}),
    )


def parse_mcp_servers(specs: Sequence[str]) -> dict[str, tuple[str, int]]:
    """``NAME=HOST:PORT`` (repeatable) → ``{name: (host, port)}``: MCP servers at ``/v1/mcp/NAME``."""
    servers: dict[str, tuple[str, int]] = {}
    for spec in specs:
        name, sep, address = spec.partition("=")
        if not sep or not name or name in servers:
            raise ConfigError(
                f"--mcp-server wants a new NAME=HOST:PORT, got {spec!r}", reason="ENVOY_CONFIG_VALUE"
            )
        servers[name] = parse_address(address)
    return servers


def _mcp_options(args: argparse.Namespace) -> dict:
    options: dict = {}
    if getattr(args, "cors_origin", None):
        options["cors_origins"] = args.cors_origin
    if getattr(args, "mcp_idle_timeout_ms", None) is not None:
        options["mcp_idle_timeout_ms"] = args.mcp_idle_timeout_ms
    if getattr(args, "mcp_server", None):
        options["mcp_servers"] = parse_mcp_servers(args.mcp_server)
    if getattr(args, "oauth_resource", None):
        options["oauth_resource"] = args.oauth_resource
        options["oauth_authorization_servers"] = args.oauth_authorization_server or []
    if getattr(args, "console", None):
        options["console_endpoint"] = parse_address(args.console)
    if getattr(args, "oauth_tenant", None):
        options["oauth_tenants"] = parse_oauth_tenants(args.oauth_tenant)
    rate = getattr(args, "oauth_token_rate_limit", None) or os.environ.get(TOKEN_RATE_ENV)
    if rate:
        options["oauth_token_rate_limit"] = TokenRateLimit.parse(rate)
    return options


def parse_oauth_tenants(specs: Sequence[str]) -> dict[str, tuple[str, list[str]]]:
    """``--oauth-tenant TENANT,RESOURCE_URL,ISSUER[,ISSUER...]`` (repeated) → ``oauth_tenants``."""
    tenants: dict[str, tuple[str, list[str]]] = {}
    for spec in specs:
        parts = [p.strip() for p in spec.split(",")]
        if len(parts) < 3 or not all(parts):
            raise ConfigError(
                f"--oauth-tenant {spec!r}: expected TENANT,RESOURCE_URL,ISSUER[,ISSUER...]",
                reason="ENVOY_CONFIG_VALUE",
            )
        if parts[0] in tenants:
            raise ConfigError(f"--oauth-tenant: tenant {parts[0]} given twice", reason="ENVOY_CONFIG_VALUE")
        tenants[parts[0]] = (parts[1], parts[2:])
    return tenants


def cmd_envoy_config(args: argparse.Namespace) -> int:
    text = render_for_mode(
        args.mode,
        listen=args.listen,
        envoy_admin_port=args.envoy_admin_port,
        checks=args.check,
        admins=args.admin,
        upstream=args.upstream,
        check_timeout_ms=args.check_timeout_ms,
        max_request_bytes=args.max_request_bytes,
        otlp=args.otlp,
        mcp=_mcp_options(args),
    )
    if args.output in (None, "-"):
        if args.validate:
            raise ConfigError("--validate needs --output FILE", reason="ENVOY_CONFIG_VALUE")
        sys.stdout.write(text)
        return 0
    out = Path(args.output)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(text, encoding="utf-8")
    if args.validate:
        validate_envoy_config(out)
    print(f"wrote {out} ({args.mode})", file=sys.stderr)
    return 0


def add_envoy_config_command(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "envoy-config",
        help="render the Envoy bootstrap for a deployment mode (front-proxy, sidecar, local)",
        description=__doc__.split("\n\n", 1)[0],
    )
    p.add_argument("--mode", choices=list(MODES), default="front-proxy")
    p.add_argument(
        "--listen", help="agent-facing listener HOST:PORT (default 0.0.0.0:8080; local: 127.0.0.1)"
    )
    p.add_argument("--envoy-admin-port", type=int, default=9901, help="Envoy admin port on 127.0.0.1")
    p.add_argument(
        "--check",
        action="append",
        metavar="HOST:PORT",
        help="a check service endpoint; repeat for several (front-proxy default tessera-check:9191, "
        "a headless Service whose every pod becomes an endpoint; sidecar default 127.0.0.1:9191)",
    )
    p.add_argument(
        "--admin", action="append", metavar="HOST:PORT", help="the admin service (default tessera-admin:9192)"
    )
    p.add_argument("--upstream", metavar="HOST:PORT", help="the tool server (sidecar default 127.0.0.1:9000)")
    p.add_argument("--check-timeout-ms", type=int, default=500, help="ext_authz gRPC timeout (default 500)")
    p.add_argument(
        "--max-request-bytes", type=int, default=1048576, help="largest body checked (default 1 MiB)"
    )
    p.add_argument(
        "--otlp",
        metavar="HOST:PORT",
        help="trace every request and export Envoy's spans over OTLP/gRPC to this collector (default: off)",
    )
    p.add_argument(
        "--console", metavar="HOST:PORT", help="route /console to the operator console (default: no route)"
    )
    p.add_argument(
        "--cors-origin", action="append", metavar="ORIGIN", help="a browser origin allowed by CORS (repeat)"
    )
    p.add_argument(
        "--mcp-idle-timeout-ms", type=int, help="end an MCP stream silent this long (default 300000)"
    )
    p.add_argument(
        "--mcp-server",
        action="append",
        metavar="NAME=HOST:PORT",
        help="another MCP tool server, at /v1/mcp/NAME (repeat)",
    )
    p.add_argument(
        "--oauth-resource", metavar="URL", help="OAuth resource-server mode: this MCP endpoint's URL"
    )
    p.add_argument(
        "--oauth-authorization-server", action="append", metavar="URL", help="an issuer named in the metadata"
    )
    p.add_argument(
        "--oauth-tenant",
        action="append",
        metavar="TENANT,RESOURCE_URL,ISSUER[,ISSUER...]",
        help="OAuth mode for one tenant on the resource URL's host, naming its own issuers (repeat)",
    )
    p.add_argument(
        "--oauth-token-rate-limit",
        metavar="BURST/WINDOWs",
        help=f"POST /v1/oauth/token per client address (default ${TOKEN_RATE_ENV} or 60/60s)",
    )
    p.add_argument("--output", "-o", help="write here instead of stdout")
    p.add_argument("--validate", action="store_true", help="then run envoy --mode validate on --output")
    p.set_defaults(func=cmd_envoy_config)
