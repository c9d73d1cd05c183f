"""Sinks and notification routes a tenant configures through the admin API (``ForwarderConfigService``).

They are stored per tenant (:class:`authz.storage.SinkConfig`) as a validated ``spec``::

    {"options": {...kind options and driver settings...}, "secret": "<secret name>",
     # notification routes only:
     "match": {"decisions": [...], "checks": [...], "codes": [...], "tools": [...], "actions": [...]},
     "rate": {"more_than": N, "minutes": M} | None,
     "link_template": "...", "approval_link_template": "..."}

and become the same :class:`~authz.forward._config.SinkSpec` a sinks file gives, named
``"<tenant>/<name>"`` (a sinks-file name has no ``/``, so the two never collide) and limited to the
tenant's chain. Sinks-file sinks and API sinks run side by side; neither shadows the other.

Secrets are referenced by name and resolved by the forwarder, never stored or returned: the file
``$TESSERA_FORWARD_SECRETS_DIR/<tenant>/<name>`` when it exists, else the environment variable
``TESSERA_FORWARD_SECRET_<TENANT>__<NAME>`` (upper case, every character other than a letter or digit
as ``_``). Both are per tenant: a tenant's admin cannot point a sink at another tenant's credential,
nor at any other variable of the process (the master key, database URL).

NDJSON file sinks are not configurable here: they write on the forwarder's host, an operator's call.
"""

from __future__ import annotations

import dataclasses
import os
import re
import string
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from authz.errors import ConfigError
from authz.forward._config import _KINDS, _NAME, _SETTINGS, SinkSpec
from authz.forward._driver import ForwarderSettings
from authz.storage.models import SinkConfig

#: What a sink or route name must match (as in the sinks file).
SINK_NAME = _NAME
SINK_KINDS = ("webhook", "splunk", "datadog", "sentinel", "s3")
ROUTE_KINDS = ("slack", "teams", "pagerduty")
#: Decisions and system actions a route may match on.
DECISIONS = ("allow", "deny", "escalate", "admin", "outage")
SYSTEM_ACTIONS = ("approval.expired", "audit.verify_failed", "forwarder.dead_letter")
_SECRET_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,127}$")
_LINK_FIELDS = {"tenant", "seq", "hash", "decision_id", "approval_id"}
#: Options each kind takes over the API (the sinks file's, with secrets by name instead of variable).
_API_OPTIONS = {
    kind: (_KINDS[kind] - {"secret_env", "access_key_env", "notify", "link_template", "rate"})
    | ({"access_key_secret"} if kind == "s3" else set())
    for kind in (*SINK_KINDS, *ROUTE_KINDS)
}
#: Options holding a URL the admin service vets against the outbound rules before storing.
URL_OPTIONS = ("url", "endpoint", "authority", "endpoint_url")
_REQUIRED = {
    "webhook": ("url",),
    "splunk": ("url",),
    "datadog": ("url",),
    "sentinel": ("endpoint", "dcr_id", "stream", "directory_id", "client_id"),
    "s3": ("bucket", "region"),
}


def forwarder_sink_name(tenant: str, name: str) -> str:
    """The sink's identity in the forwarder's store (lease, cursor, dead letters)."""
    return f"{tenant}/{name}"


def _field(message: str, field: str) -> ConfigError:
    return ConfigError(message, metadata={"field": field})


def validate_sink_spec(kind: str, options: Mapping[str, Any], secret: str, *, route: bool) -> dict[str, Any]:
    """The stored spec of a sink (``route`` False) or a notification route's common part; ConfigError
    (with the offending field in its metadata) for an unknown kind, option or setting, a missing required
    option, a value of the wrong type, or a malformed secret name."""
    kinds = ROUTE_KINDS if route else SINK_KINDS
    if kind not in kinds:
        extra = " (file sinks are configured in the sinks file)" if kind == "file" else ""
        what = "notification route" if route else "sink"
        raise _field(f"unknown {what} kind {kind!r}: one of {', '.join(kinds)}{extra}", "kind")
    options = dict(options)
    unknown = sorted(set(options) - _API_OPTIONS[kind] - _SETTINGS)
    if unknown:
        allowed = sorted(_API_OPTIONS[kind] | _SETTINGS)
        raise _field(
            f"{kind}: unknown option(s) {', '.join(unknown)}; allowed: {', '.join(allowed)}", "options"
        )
    settings = {k: options[k] for k in options if k in _SETTINGS}
    for key, value in settings.items():
        if isinstance(value, float) and key in ("batch_size", "max_attempts"):
            if not value.is_integer():
                raise _field(f"{key} must be a whole number", f"options.{key}")
            options[key] = settings[key] = int(value)  # JSON (Struct) numbers arrive as floats
    try:
        ForwarderSettings(**settings)
    except (TypeError, ValueError) as exc:
        raise _field(f"{kind}: invalid settings: {exc}", "options") from None
    for key, value in options.items():
        if key in _SETTINGS:
            if isinstance(value, bool) or not isinstance(value, int | float):
                raise _field(f"{key} must be a number", f"options.{key}")
        elif key == "tags":
            if not (isinstance(value, list) and all(isinstance(t, str) for t in value)):
                raise _field("tags must be a list of strings", "options.tags")
        elif not isinstance(value, str) or not value:
            raise _field(f"{key} must be a non-empty string", f"options.{key}")
    for key in _REQUIRED.get(kind, ()):
        if key not in options:
            raise _field(f"{kind}: option {key!r} is required", f"options.{key}")
    if "access_key_secret" in options and not _SECRET_NAME.match(options["access_key_secret"]):
        raise _field("access_key_secret must be a secret name", "options.access_key_secret")
    if secret and not _SECRET_NAME.match(secret):
        raise _field(f"secret must be a secret's name ({_SECRET_NAME.pattern}), not a value", "secret")
    if not secret and kind != "s3":  # S3 may use boto3's own credential chain (instance role)
        raise _field(f"{kind}: secret (the name of its credential) is required", "secret")
    return {"options": options, "secret": secret}


