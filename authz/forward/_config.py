"""Which sinks a ``tessera forward`` process drives: a YAML (or JSON) file, ``TESSERA_FORWARD_CONFIG``.

```yaml
sinks:
  - name: audit-file          # the sink's identity in the store (lease, cursors, dead letters)
    type: file                # file | webhook | splunk | datadog | sentinel | s3 | slack | teams | pagerduty
    path: var/audit.ndjson
    max_bytes: 104857600      # rotate beyond this size (default 100 MiB)
    keep: 5                   # rotated files kept
  - name: soc-webhook
    type: webhook
    url: https://siem.example.com/tessera
    secret_env: TESSERA_FORWARD_SOC_SECRET   # the HMAC key is named, never written in the file
    tenants: [acme]           # default: every tenant
    batch_size: 200           # any ForwarderSettings field may be set per sink
  - name: oncall
    type: slack               # slack | teams (secret_env holds the webhook URL) | pagerduty (routing key)
    secret_env: TESSERA_SLACK_WEBHOOK_URL
    notify: {decisions: [escalate, deny], checks: [budget, policy]}   # default: escalate, outage and
                              # the system actions approval.expired, audit.verify_failed,
                              # forwarder.dead_letter (notify: {actions: [...]})
    rate: {more_than: 20, minutes: 5}   # optional: post once the matches exceed a rate instead
    link_template: "https://console.example.com/{tenant}/events/{seq}"
    approval_link_template: "https://console.example.com/{tenant}/approvals/{approval_id}"
```
Secrets are referenced by the name of an environment variable and held as :class:`authz.secrets.Secret`.
"""

from __future__ import annotations

import dataclasses
import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

from authz.errors import ConfigError
from authz.forward._driver import ForwarderSettings
from authz.forward._event import GZIP_LEVEL
from authz.forward._file import NdjsonFileSink
from authz.forward._sink import HttpClient, Sink
from authz.forward._vendors import DatadogLogsSink, SentinelSink, SplunkHecSink
from authz.forward._webhook import WebhookSink
from authz.secrets import Secret

_NAME = re.compile(r"^[a-z0-9][a-z0-9_.-]{0,62}$")
_SETTINGS = {f.name for f in dataclasses.fields(ForwarderSettings)} - {"tenants"}
_KINDS = {
    "file": {"path", "max_bytes", "keep"},
    "webhook": {"url", "secret_env"},
    "splunk": {"url", "secret_env", "index", "source", "sourcetype", "host"},
    "datadog": {"url", "secret_env", "service", "hostname", "tags"},
    "slack": {"secret_env", "notify", "link_template", "approval_link_template", "rate"},
    "teams": {"secret_env", "notify", "link_template", "approval_link_template", "rate"},
    "pagerduty": {"secret_env", "url", "notify", "link_template", "approval_link_template", "rate"},
    "s3": {"bucket", "prefix", "region", "endpoint_url", "access_key_env", "secret_env", "gzip_level"},
    "sentinel": {"endpoint", "dcr_id", "stream", "directory_id", "client_id", "secret_env", "authority"},
}


@dataclass(frozen=True, slots=True)
class SinkSpec:
    """One configured sink: its ``name`` and ``kind``, the kind's ``options`` and the driver's settings."""

    name: str
    kind: str
    options: Mapping[str, Any]
    settings: ForwarderSettings


def load_sink_specs(path: str | Path) -> list[SinkSpec]:
    try:
        raw = yaml.safe_load(Path(path).read_text())
    except (OSError, yaml.YAMLError) as exc:
        raise ConfigError(f"cannot read forwarder config {path}: {exc}") from exc
    sinks = raw.get("sinks") if isinstance(raw, dict) else None
    if not isinstance(sinks, list) or not sinks:
        raise ConfigError(f"forwarder config {path}: expected a non-empty 'sinks' list")
    specs, names = [], set()
    for entry in sinks:
        spec = _spec(entry, path)
        if spec.name in names:
            raise ConfigError(f"forwarder config {path}: sink name {spec.name!r} appears twice")
        names.add(spec.name)
        specs.append(spec)
    return specs


def _spec(entry: Any, path: str | Path) -> SinkSpec:
    if not isinstance(entry, dict):
        raise ConfigError(f"forwarder config {path}: each sink must be a mapping")
    entry = dict(entry)
    name, kind = entry.pop("name", None), entry.pop("type", None)
    if not isinstance(name, str) or not _NAME.match(name):
        raise ConfigError(f"forwarder config {path}: sink name {name!r} must match {_NAME.pattern}")
    if kind not in _KINDS:
        raise ConfigError(f"forwarder config {path}: sink {name}: type must be one of {sorted(_KINDS)}")
    tenants = entry.pop("tenants", None)
    if tenants is not None and not (isinstance(tenants, list) and all(isinstance(t, str) for t in tenants)):
        raise ConfigError(f"forwarder config {path}: sink {name}: tenants must be a list of names")
    settings_kw = {key: entry.pop(key) for key in list(entry) if key in _SETTINGS}
    unknown = set(entry) - _KINDS[kind]
    if unknown:
        raise ConfigError(f"forwarder config {path}: sink {name}: unknown keys {sorted(unknown)}")
    try:
        settings = ForwarderSettings(**settings_kw, tenants=tuple(tenants) if tenants is not None else None)
    except (TypeError, ValueError) as exc:
        raise ConfigError(f"forwarder config {path}: sink {name}: {exc}") from exc
    return SinkSpec(name, kind, entry, settings)


