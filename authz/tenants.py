"""The tenants file: per-tenant settings, tool catalog and policy, applied to the store at startup.

Format (YAML)::

    tenants:
      demo:
        intent: {mode: enforce, require_prompt: false}   # off | advisory | enforce
        # optional: undetermined: deny | policy (a prompt nothing of which was understood), and
        # tools_url: the upstream MCP endpoint whose tools/list the catalog is derived from (may name
        # environment variables: "${TESSERA_DEMO_UPSTREAM_URL:-http://127.0.0.1:9000}/mcp"), and
        # refresh_s: how often to fetch it again (default TESSERA_INTENT_REFRESH_S; at least 10)
        catalog: catalog.yaml        # path (relative to this file) or an inline {tools: {...}} mapping
        policy: policy.rego          # path (relative to this file); promoted when its hash changed
        # or, to decide through an OPA server (authz.policy._opa):
        # policy: {engine: opa, url: "http://opa:8181", path: tessera/decision, source: policy.rego}
        tool_costs: {transfer_funds: 5}
        provenance_required_tools: []
        budget_rules:                # fixed UTC windows; see authz/budget
          - {scope: agent, window: hour, max_calls: 100}

Applying is idempotent: settings are written only when they differ, and a policy is promoted only when
its content hash differs from the tenant's active one, so restarts do not grow the policy history.
"""

from __future__ import annotations

import dataclasses
import os
import re
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import yaml

from authz.budget import parse_rules
from authz.errors import ConfigError, InvalidArgument
from authz.intent import UNDETERMINED_CHOICES
from authz.policy import OpaSettings, policy_hash
from authz.storage import Store, TenantSettings
from authz.token import valid_name

_INTENT_MODES = ("off", "advisory", "enforce")


def valid_tenant_name(name: object) -> bool:
    """Tenant names key derivation and audit chains; ``_``-prefixed names are Tessera's own (``_gateway``)."""
    return valid_name(name) and not str(name).startswith("_")


def _load_yaml(path: Path) -> Any:
    try:
        return yaml.safe_load(path.read_text())
    except OSError as exc:
        raise ConfigError(f"cannot read {path}: {exc.strerror}") from None
    except yaml.YAMLError as exc:
        raise ConfigError(f"{path} is not valid YAML: {exc}") from None


def parse_tenants_file(path: Path) -> dict[str, tuple[TenantSettings, str | None]]:
    """Tenant name → (settings, policy source or None)."""
    doc = _load_yaml(path)
    if not isinstance(doc, dict) or not isinstance(doc.get("tenants"), dict):
        raise ConfigError(f"{path}: expected a top-level 'tenants' mapping")
    result: dict[str, tuple[TenantSettings, str | None]] = {}
    for name, spec in doc["tenants"].items():
        where = f"{path}: tenant {name!r}"
        if not valid_tenant_name(name):
            raise ConfigError(
                f"{where}: tenant names are 1-128 characters without whitespace, '|' or ',', "
                "and names starting with '_' are reserved"
            )
        if not isinstance(spec, dict):
            raise ConfigError(f"{where}: expected a mapping")
        intent = spec.get("intent") or {}
        mode = intent.get("mode", "off")
        if mode is False:  # YAML 1.1 reads a bare `off` as false
            mode = "off"
        if mode not in _INTENT_MODES:
            raise ConfigError(f"{where}: intent.mode must be one of {', '.join(_INTENT_MODES)}")
        catalog = _catalog(spec.get("catalog"), path, name, where)
        server_catalogs = _server_catalogs(spec.get("servers"), path, name, where)
        policy_source = None
        policy_file, policy_engine = _policy_spec(spec.get("policy"), where)
        if policy_file:
            try:
                policy_source = (path.parent / policy_file).read_text()
            except OSError as exc:
                raise ConfigError(f"{where}: cannot read policy {policy_file}: {exc.strerror}") from None
        undetermined, tools_url = _intent_extras(intent, where)
        refresh_s = _refresh_s(intent, where)
        try:
            settings = TenantSettings(
                intent_mode=mode,
                intent_undetermined=undetermined,
                tools_url=tools_url,
                intent_refresh_s=refresh_s,
                require_prompt=bool(intent.get("require_prompt", False)),
                provenance_required_tools=tuple(spec.get("provenance_required_tools") or ()),
                catalog=catalog,
                tool_costs={str(k): float(v) for k, v in (spec.get("tool_costs") or {}).items()},
                budget_rules=tuple(spec.get("budget_rules") or ()),
                policy_engine=policy_engine,
                server_catalogs=server_catalogs,
            )
            parse_rules(settings.budget_rules)
        except (TypeError, ValueError) as exc:
            raise ConfigError(f"{where}: {exc}") from None
        except InvalidArgument as exc:
            raise ConfigError(f"{where}: {exc.message}") from None
        result[str(name)] = (settings, policy_source)
    return result


