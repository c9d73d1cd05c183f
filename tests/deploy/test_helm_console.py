"""The operator console in the Helm chart (values `console`), with the real pinned `helm` binary.

Rendered with the console on (SQLite, PostgreSQL replicas, sidecar): every manifest is valid Kubernetes,
the Envoy config each pod's init container renders routes /console and passes `envoy --mode validate`,
the console container's environment is exactly what `tessera serve-console`'s settings loader reads (and
the admin service gets the same provider settings, so it accepts the console's users), the client
secret only ever comes from a Secret, only Envoy reaches the console port, and bad values fail.
"""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import time
import urllib.request
from collections.abc import Iterator, Mapping
from pathlib import Path

import kubernetes_validate
import pytest
import yaml

from authz.admin.oidc import OidcSettings
from authz.config import outbound_config
from authz.console import ConsoleSettings
from authz.local.envoy_config import LISTENER_NAME, validate_envoy_config
from authz.local.envoy_console import CONSOLE_CLUSTER
from tests.deploy.chart import (
    CHART,
    KUBERNETES_VERSION,
    MIN_KUBERNETES_VERSION,
    VALUES_DIR,
    container,
    find,
    helm,
    one,
    pod_specs,
    render,
)
from tests.deploy.test_helm_chart import _envoy_configs

CONSOLE_VALUES = VALUES_DIR / "console.yaml"
BAD_VALUES = Path(__file__).parent / "bad-values"
# The console values on top of another shape: (values file, extra --set items).
ON = [
    "console.enabled=true",
    "console.publicUrl=https://tessera.example.com",
    "console.oidc.issuer=https://login.example.com",
    "console.oidc.clientId=tessera-console",
    "console.oidc.roleMap.tessera-ops=operator",
    "console.oidc.roleMap.tessera-admins=admin",
    "console.existingSecret=tessera-console-oidc",
]
SHAPES = {
    "sqlite": (CONSOLE_VALUES, []),
    "postgres-replicas": (VALUES_DIR / "postgres-replicas.yaml", ON),
    "sidecar": (VALUES_DIR / "sidecar.yaml", ON),
}
NAME = "t-tessera-authz"
CLIENT_SECRET = "console-client-secret-from-the-secret"


def _render(shape: str, *more: str) -> list[dict]:
    values, sets = SHAPES[shape]
    return render(values, *sets, *more)


def _console_pod(docs: list[dict]) -> dict:
    return one(docs, "Deployment", f"{NAME}-console")["spec"]["template"]["spec"]


def _admin_container(docs: list[dict]) -> dict:
    [admin] = [c for _, spec in pod_specs(docs) for c in spec["containers"] if c["name"] == "admin"]
    return admin


def _env(c: dict, secrets: Mapping[tuple[str, str], str] | None = None) -> dict[str, str]:
    """A container's environment as the kubelet would set it, Secret references resolved from
    `secrets` ((name, key) → value)."""
    env = {}
    for item in c["env"]:
        if "valueFrom" in item:
            ref = item["valueFrom"]["secretKeyRef"]
            env[item["name"]] = ({} if secrets is None else secrets)[(ref["name"], ref["key"])]
        else:
            env[item["name"]] = item["value"]
    return env


class _Recording(dict):
    """An environment that remembers every name looked up in it."""

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self.read: set[str] = set()

    def get(self, key, default=None):
        self.read.add(key)
        return super().get(key, default)

    def __getitem__(self, key):
        self.read.add(key)
        return super().__getitem__(key)

    def __contains__(self, key):
        self.read.add(key)
        return super().__contains__(key)


@pytest.mark.parametrize("shape", list(SHAPES))
def test_every_manifest_with_the_console_is_valid_kubernetes(shape):
    docs = _render(shape)
    assert find(docs, "Deployment", f"{NAME}-console") and find(docs, "Service", f"{NAME}-console")
    for doc in docs:
        if doc["kind"] in ("ServiceMonitor", "PrometheusRule", "AuthorizationPolicy"):
            continue
        for version in (KUBERNETES_VERSION, MIN_KUBERNETES_VERSION):
            try:
                kubernetes_validate.validate(doc, version, strict=True)
            except kubernetes_validate.ValidationError as exc:
                where = f"{doc['kind']}/{doc['metadata']['name']} (Kubernetes {version})"
                raise AssertionError(f"{where}: {exc.message} at {list(exc.path)}") from None