def build_sink(
    spec: SinkSpec, env: Mapping[str, str], http: Callable[[], HttpClient], policy: Any = None
) -> Sink:
    """The sink a spec names; ``http()`` gives the outbound client for HTTP sinks; ``policy`` (an
    :class:`authz.outbound.OutboundPolicy`) vets the endpoint of sinks that open their own connections."""
    opts = spec.options
    if spec.kind == "file":
        if not isinstance(opts.get("path"), str):
            raise ConfigError(f"sink {spec.name}: 'path' is required")
        return NdjsonFileSink(
            spec.name,
            opts["path"],
            max_bytes=int(opts.get("max_bytes", 100 * 1024 * 1024)),
            keep=int(opts.get("keep", 5)),
        )
    if spec.kind == "s3":
        return _s3(spec, env, policy)
    secret = _secret(spec, env)
    if spec.kind in ("slack", "teams", "pagerduty"):
        return _notifier(spec, secret, http())
    if spec.kind == "sentinel":
        fields = ("endpoint", "dcr_id", "stream", "directory_id", "client_id")
        values = [opts.get(f) for f in fields]
        if not all(isinstance(v, str) and v for v in values):
            raise ConfigError(f"sink {spec.name}: {', '.join(fields)} are required")
        extra = {"authority": opts["authority"]} if "authority" in opts else {}
        return SentinelSink(spec.name, *values, secret, http(), **extra)
    url = opts.get("url")
    if not isinstance(url, str):
        raise ConfigError(f"sink {spec.name}: 'url' is required")
    extra = {k: v for k, v in opts.items() if k not in ("url", "secret_env")}
    if spec.kind == "splunk":
        return SplunkHecSink(spec.name, url, secret, http(), **extra)
    if spec.kind == "datadog":
        return DatadogLogsSink(spec.name, url, secret, http(), **extra)
    return WebhookSink(spec.name, url, secret, http())


def _secret(spec: SinkSpec, env: Mapping[str, str]) -> Secret:
    """The sink's credential, from the environment variable the config names (never from the file)."""
    secret_env = spec.options.get("secret_env")
    if not isinstance(secret_env, str):
        raise ConfigError(f"sink {spec.name}: 'secret_env' (the variable holding its credential) is required")
    value = env.get(secret_env)
    if not value:
        raise ConfigError(f"sink {spec.name}: secret {secret_env} is not set")
    return Secret(value)


def _s3(spec: SinkSpec, env: Mapping[str, str], policy: Any) -> Sink:
    """S3: keys from the named variables when given, else boto3's own chain (instance role, ...)."""
    from authz.forward._s3 import S3Sink, endpoint_host, s3_client
    from authz.outbound import vet_host_sync

    opts = spec.options
    bucket, region = opts.get("bucket"), opts.get("region")
    if not isinstance(bucket, str) or not isinstance(region, str):
        raise ConfigError(f"sink {spec.name}: 'bucket' and 'region' are required")
    access_key = env.get(opts["access_key_env"]) if "access_key_env" in opts else None
    secret_key = _secret(spec, env).reveal().decode() if "secret_env" in opts else None
    gzip_level = opts.get("gzip_level", GZIP_LEVEL)
    if not isinstance(gzip_level, int) or not 1 <= gzip_level <= 9:
        raise ConfigError(f"sink {spec.name}: 'gzip_level' must be a whole number from 1 to 9")
    endpoint = opts.get("endpoint_url")
    host, port = endpoint_host(region, endpoint)
    vet = (lambda: vet_host_sync(policy, host, port, f"S3 sink {spec.name}")) if policy is not None else None
    client = s3_client(
        region=region,
        endpoint_url=endpoint,
        access_key_id=access_key,
        secret_access_key=secret_key,
        outbound=policy,
        purpose=f"S3 sink {spec.name}",
    )
    return S3Sink(
        spec.name, bucket, client, prefix=str(opts.get("prefix", "")), vet=vet, gzip_level=gzip_level
    )


def _notifier(spec: SinkSpec, secret: Secret, http: HttpClient) -> Sink:
    from authz.forward._notify import NotifyRule, PagerDutySink, RateRule, SlackSink, TeamsSink

    opts = spec.options
    raw = opts.get("notify") or {}
    if not isinstance(raw, dict) or set(raw) - {"decisions", "checks", "codes", "tools", "actions"}:
        raise ConfigError(f"sink {spec.name}: notify takes decisions, checks, codes, tools and actions")
    try:
        # given fields replace the default rule whole: {checks: [budget]} means any budget denial
        empty = {"decisions": (), "checks": (), "codes": (), "tools": (), "actions": ()}
        rule = NotifyRule(**(empty | {k: tuple(v) for k, v in raw.items()})) if raw else NotifyRule()
        rate = RateRule(**opts["rate"]) if opts.get("rate") else None
    except (TypeError, ValueError) as exc:
        raise ConfigError(f"sink {spec.name}: notify: {exc}") from exc
    kw: dict[str, Any] = {
        "rule": rule,
        "rate": rate,
        "link_template": opts.get("link_template"),
        "approval_link_template": opts.get("approval_link_template"),
    }
    if spec.kind == "slack":
        return SlackSink(spec.name, secret, http, **kw)
    if spec.kind == "teams":
        return TeamsSink(spec.name, secret, http, **kw)
    extra = {"url": opts["url"]} if "url" in opts else {}
    return PagerDutySink(spec.name, secret, http, **kw, **extra)
