"""Tessera's configuration: frozen dataclasses, one per concern, loaded once at startup.

Every field comes from a ``TESSERA_*`` environment variable; CLI flags override the environment
(see :mod:`authz.cli`). Secrets are held in :class:`authz.secrets.Secret`, whose repr is redacted.
Nothing here is module-level state: :func:`load` builds a new :class:`TesseraConfig` each call.
"""

from __future__ import annotations

import os
import secrets as _secrets
from collections.abc import Mapping
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

from authz.errors import ConfigError
from authz.secrets import Secret

_PACKAGE_DIR = Path(__file__).resolve().parent


@dataclass(frozen=True, slots=True)
class ListenConfig:
    """Where the services listen. The check port is for Envoy only; admin and metrics are separate."""

    host: str = "127.0.0.1"
    #: ext_authz gRPC (envoy.service.auth.v3.Authorization + grpc.health.v1).
    check_port: int = 9191
    #: admin gRPC (authz.api.admin.v1.*, reflection, health).
    admin_port: int = 9192
    #: plain HTTP: /healthz, /readyz, /metrics.
    metrics_port: int = 9464
    #: the admin service's own /healthz, /readyz, /metrics.
    admin_metrics_port: int = 9465


@dataclass(frozen=True, slots=True)
class StoreConfig:
    """``database_url``: ``sqlite:///path/to/file.db`` (default, embedded) or ``postgresql://...``."""

    database_url: str = "sqlite:///var/tessera.db"
    #: How often a replica asks the store whether policies, revocations or settings changed (SQLite).
    poll_interval_s: float = 0.5


@dataclass(frozen=True, slots=True)
class KeyConfig:
    """The master secret every per-tenant key is derived from (HKDF-SHA256)."""

    master_key: Secret
    #: Key id used to mint new tokens.
    active_kid: str = "k1"
    #: Key ids whose tokens still verify (rotation: add the new kid, mint with it, retire the old one).
    live_kids: tuple[str, ...] = ("k1",)


@dataclass(frozen=True, slots=True)
class CheckConfig:
    """The check path."""

    #: Upper bound for one Check, also when Envoy sends no deadline (Envoy's own timeout is 0.5 s).
    deadline_ms: int = 450
    #: Capability-token authentication cache (entries, keyed by token bytes).
    token_cache_size: int = 10_000
    #: Default approval lifetime and quorum when a policy escalates (ARCHITECTURE §7).
    approval_ttl_s: int = 900
    approval_quorum: int = 1
    #: Strip the Authorization header before forwarding to the upstream.
    strip_authorization: bool = True
    #: TESSERA_POLICY_ENGINE: the in-process Rego engine, "regopy" (rego-cpp) or "regorus".
    policy_engine: str = "regopy"
    #: TESSERA_CHECK_WORKERS: check processes sharing the check port (SO_REUSEPORT), each with its own
    #: store connection; worker i serves health and metrics on TESSERA_METRICS_PORT + i.
    workers: int = 1


@dataclass(frozen=True, slots=True)
class IntentConfig:
    """Intent extraction. With ``http_url`` set, the HTTP extractor replaces the built-in catalog one."""

    http_url: str | None = None
    http_timeout_s: float = 0.2
    cache_size: int = 10_000
    cache_ttl_s: float = 300.0
    #: How often each tenant's upstream MCP ``tools/list`` is fetched again (authz/intent/_refresh.py).
    refresh_s: float = 300.0  # TESSERA_INTENT_REFRESH_S
    #: Bound on one ``tools/list`` fetch.
    refresh_timeout_s: float = 10.0  # TESSERA_INTENT_REFRESH_TIMEOUT_S


@dataclass(frozen=True, slots=True)
class OutboundConfig:
    """Outbound requests to URLs an admin or a tenant file sets (:mod:`authz.outbound`).

    Loopback, private, link-local, unique-local and metadata addresses and the service's own ports are
    refused unless ``allow`` (``TESSERA_OUTBOUND_ALLOW``, comma-separated; operator-only, never settable
    through the tenant API) permits them: ``10.0.0.0/8`` (a network), ``127.0.0.1:8099`` (one port,
    needed for one of the refused ports), ``[::1]:8099``. ``tessera run`` and the test stack allow
    loopback, where their demo webhook receivers and extractors listen.
    """

    allow: tuple[str, ...] = ()
    #: Ports refused besides the check, admin and metrics ports: Envoy's listener and admin by default
    #: (``TESSERA_OUTBOUND_REFUSED_PORTS``).
    refused_ports: tuple[int, ...] = (8080, 9901)