def test_console_deployment_is_one_locked_down_probed_replica():
    docs = _render("sqlite")
    deployment = one(docs, "Deployment", f"{NAME}-console")
    # sessions live in the process: one pod, never two at once during a rollout
    assert deployment["spec"]["replicas"] == 1
    assert deployment["spec"]["strategy"] == {"type": "Recreate"}
    spec = deployment["spec"]["template"]["spec"]
    values = yaml.safe_load((CHART / "values.yaml").read_text())
    assert spec["securityContext"] == values["podSecurityContext"]
    assert spec["automountServiceAccountToken"] is False
    console = container(spec, "console")
    assert console["args"] == ["--log-level", "INFO", "serve-console"]
    assert console["securityContext"] == values["securityContext"]
    for probe in ("startupProbe", "livenessProbe", "readinessProbe"):
        assert console[probe]["httpGet"] == {"path": "/console/healthz", "port": "http-console"}
    assert console["ports"] == [{"name": "http-console", "containerPort": 9470}]
    service = one(docs, "Service", f"{NAME}-console")
    assert service["spec"]["ports"][0]["port"] == 9470
    assert service["spec"]["selector"] == deployment["spec"]["selector"]["matchLabels"]


@pytest.mark.parametrize("shape", list(SHAPES))
def test_envoy_routes_console_to_its_service_and_passes_envoy_validate(shape, tmp_path):
    docs = _render(shape)
    [(owner, path, args)] = _envoy_configs(docs, tmp_path)
    assert owner == (f"{NAME}-check" if shape == "sidecar" else f"{NAME}-gateway")
    assert args[args.index("--console") + 1] == f"{NAME}-console:9470"
    validate_envoy_config(path)
    doc = yaml.safe_load(path.read_text())
    listener = next(x for x in doc["static_resources"]["listeners"] if x["name"] == LISTENER_NAME)
    vhost = listener["filter_chains"][0]["filters"][0]["typed_config"]["route_config"]["virtual_hosts"][0]
    route = next(r for r in vhost["routes"] if r["name"] == "console")
    assert route["match"] == {"path_separated_prefix": "/console"}
    assert route["route"]["cluster"] == CONSOLE_CLUSTER
    cluster = next(c for c in doc["static_resources"]["clusters"] if c["name"] == CONSOLE_CLUSTER)
    assert cluster["type"] == "STRICT_DNS"  # the Service's name, resolved by Envoy
    address = cluster["load_assignment"]["endpoints"][0]["lb_endpoints"][0]["endpoint"]["address"]
    assert address["socket_address"] == {"address": f"{NAME}-console", "port_value": 9470}


@pytest.mark.parametrize("shape", list(SHAPES))
def test_console_env_is_exactly_what_serve_console_reads(shape):
    docs = _render(shape, "oauth.outboundAllow[0]=10.0.0.0/8")
    console = container(_console_pod(docs), "console")
    env = _Recording(_env(console, {("tessera-console-oidc", "client-secret"): CLIENT_SECRET}))
    # `tessera serve-console` builds its settings with ConsoleSettings.from_env (authz/cli.py), and its
    # outbound client (the provider's discovery and keys) with the TESSERA_OUTBOUND_* rules.
    settings = ConsoleSettings.from_env(env)
    rules = outbound_config(env)
    unread = set(env) - env.read
    assert unread == set(), f"the chart sets variables the console never reads: {unread}"
    assert settings.host == "0.0.0.0" and settings.port == 9470
    assert settings.public_url == "https://tessera.example.com"
    assert settings.redirect_uri == "https://tessera.example.com/console/auth/callback"
    assert settings.client_secret is not None and settings.client_secret.reveal() == CLIENT_SECRET.encode()
    assert settings.oidc.issuer == "https://login.example.com"
    assert settings.oidc.client_id == "tessera-console"
    assert settings.oidc.role_map["tessera-ops"] == "operator"
    assert rules.allow == ("10.0.0.0/8",)
    # the console calls the Service that carries the admin port
    host, port = settings.admin_address.rsplit(":", 1)
    service_ports = {p["port"] for p in one(docs, "Service", host)["spec"]["ports"]}
    assert int(port) in service_ports and int(port) == 9192
    assert host == (f"{NAME}-admin" if shape == "postgres-replicas" else f"{NAME}-check")
    # the admin service verifies the same provider's ID tokens with the same claim mapping
    admin_env = _Recording(_env(_admin_container(docs), _AnySecret()))
    assert OidcSettings.from_env(admin_env) == settings.oidc
    assert outbound_config(admin_env).allow == rules.allow


class _AnySecret(dict):
    def __getitem__(self, key):
        return "x"


def test_client_secret_only_from_a_secret_key_ref():
    docs = _render("sqlite", "console.clientSecretKey=secret")
    console = container(_console_pod(docs), "console")
    [item] = [e for e in console["env"] if e["name"] == "TESSERA_CONSOLE_CLIENT_SECRET"]
    assert "value" not in item
    assert item["valueFrom"] == {"secretKeyRef": {"name": "tessera-console-oidc", "key": "secret"}}
    # no rendered manifest carries a secret value in plain text
    rendered = yaml.safe_dump_all(docs)
    assert "client-secret" not in yaml.safe_dump(console["env"])
    assert CLIENT_SECRET not in rendered