def _catalog(raw: Any, path: Path, tenant: str, where: str) -> dict[str, Any]:
    """A ``catalog:`` value: a mapping, or a path to one (a shared file: this tenant's part)."""
    catalog = raw or {}
    if isinstance(catalog, str):
        catalog = _load_yaml(path.parent / catalog)
    if not isinstance(catalog, dict):
        raise ConfigError(f"{where}: catalog must be a mapping or a path to one")
    if "tenants" in catalog:  # a shared catalog file: take this tenant's part
        catalog = (catalog["tenants"] or {}).get(tenant, {})
    return catalog


_SERVER_NAME = re.compile(r"[a-z0-9][a-z0-9_-]{0,62}")


def _server_catalogs(raw: Any, path: Path, tenant: str, where: str) -> dict[str, dict[str, Any]]:
    """``servers: {<name>: {catalog: ..., tools_url: ...}}``: the catalog of each MCP tool server
    (``/v1/mcp/<name>``), kept apart from the main endpoint's (catalogs are per tenant and server)."""
    if raw is None:
        return {}
    if not isinstance(raw, dict):
        raise ConfigError(f"{where}: servers must be a mapping of server name to its catalog")
    result: dict[str, dict[str, Any]] = {}
    for server, entry in raw.items():
        here = f"{where}: servers.{server}"
        if not isinstance(server, str) or not _SERVER_NAME.fullmatch(server) or server == "default":
            raise ConfigError(f"{here}: not an MCP server name (lower-case letters, digits, - and _)")
        entry = entry or {}
        if not isinstance(entry, dict) or set(entry) - {"catalog", "tools_url"}:
            raise ConfigError(f"{here}: expected a mapping with catalog and/or tools_url")
        _, tools_url = _intent_extras({"tools_url": entry.get("tools_url")}, here)
        result[server] = {"catalog": _catalog(entry.get("catalog"), path, tenant, here)}
        if tools_url:
            result[server]["tools_url"] = tools_url
    return result


def _keep_fetched(settings: TenantSettings, existing: TenantSettings) -> TenantSettings:
    """The tool lists fetched from upstreams are not part of the file: keep them across restarts while
    the URL they came from is unchanged (the main endpoint's and each server's)."""
    if existing.tools_url and existing.tools_url == settings.tools_url:
        settings = dataclasses.replace(settings, upstream_tools=existing.upstream_tools)
    servers = {}
    for server, entry in settings.server_catalogs.items():
        old = existing.server_catalogs.get(server) or {}
        if entry.get("tools_url") and old.get("tools_url") == entry["tools_url"] and "upstream_tools" in old:
            entry = {**entry, "upstream_tools": old["upstream_tools"]}
        servers[server] = entry
    return dataclasses.replace(settings, server_catalogs=servers)