@dataclass(frozen=True, slots=True)
class ObservabilityConfig:
    """Logs, metrics and traces (see :mod:`authz.observability`)."""

    #: TESSERA_LOG_LEVEL (or --log-level): DEBUG, INFO, WARNING, ERROR. Libraries stay at WARNING.
    log_level: str = "INFO"
    #: TESSERA_LOG_FORMAT: ``json`` (one object per line) or ``text``.
    log_format: str = "json"
    #: TESSERA_METRICS_TENANT_LABEL: add a ``tenant`` label to per-call metrics (one series per tenant).
    metrics_tenant_label: bool = False
    #: Whether the standard OTEL_* variables turn tracing on (off by default; the SDK reads the rest).
    tracing: bool = False
    #: TESSERA_TRACE_STAGES: with tracing on, a span per pipeline stage (and per approval lookup) under
    #: each call's span; off leaves the call, gRPC server and audit spans (the stage histograms remain).
    trace_stages: bool = True


@dataclass(frozen=True, slots=True)
class BodyLimitsConfig:
    """Bounds on the work an agent's request body can cause on the check path (:mod:`authz.server.body`).

    A body over a limit is answered -32600 (with the JSON-RPC id when it could be read).
    """

    #: Largest body parsed at all (Envoy's ``max_request_bytes`` answers 413 above its own limit).
    max_bytes: int = 1024 * 1024  # TESSERA_BODY_MAX_BYTES
    #: Deepest nesting of objects and arrays (a JSON-RPC message needs a handful).
    max_depth: int = 64  # TESSERA_BODY_MAX_DEPTH
    #: Object keys in the whole body.
    max_keys: int = 10_000  # TESSERA_BODY_MAX_KEYS
    #: Array elements in the whole body (a batch's messages count too).
    max_elements: int = 100_000  # TESSERA_BODY_MAX_ELEMENTS
    #: Messages in one JSON-RPC batch.
    max_batch: int = 100  # TESSERA_BODY_MAX_BATCH
    #: Largest body parsed for a caller whose token does not authenticate (only to echo the request id).
    preauth_bytes: int = 16 * 1024  # TESSERA_BODY_PREAUTH_BYTES


@dataclass(frozen=True, slots=True)
class ReceiptConfig:
    """Signed receipts on allowed requests (ARCHITECTURE §8, :mod:`authz.receipts`).

    Each key id's Ed25519 key is derived from the master secret (``derive_subkey("receipt", kid)``), so
    every check replica signs with the same key and the admin service publishes it without a store.
    Rotation: put the new id first and keep the old one listed for at least ``ttl_s``, so receipts
    signed just before the switch still verify; then drop it.
    """

    #: TESSERA_RECEIPTS: add ``x-tessera-receipt`` to allowed requests.
    enabled: bool = True
    #: TESSERA_RECEIPT_KIDS: comma-separated; the first signs, all are published.
    kids: tuple[str, ...] = ("r1",)
    #: TESSERA_RECEIPT_TTL_S: receipt lifetime in seconds.
    ttl_s: int = 60


@dataclass(frozen=True, slots=True)
class TesseraConfig:
    keys: KeyConfig
    listen: ListenConfig = field(default_factory=ListenConfig)
    store: StoreConfig = field(default_factory=StoreConfig)
    check: CheckConfig = field(default_factory=CheckConfig)
    intent: IntentConfig = field(default_factory=IntentConfig)
    observability: ObservabilityConfig = field(default_factory=ObservabilityConfig)
    body: BodyLimitsConfig = field(default_factory=BodyLimitsConfig)
    outbound: OutboundConfig = field(default_factory=OutboundConfig)
    #: Tenants file (YAML) applied at startup: settings, tool catalog, policy. See README.
    tenants_file: Path | None = None
    #: Directory for embedded state (SQLite database, generated dev master key).
    var_dir: Path = Path("var")
    #: Trusted OAuth issuers (YAML, see authz.oauth): JWT access tokens accepted beside macaroons.
    oauth_issuers_file: Path | None = None  # TESSERA_OAUTH_ISSUERS_FILE
    receipts: ReceiptConfig = field(default_factory=ReceiptConfig)


def default_tenants_file() -> Path:
    """The demo tenants file shipped with the package."""
    return _PACKAGE_DIR / "demo" / "tenants.yaml"


def _int(env: Mapping[str, str], name: str, default: int) -> int:
    raw = env.get(name)
    if raw is None or raw == "":
        return default
    try:
        return int(raw)
    except ValueError:
        raise ConfigError(f"{name} must be an integer, got {raw!r}") from None


def _float(env: Mapping[str, str], name: str, default: float) -> float:
    raw = env.get(name)
    if raw is None or raw == "":
        return default
    try:
        return float(raw)
    except ValueError:
        raise ConfigError(f"{name} must be a number, got {raw!r}") from None