def test_only_envoy_reaches_the_console_and_the_console_reaches_the_admin_port():
    gateway_pods = {"app.kubernetes.io/component": "gateway", "app.kubernetes.io/instance": "t",
                    "app.kubernetes.io/name": "tessera-authz"}  # fmt: skip
    console_pods = dict(gateway_pods, **{"app.kubernetes.io/component": "console"})
    check_pods = dict(gateway_pods, **{"app.kubernetes.io/component": "check"})
    for shape, envoy_pods, admin_policy in (
        ("sqlite", gateway_pods, "check"),
        ("postgres-replicas", gateway_pods, "admin"),
        ("sidecar", check_pods, "check"),  # SQLite: the admin port is in the check pod
    ):
        docs = _render(shape)
        policy = one(docs, "NetworkPolicy", f"{NAME}-console")
        assert policy["spec"]["podSelector"]["matchLabels"] == console_pods
        assert policy["spec"]["ingress"] == [
            {
                "ports": [{"port": 9470, "protocol": "TCP"}],
                "from": [{"podSelector": {"matchLabels": envoy_pods}}],
            }
        ], shape
        admin = one(docs, "NetworkPolicy", f"{NAME}-{admin_policy}")
        [rule] = [r for r in admin["spec"]["ingress"] if r["ports"][0]["port"] == 9192]
        assert {"podSelector": {"matchLabels": console_pods}} in rule["from"], shape


def test_console_off_by_default_leaves_the_chart_as_it_was():
    docs = render(None)
    assert not find(docs, "Deployment", f"{NAME}-console")
    assert not find(docs, "Service", f"{NAME}-console")
    assert not find(docs, "NetworkPolicy", f"{NAME}-console")
    for _, spec in pod_specs(docs):
        for c in [*spec.get("initContainers", ()), *spec["containers"]]:
            assert "--console" not in c.get("args", ()), c["name"]
            assert not [e for e in c.get("env", ()) if e["name"].startswith("TESSERA_OIDC_")], c["name"]


@pytest.mark.parametrize(
    ("bad", "message"),
    [
        ("console-without-issuer.yaml", "console.enabled needs console.oidc.issuer"),
        ("console-without-secret.yaml", "console.enabled needs console.existingSecret"),
        ("console-without-role-map.yaml", "console.enabled needs console.oidc.roleMap"),
        ("console-two-replicas.yaml", "console.replicas is 2: console sessions live in the console process"),
        ("console-without-gateway.yaml", "console.enabled with gateway.enabled=false"),
        (
            "console-plain-client-secret.yaml",
            "at '/console': additional properties 'clientSecret' not allowed",
        ),
        ("console-unknown-role.yaml", "at '/console/oidc/roleMap/tessera-ops': value must be one of"),
    ],
)
def test_bad_console_values_fail_with_a_message_that_names_the_problem(bad, message):
    proc = helm("template", "t", str(CHART), "-f", str(BAD_VALUES / bad), check=False)
    assert proc.returncode != 0, proc.stdout
    assert message in proc.stderr, proc.stderr
    lint = helm("lint", str(CHART), "-f", str(BAD_VALUES / bad), check=False)
    assert message in lint.stderr + lint.stdout, lint.stderr + lint.stdout


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture
def console_process(tmp_path) -> Iterator[tuple[subprocess.Popen, int]]:
    """The console container's command (the image's entrypoint is `tessera`) with its rendered env."""
    port = _free_port()
    docs = _render("sqlite", f"console.port={port}")
    console = container(_console_pod(docs), "console")
    env = {k: v for k, v in os.environ.items() if not k.startswith(("TESSERA_", "OTEL_"))}
    env |= _env(console, {("tessera-console-oidc", "client-secret"): CLIENT_SECRET})
    proc = subprocess.Popen(
        [sys.executable, "-m", "authz.cli", *console["args"]],
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    try:
        yield proc, port
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=15)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


def test_console_container_command_starts_and_answers_its_probe(console_process):
    """The provider (https://login.example.com) is unreachable here: the console still starts and its
    liveness path answers; sign-in would fail closed, which the console's own tests cover."""
    proc, port = console_process
    deadline = time.monotonic() + 60
    while True:
        assert proc.poll() is None, proc.stdout.read() if proc.stdout else ""
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{port}/console/healthz", timeout=2) as resp:
                assert resp.status == 200 and resp.read() == b"ok\n"
                break
        except OSError:
            if time.monotonic() > deadline:
                raise
            time.sleep(0.2)