def validate_route_spec(
    kind: str,
    options: Mapping[str, Any],
    secret: str,
    match: Mapping[str, list[Any]] | None,
    rate: tuple[int, int] | None,
    link_template: str,
    approval_link_template: str,
) -> dict[str, Any]:
    """The stored spec of a notification route (see :func:`validate_sink_spec`)."""
    spec = validate_sink_spec(kind, options, secret, route=True)
    if match is not None:
        clean = {k: list(v) for k, v in match.items() if v}
        bad = sorted(set(clean.get("decisions", ())) - set(DECISIONS))
        if bad:
            raise _field(f"unknown decision(s) {', '.join(bad)}: one of {', '.join(DECISIONS)}", "match")
        if not clean:
            raise _field("match must name at least one decision, check, code, tool or action", "match")
        spec["match"] = clean
    if rate is not None:
        more_than, minutes = rate
        if more_than < 1 or not 1 <= minutes <= 1440:
            raise _field("rate: more_than must be at least 1 and minutes 1 to 1440", "rate")
        spec["rate"] = {"more_than": more_than, "minutes": minutes}
    for key, template in (
        ("link_template", link_template),
        ("approval_link_template", approval_link_template),
    ):
        if template:
            try:
                fields = {f for _, f, _, _ in string.Formatter().parse(template) if f is not None}
            except ValueError as exc:
                raise _field(f"{key}: {exc}", key) from None
            if fields - _LINK_FIELDS:
                raise _field(
                    f"{key}: unknown placeholder(s) {sorted(fields - _LINK_FIELDS)}; "
                    f"allowed: {sorted(_LINK_FIELDS)}",
                    key,
                )
            spec[key] = template
    return spec


def spec_urls(spec: Mapping[str, Any]) -> list[tuple[str, str]]:
    """``(option, url)`` of every URL in a stored spec (for vetting against the outbound rules)."""
    options = spec.get("options") or {}
    return [(key, options[key]) for key in URL_OPTIONS if isinstance(options.get(key), str)]


def sink_spec(config: SinkConfig) -> SinkSpec:
    """The forwarder's :class:`SinkSpec` of a stored config (secrets still by name)."""
    spec = config.spec
    options = dict(spec.get("options") or {})
    settings_kw = {k: options.pop(k) for k in list(options) if k in _SETTINGS}
    if spec.get("secret"):
        options["secret_env"] = spec["secret"]
    if "access_key_secret" in options:
        options["access_key_env"] = options.pop("access_key_secret")
    if config.kind in ROUTE_KINDS:
        if "match" in spec:
            options["notify"] = spec["match"]
        for key in ("rate", "link_template", "approval_link_template"):
            if spec.get(key):
                options[key] = spec[key]
    settings = ForwarderSettings(**settings_kw, tenants=(config.tenant,))
    return SinkSpec(forwarder_sink_name(config.tenant, config.name), config.kind, options, settings)


def _env_name(tenant: str, name: str) -> str:
    def norm(text: str) -> str:
        return re.sub(r"[^A-Za-z0-9]", "_", text).upper()

    return f"TESSERA_FORWARD_SECRET_{norm(tenant)}__{norm(name)}"


@dataclasses.dataclass(frozen=True)
class TenantSecrets(Mapping[str, str]):
    """One tenant's secrets by name, as :func:`~authz.forward._config.build_sink` reads them: the file
    ``<secrets_dir>/<tenant>/<name>`` (trailing newline dropped) or ``TESSERA_FORWARD_SECRET_<T>__<N>``."""

    tenant: str
    secrets_dir: str | None = None
    environ: Mapping[str, str] = dataclasses.field(default_factory=lambda: os.environ)

    def __getitem__(self, name: str) -> str:
        if not _SECRET_NAME.match(name):
            raise KeyError(name)
        if self.secrets_dir and self.tenant not in (".", "..") and "/" not in self.tenant:
            path = Path(self.secrets_dir) / self.tenant / name
            try:
                return path.read_text().rstrip("\r\n")
            except FileNotFoundError:
                pass
            except OSError as exc:
                raise ConfigError(f"cannot read secret {name!r} of tenant {self.tenant}: {exc}") from exc
        return self.environ[_env_name(self.tenant, name)]

    def __iter__(self):  # names are looked up, never enumerated
        return iter(())

    def __len__(self) -> int:
        return 0


def secret_source(tenant: str, name: str) -> str:
    """Where the forwarder looks for a secret (for error messages and docs; no value)."""
    return f"TESSERA_FORWARD_SECRETS_DIR/{tenant}/{name} or {_env_name(tenant, name)}"