def _bool(env: Mapping[str, str], name: str, default: bool) -> bool:
    raw = env.get(name)
    if raw is None or raw == "":
        return default
    lowered = raw.strip().lower()
    if lowered in ("1", "true", "yes", "on"):
        return True
    if lowered in ("0", "false", "no", "off"):
        return False
    raise ConfigError(f"{name} must be true or false, got {raw!r}")


def _load_master_key(env: Mapping[str, str], var_dir: Path) -> Secret:
    """TESSERA_MASTER_KEY, else TESSERA_MASTER_KEY_FILE, else a dev key generated once in var_dir."""
    if env.get("TESSERA_MASTER_KEY"):
        return Secret(env["TESSERA_MASTER_KEY"])
    key_file = env.get("TESSERA_MASTER_KEY_FILE")
    if key_file:
        path = Path(key_file)
        try:
            data = path.read_bytes().strip()
        except OSError as exc:
            raise ConfigError(f"cannot read TESSERA_MASTER_KEY_FILE {path}: {exc.strerror}") from None
        if len(data) < 16:
            raise ConfigError(f"master key file {path} holds fewer than 16 bytes")
        return Secret(data)
    path = var_dir / "master.key"
    if not path.exists():
        var_dir.mkdir(parents=True, exist_ok=True)
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        with os.fdopen(fd, "w") as fh:
            fh.write(_secrets.token_urlsafe(48))
    return Secret(path.read_bytes().strip())


def outbound_config(env: Mapping[str, str] | None = None) -> OutboundConfig:
    """The outbound rules alone (``TESSERA_OUTBOUND_*``), for commands that reach out without running
    a service (``tessera intent eval --extractor``); :func:`load` reads the same variables."""
    return _outbound(os.environ if env is None else env)


def _outbound(env: Mapping[str, str]) -> OutboundConfig:
    from authz.outbound import parse_allow_entry

    allow = tuple(e.strip() for e in env.get("TESSERA_OUTBOUND_ALLOW", "").split(",") if e.strip())
    for entry in allow:
        parse_allow_entry(entry)  # ConfigError naming the bad entry
    raw_ports = env.get("TESSERA_OUTBOUND_REFUSED_PORTS")
    if raw_ports is None:
        return OutboundConfig(allow=allow)
    try:
        ports = tuple(int(p) for p in raw_ports.split(",") if p.strip())
    except ValueError:
        raise ConfigError(
            f"TESSERA_OUTBOUND_REFUSED_PORTS must be comma-separated ports, got {raw_ports!r}"
        ) from None
    return OutboundConfig(allow=allow, refused_ports=ports)


def _body_limits(env: Mapping[str, str]) -> BodyLimitsConfig:
    defaults = BodyLimitsConfig()
    values = {
        name: _int(env, f"TESSERA_BODY_{name.upper()}", getattr(defaults, name))
        for name in ("max_bytes", "max_depth", "max_keys", "max_elements", "max_batch", "preauth_bytes")
    }
    bad = [name for name, value in values.items() if value < 1]
    if bad:
        raise ConfigError(f"TESSERA_BODY_{bad[0].upper()} must be a positive integer")
    return BodyLimitsConfig(**values)