def _intent_extras(intent: dict[str, Any], where: str) -> tuple[str, str | None]:
    """``intent.undetermined`` (``deny`` | ``policy``) and ``intent.tools_url`` (http(s) URL or absent)."""
    undetermined = intent.get("undetermined", "deny")
    if undetermined not in UNDETERMINED_CHOICES:
        raise ConfigError(f"{where}: intent.undetermined must be one of {', '.join(UNDETERMINED_CHOICES)}")
    tools_url = intent.get("tools_url")
    if isinstance(tools_url, str):
        tools_url = expand_env(tools_url, where)
    if tools_url is not None and (
        not isinstance(tools_url, str) or not tools_url.startswith(("http://", "https://"))
    ):
        raise ConfigError(f"{where}: intent.tools_url must be an http:// or https:// URL")
    return undetermined, tools_url or None


_SECRET_NAME = re.compile(r"KEY|SECRET|TOKEN|PASSWORD|PASSWD|CREDENTIAL")
_ENV_REF = re.compile(r"\$\{([A-Z_][A-Z0-9_]*)(?::-([^}]*))?\}")


def expand_env(value: str, where: str, env: Mapping[str, str] | None = None) -> str:
    """``${NAME}`` and ``${NAME:-default}`` replaced from the environment (the local stack points its
    demo tenant at the upstream it started); ConfigError for a variable that is unset without default."""
    env = os.environ if env is None else env

    def one(match: re.Match[str]) -> str:
        name, default = match.group(1), match.group(2)
        if _SECRET_NAME.search(name):
            # the URL is logged, stored and audited: a secret must never be spliced into it
            raise ConfigError(f"{where}: {name} looks like a secret and cannot be used in a URL")
        if env.get(name):
            return env[name]
        if default is None:
            raise ConfigError(f"{where}: {name} is not set (write ${{{name}:-default}} for a default)")
        return default

    return _ENV_REF.sub(one, value)


def _refresh_s(intent: dict[str, Any], where: str) -> float | None:
    raw = intent.get("refresh_s")
    if raw is None:
        return None
    if isinstance(raw, bool) or not isinstance(raw, int | float) or not 10 <= raw <= 86_400:
        raise ConfigError(f"{where}: intent.refresh_s must be a number of seconds from 10 to 86400")
    return float(raw)


def _policy_spec(raw: Any, where: str) -> tuple[str | None, dict[str, Any] | None]:
    """``policy:`` is a path to the tenant's Rego file, or a mapping ``{engine: opa, url, path,
    timeout_ms, push, source: file.rego}`` to evaluate through an OPA server (``source`` is the Rego
    Tessera keeps and, with ``push``, sends to OPA; see :mod:`authz.policy._opa`)."""
    if raw is None or isinstance(raw, str):
        return raw or None, None
    if not isinstance(raw, dict):
        raise ConfigError(f"{where}: policy must be a path or a mapping")
    engine = {k: v for k, v in raw.items() if k != "source"}
    if engine.get("engine", "embedded") == "embedded":
        return raw.get("source"), None
    try:
        settings = OpaSettings.parse(engine)
    except InvalidArgument as exc:
        raise ConfigError(f"{where}: {exc.message}") from None
    return raw.get("source"), settings.to_json()


async def apply_tenants_file(store: Store, path: Path, *, validate_policy: Any = None) -> list[str]:
    """Write the file's tenants to the store; returns what changed, for the startup log."""
    changes: list[str] = []
    active = await store.active_policies()
    for name, (settings, source) in parse_tenants_file(path).items():
        existing = await store.get_tenant(name)
        if existing is not None:
            settings = _keep_fetched(settings, existing)
        if existing != settings:
            await store.put_tenant(name, settings)
            changes.append(f"tenant {name}: settings applied")
        if source is not None:
            digest = policy_hash(source)
            current = active.get(name)
            if current is None or current.content_hash != digest:
                if validate_policy is not None:
                    validate_policy(source)
                version = await store.promote_policy(name, source, digest, actor="tenants-file")
                changes.append(f"tenant {name}: policy v{version.version} promoted")
    return changes