def load(env: Mapping[str, str] | None = None, **overrides: Any) -> TesseraConfig:
    """Build the configuration from ``env`` (default: ``os.environ``) and keyword overrides.

    Overrides use the flat names of the CLI flags (``check_port``, ``database_url``, ...).
    """
    env = dict(os.environ if env is None else env)
    for key, value in overrides.items():
        if value is not None:
            env["TESSERA_" + key.upper()] = str(value)
    var_dir = Path(env.get("TESSERA_VAR_DIR", "var"))
    live = tuple(k.strip() for k in env.get("TESSERA_LIVE_KIDS", "").split(",") if k.strip())
    active_kid = env.get("TESSERA_ACTIVE_KID", "k1")
    keys = KeyConfig(
        master_key=_load_master_key(env, var_dir),
        active_kid=active_kid,
        live_kids=live or (active_kid,),
    )
    if keys.active_kid not in keys.live_kids:
        raise ConfigError("TESSERA_ACTIVE_KID must be one of TESSERA_LIVE_KIDS")
    listen = ListenConfig(
        host=env.get("TESSERA_HOST", "127.0.0.1"),
        check_port=_int(env, "TESSERA_CHECK_PORT", 9191),
        admin_port=_int(env, "TESSERA_ADMIN_PORT", 9192),
        metrics_port=_int(env, "TESSERA_METRICS_PORT", 9464),
        admin_metrics_port=_int(env, "TESSERA_ADMIN_METRICS_PORT", 9465),
    )
    default_db = f"sqlite:///{var_dir / 'tessera.db'}"
    store = StoreConfig(
        database_url=env.get("TESSERA_DATABASE_URL") or default_db,
        poll_interval_s=_float(env, "TESSERA_POLL_INTERVAL_S", 0.5),
    )
    check = CheckConfig(
        deadline_ms=_int(env, "TESSERA_DEADLINE_MS", 450),
        token_cache_size=_int(env, "TESSERA_TOKEN_CACHE_SIZE", 10_000),
        approval_ttl_s=_int(env, "TESSERA_APPROVAL_TTL_S", 900),
        approval_quorum=_int(env, "TESSERA_APPROVAL_QUORUM", 1),
        strip_authorization=_bool(env, "TESSERA_STRIP_AUTHORIZATION", True),
        policy_engine=_policy_engine(env),
        workers=_int(env, "TESSERA_CHECK_WORKERS", 1),
    )
    if check.workers < 1:
        raise ConfigError("TESSERA_CHECK_WORKERS must be at least 1")
    if check.deadline_ms <= 0 or check.approval_ttl_s <= 0 or check.approval_quorum < 1:
        raise ConfigError("deadline, approval TTL and quorum must be positive")
    intent = IntentConfig(
        http_url=env.get("TESSERA_INTENT_URL") or None,
        http_timeout_s=_float(env, "TESSERA_INTENT_TIMEOUT_S", 0.2),
        cache_size=_int(env, "TESSERA_INTENT_CACHE_SIZE", 10_000),
        cache_ttl_s=_float(env, "TESSERA_INTENT_CACHE_TTL_S", 300.0),
        refresh_s=_float(env, "TESSERA_INTENT_REFRESH_S", 300.0),
        refresh_timeout_s=_float(env, "TESSERA_INTENT_REFRESH_TIMEOUT_S", 10.0),
    )
    body = _body_limits(env)
    outbound = _outbound(env)
    tenants = env.get("TESSERA_TENANTS_FILE")
    observability = _observability(env)
    return TesseraConfig(
        keys=keys,
        listen=listen,
        store=store,
        check=check,
        intent=intent,
        observability=observability,
        body=body,
        outbound=outbound,
        tenants_file=Path(tenants) if tenants else default_tenants_file(),
        var_dir=var_dir,
        oauth_issuers_file=Path(env["TESSERA_OAUTH_ISSUERS_FILE"])
        if env.get("TESSERA_OAUTH_ISSUERS_FILE")
        else None,
        receipts=_receipts(env),
    )


def _policy_engine(env: Mapping[str, str]) -> str:
    from authz.policy import POLICY_ENGINES

    engine = (env.get("TESSERA_POLICY_ENGINE") or "regopy").strip().lower()
    if engine not in POLICY_ENGINES:
        raise ConfigError(f"TESSERA_POLICY_ENGINE must be one of {', '.join(POLICY_ENGINES)}, got {engine!r}")
    return engine


def _receipts(env: Mapping[str, str]) -> ReceiptConfig:
    from authz.token import valid_name

    kids = tuple(k.strip() for k in env.get("TESSERA_RECEIPT_KIDS", "r1").split(",") if k.strip())
    if not kids or not all(valid_name(k) for k in kids) or len(set(kids)) != len(kids):
        raise ConfigError("TESSERA_RECEIPT_KIDS must be distinct key ids (letters, digits, '.', '_', '-')")
    ttl = _int(env, "TESSERA_RECEIPT_TTL_S", 60)
    if not 1 <= ttl <= 3600:
        raise ConfigError("TESSERA_RECEIPT_TTL_S must be between 1 and 3600")
    return ReceiptConfig(enabled=_bool(env, "TESSERA_RECEIPTS", True), kids=kids, ttl_s=ttl)


def _observability(env: Mapping[str, str]) -> ObservabilityConfig:
    from authz.observability import tracing_requested

    level = (env.get("TESSERA_LOG_LEVEL") or "INFO").upper()
    if level not in ("DEBUG", "INFO", "WARNING", "ERROR", "CRITICAL"):
        raise ConfigError(f"TESSERA_LOG_LEVEL must be DEBUG, INFO, WARNING or ERROR, got {level!r}")
    fmt = (env.get("TESSERA_LOG_FORMAT") or "json").lower()
    if fmt not in ("json", "text"):
        raise ConfigError(f"TESSERA_LOG_FORMAT must be json or text, got {fmt!r}")
    return ObservabilityConfig(
        log_level=level,
        log_format=fmt,
        metrics_tenant_label=_bool(env, "TESSERA_METRICS_TENANT_LABEL", False),
        tracing=tracing_requested(env),
        trace_stages=_bool(env, "TESSERA_TRACE_STAGES", True),
    )


__all__ = [
    "BodyLimitsConfig",
    "CheckConfig",
    "IntentConfig",
    "KeyConfig",
    "ListenConfig",
    "ObservabilityConfig",
    "OutboundConfig",
    "ReceiptConfig",
    "StoreConfig",
    "TesseraConfig",
    "default_tenants_file",
    "load",
    "replace",
]
