"""The Helm chart `helm/tessera`, with the real pinned `helm` binary (`make helm`).

For every values file beside the chart (and the chart's defaults): `helm lint --strict`, `helm template`,
every rendered manifest validated against the Kubernetes 1.37 schemas (`kubernetes-validate`, strict),
and every Envoy config the chart would run rendered by the chart's own init-container command and
passed through `envoy --mode validate`. Bad values fail with the schema's (or the chart's) message.
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import kubernetes_validate
import pytest
import yaml

from authz.local.envoy_config import CHECK_CLUSTER, EXT_AUTHZ_FILTER, LISTENER_NAME, validate_envoy_config
from authz.policy import compile_policy
from authz.tenants import parse_tenants_file
from tests.deploy.chart import (
    CHART,
    KUBERNETES_VERSION,
    MIN_KUBERNETES_VERSION,
    ROOT,
    VALUES_DIR,
    VALUES_FILES,
    container,
    find,
    helm,
    one,
    pod_specs,
    render,
)
from tests.pg import pg_fixtures

pg_cluster, pg_url = pg_fixtures()

BAD_VALUES = Path(__file__).parent / "bad-values"
CASES = [None, *VALUES_FILES]
IDS = ["chart-defaults", *(p.stem for p in VALUES_FILES)]
# Custom resources kubernetes-validate has no schema for; checked field by field below.
CRDS = {"AuthorizationPolicy", "ServiceMonitor", "PrometheusRule"}


def test_helm_is_the_pinned_version():
    sys.path.insert(0, str(ROOT / "helm"))
    try:
        from install_helm import HELM_VERSION
    finally:
        sys.path.pop(0)
    assert helm("version", "--short").stdout.startswith(HELM_VERSION)


def test_chart_declares_the_oldest_kubernetes_it_is_validated_against():
    chart = yaml.safe_load((CHART / "Chart.yaml").read_text())
    assert chart["kubeVersion"] == f">={MIN_KUBERNETES_VERSION}-0"
    assert chart["name"] == "tessera-authz"  # the PyPI distribution's name
    # helm refuses a cluster older than that
    old = helm("template", "t", str(CHART), "--kube-version", "1.26.0", check=False)
    assert old.returncode != 0 and "kubeVersion" in old.stderr, old.stderr


def test_every_mode_has_a_values_file():
    assert {p.stem for p in VALUES_FILES} >= {
        "default",
        "postgres-replicas",
        "istio",
        "sidecar",
        "gateway-off",
    }


@pytest.mark.parametrize("values", CASES, ids=IDS)
def test_lint_and_every_manifest_is_valid_kubernetes(values):
    lint = helm("lint", "--strict", str(CHART), *(["-f", str(values)] if values else []))
    assert "0 chart(s) failed" in lint.stdout, lint.stdout
    docs = render(values)
    assert find(docs, "Deployment")
    for doc in docs:
        if doc["kind"] in CRDS:
            continue
        for version in (KUBERNETES_VERSION, MIN_KUBERNETES_VERSION):
            try:
                kubernetes_validate.validate(doc, version, strict=True)
            except kubernetes_validate.ValidationError as exc:
                where = f"{doc['kind']}/{doc['metadata']['name']} (Kubernetes {version})"
                raise AssertionError(f"{where}: {exc.message} at {list(exc.path)}") from None


@pytest.mark.parametrize("values", CASES, ids=IDS)
def test_every_container_is_locked_down_and_probed(values):
    docs = render(values)
    for owner, spec in pod_specs(docs):
        assert spec["securityContext"]["runAsNonRoot"] is True, owner
        assert spec["securityContext"]["runAsUser"] != 0, owner
        assert spec.get("automountServiceAccountToken") is False, owner
        for c in [*spec.get("initContainers", ()), *spec["containers"]]:
            ctx = c["securityContext"]
            assert ctx["allowPrivilegeEscalation"] is False, (owner, c["name"])
            assert ctx["readOnlyRootFilesystem"] is True, (owner, c["name"])
            assert ctx["capabilities"]["drop"] == ["ALL"], (owner, c["name"])
            assert "resources" in c, (owner, c["name"])
            if c["name"] in ("check", "admin", "envoy"):
                assert {"livenessProbe", "readinessProbe"} <= set(c), (owner, c["name"])
    for _, spec in pod_specs(docs):
        for c in spec["containers"]:
            if c["name"] == "check":
                assert c["readinessProbe"]["httpGet"]["path"] == "/readyz"
                assert c["livenessProbe"]["httpGet"]["path"] == "/healthz"
            if c["name"] == "admin":
                assert "grpc" in c["readinessProbe"]  # grpc.health.v1 on the admin port


def _envoy_configs(docs: list[dict], tmp_path: Path) -> list[tuple[str, Path, list[str]]]:
    """Run each pod's `envoy-config` init container command (the image's entrypoint is `tessera`) with
    the output redirected into tmp_path; return (owner, config path, args)."""
    rendered = []
    for owner, spec in pod_specs(docs):
        for init in spec.get("initContainers", ()):
            if init["name"] != "envoy-config":
                continue
            args = list(init["args"])
            out = tmp_path / f"{owner}.yaml"
            args[args.index("--output") + 1] = str(out)
            proc = subprocess.run(
                [sys.executable, "-m", "authz.cli", *args], capture_output=True, text=True, timeout=60
            )
            assert proc.returncode == 0, proc.stderr
            rendered.append((owner, out, args))
    return rendered


@pytest.mark.parametrize("values", CASES, ids=IDS)
def test_the_envoy_config_each_pod_renders_passes_envoy_validate(values, tmp_path):
    docs = render(values)
    configs = _envoy_configs(docs, tmp_path)
    has_envoy = any(c["name"] == "envoy" for _, spec in pod_specs(docs) for c in spec["containers"])
    assert bool(configs) == has_envoy
    for owner, path, _ in configs:
        validate_envoy_config(path)
        doc = yaml.safe_load(path.read_text())
        listener = next(x for x in doc["static_resources"]["listeners"] if x["name"] == LISTENER_NAME)
        assert listener["address"]["socket_address"]["address"] == "0.0.0.0", owner
        # the Envoy container runs exactly the file the init container wrote
        spec = dict(pod_specs(docs))[owner]
        assert container(spec, "envoy")["command"][:3] == ["envoy", "-c", "/etc/envoy/envoy.yaml"]


def test_mcp_cors_origins_and_idle_timeout_reach_the_envoy_config_the_gateway_runs(tmp_path):
    docs = render(
        None,
        "mcp.corsOrigins[0]=https://app.example",
        "mcp.corsOrigins[1]=http://localhost:3000",
        "mcp.idleTimeoutMs=120000",
        "mcp.servers.billing=billing-tools:8000",
    )
    [(_, path, _)] = _envoy_configs(docs, tmp_path)
    validate_envoy_config(path)
    doc = yaml.safe_load(path.read_text())
    listener = next(x for x in doc["static_resources"]["listeners"] if x["name"] == LISTENER_NAME)
    hcm = listener["filter_chains"][0]["filters"][0]["typed_config"]
    vhost = hcm["route_config"]["virtual_hosts"][0]
    cors = vhost["typed_per_filter_config"]["envoy.filters.http.cors"]
    assert cors["allow_origin_string_match"] == [
        {"exact": "https://app.example"},
        {"exact": "http://localhost:3000"},
    ]
    routes = {r["name"]: r for r in vhost["routes"]}
    for name in ("mcp", "mcp_stream", "mcp@billing"):
        assert (
            routes[name]["route"]["idle_timeout"] == "120.000s" and routes[name]["route"]["timeout"] == "0s"
        )
    assert routes["mcp@billing"]["match"]["path"] == "/v1/mcp/billing"
    billing = next(c for c in doc["static_resources"]["clusters"] if c["name"] == "mcp_server_billing")
    endpoint = billing["load_assignment"]["endpoints"][0]["lb_endpoints"][0]["endpoint"]["address"]
    assert endpoint["socket_address"] == {"address": "billing-tools", "port_value": 8000}
    # The defaults: the renderer's origin (the MCP Inspector) and 300 s.
    [(_, default_path, args)] = _envoy_configs(render(None), tmp_path / "defaults")
    assert "--cors-origin" not in args
    default_vhost = yaml.safe_load(default_path.read_text())["static_resources"]["listeners"][0]
    default_vhost = default_vhost["filter_chains"][0]["filters"][0]["typed_config"]["route_config"]
    mcp = next(r for r in default_vhost["virtual_hosts"][0]["routes"] if r["name"] == "mcp")
    assert mcp["route"]["idle_timeout"] == "300.000s"


def test_gateway_reaches_every_check_pod_through_the_headless_service(tmp_path):
    docs = render(VALUES_DIR / "postgres-replicas.yaml")
    headless = one(docs, "Service", "t-tessera-authz-check-endpoints")
    assert headless["spec"]["clusterIP"] == "None"
    [(owner, path, args)] = _envoy_configs(docs, tmp_path)
    assert owner == "t-tessera-authz-gateway"
    doc = yaml.safe_load(path.read_text())
    cluster = next(c for c in doc["static_resources"]["clusters"] if c["name"] == CHECK_CLUSTER)
    assert cluster["type"] == "STRICT_DNS"  # one endpoint per resolved pod address
    address = cluster["load_assignment"]["endpoints"][0]["lb_endpoints"][0]["endpoint"]["address"]
    assert address["socket_address"] == {"address": "t-tessera-authz-check-endpoints", "port_value": 9191}
    assert args[args.index("--upstream") + 1] == "invoices-mcp.tools.svc.cluster.local:8000"
    assert args[args.index("--admin") + 1] == "t-tessera-authz-admin:9192"


def test_sidecar_envoy_talks_to_the_check_service_over_loopback(tmp_path):
    docs = render(VALUES_DIR / "sidecar.yaml")
    assert not find(docs, "Deployment", "t-tessera-authz-gateway")
    check = one(docs, "Deployment", "t-tessera-authz-check")["spec"]["template"]["spec"]
    assert [c["name"] for c in check["containers"]] == ["check", "admin", "envoy", "tool-server"]
    [(_, path, args)] = _envoy_configs(docs, tmp_path)
    assert args[args.index("--check") + 1] == "127.0.0.1:9191"
    assert args[args.index("--upstream") + 1] == "127.0.0.1:3000"
    doc = yaml.safe_load(path.read_text())
    cluster = next(c for c in doc["static_resources"]["clusters"] if c["name"] == CHECK_CLUSTER)
    assert cluster["type"] == "STATIC"


def test_postgres_replicas_shape():
    docs = render(VALUES_DIR / "postgres-replicas.yaml")
    check = one(docs, "Deployment", "t-tessera-authz-check")
    admin = one(docs, "Deployment", "t-tessera-authz-admin")
    assert check["spec"]["replicas"] == 3 and admin["spec"]["replicas"] == 2
    # separately scalable: the admin service is not in the check pod
    assert [c["name"] for c in check["spec"]["template"]["spec"]["containers"]] == ["check"]
    env = {e["name"]: e for e in container(check["spec"]["template"]["spec"], "check")["env"]}
    assert env["TESSERA_DATABASE_URL"]["valueFrom"]["secretKeyRef"] == {
        "name": "tessera-database",
        "key": "database-url",
    }
    assert env["TESSERA_TENANTS_FILE"]["value"] == "/etc/tessera/config/tenants.yaml"
    admin_env = {e["name"]: e for e in container(admin["spec"]["template"]["spec"], "admin")["env"]}
    assert admin_env["TESSERA_ADMIN_TRUSTED_PROXIES"]["value"] == "10.244.0.0/16"
    pdb = one(docs, "PodDisruptionBudget", "t-tessera-authz-check")
    assert pdb["spec"]["minAvailable"] == 2
    monitor = one(docs, "ServiceMonitor", "t-tessera-authz-check")
    service_ports = {p["name"] for p in one(docs, "Service", "t-tessera-authz-check")["spec"]["ports"]}
    assert monitor["spec"]["endpoints"][0]["port"] in service_ports
    # the job the shipped alert rules and dashboard select (deploy/observability/alerts.yaml)
    relabel = monitor["spec"]["endpoints"][0]["relabelings"]
    assert {"targetLabel": "job", "replacement": "tessera-check"} in relabel
    alerts = (CHART.parent.parent / "deploy" / "observability" / "alerts.yaml").read_text()
    assert 'job="tessera-check"' in alerts
    assert monitor["apiVersion"] == "monitoring.coreos.com/v1"


def test_hpa_scales_the_check_deployment():
    docs = render(VALUES_DIR / "postgres-replicas.yaml", "check.autoscaling.enabled=true")
    hpa = one(docs, "HorizontalPodAutoscaler", "t-tessera-authz-check")
    assert hpa["spec"]["scaleTargetRef"]["name"] == "t-tessera-authz-check"
    assert "replicas" not in one(docs, "Deployment", "t-tessera-authz-check")["spec"]
    kubernetes_validate.validate(hpa, KUBERNETES_VERSION, strict=True)


def test_network_policy_only_envoy_reaches_the_check_port():
    docs = render(VALUES_DIR / "postgres-replicas.yaml")
    policy = one(docs, "NetworkPolicy", "t-tessera-authz-check")
    [rule] = [r for r in policy["spec"]["ingress"] if r["ports"][0]["port"] == 9191]
    assert rule["from"] == [
        {"podSelector": {"matchLabels": {"app.kubernetes.io/component": "gateway",
                                         "app.kubernetes.io/instance": "t",
                                         "app.kubernetes.io/name": "tessera-authz"}}}
    ]  # fmt: skip
    admin = one(docs, "NetworkPolicy", "t-tessera-authz-admin")
    # the admin port's rule (the other opens its /metrics port to the monitoring namespaces)
    [admin_rule] = [r for r in admin["spec"]["ingress"] if r["ports"][0]["port"] == 9192]
    sources = admin_rule["from"]
    assert {"namespaceSelector": {"matchLabels": {"kubernetes.io/metadata.name": "platform-ops"}}} in sources
    assert all("namespaceSelector" in s or "podSelector" in s for s in sources)
    assert len(sources) == 2  # the gateway's pods and the named namespace, nobody else


def test_without_the_gateway_only_the_named_namespaces_reach_the_check_port():
    docs = render(VALUES_DIR / "gateway-off.yaml")
    assert not find(docs, "Deployment", "t-tessera-authz-gateway")
    policy = one(docs, "NetworkPolicy", "t-tessera-authz-check")
    [rule] = [r for r in policy["spec"]["ingress"] if r["ports"][0]["port"] == 9191]
    assert rule["from"] == [{"namespaceSelector": {"matchLabels": {"kubernetes.io/metadata.name": "edge"}}}]
    # with nothing named, nobody outside the pod reaches it
    bare = render(VALUES_DIR / "gateway-off.yaml", "networkPolicy.checkFromNamespaces=null")
    policy = one(bare, "NetworkPolicy", "t-tessera-authz-check")
    assert [r for r in policy["spec"]["ingress"] if r["ports"][0]["port"] == 9191] == []


def test_migrations_job_is_a_pre_install_and_pre_upgrade_hook_and_migrates_once(tmp_path, pg_url):
    docs = render(VALUES_DIR / "postgres-replicas.yaml")
    job = one(docs, "Job", "t-tessera-authz-migrate")
    annotations = job["metadata"]["annotations"]
    assert annotations["helm.sh/hook"] == "pre-install,pre-upgrade"
    spec = job["spec"]["template"]["spec"]
    migrate = container(spec, "migrate")
    assert migrate["args"] == ["migrate"] and spec["restartPolicy"] == "Never"
    # the Job's command (the image's entrypoint `tessera` + args) against a real PostgreSQL
    key = tmp_path / "master-key"
    key.write_text("chart-test-master-key-0123456789abcdef")
    env = {k: v for k, v in os.environ.items() if not k.startswith("TESSERA_")}
    for item in migrate["env"]:
        env[item["name"]] = item.get("value", "")
    env |= {
        "TESSERA_DATABASE_URL": pg_url,
        "TESSERA_MASTER_KEY_FILE": str(key),
        "TESSERA_VAR_DIR": str(tmp_path),
    }
    first = subprocess.run([sys.executable, "-m", "authz.cli", *migrate["args"]], env=env,
                           capture_output=True, text=True, timeout=60)  # fmt: skip
    assert first.returncode == 0, first.stderr
    assert "0001_core.sql" in first.stdout
    again = subprocess.run([sys.executable, "-m", "authz.cli", *migrate["args"]], env=env,
                           capture_output=True, text=True, timeout=60)  # fmt: skip
    assert again.returncode == 0 and "none pending" in again.stdout, again.stdout + again.stderr
    # SQLite installs have no Job (the one pod migrates its own file)
    assert not find(render(VALUES_DIR / "default.yaml"), "Job")


def test_tenants_policies_and_catalogs_mount_as_one_directory_tessera_reads(tmp_path):
    """Lay the ConfigMaps out as the projected volume does and load them with Tessera's own parser."""
    docs = render(VALUES_DIR / "postgres-replicas.yaml")
    check = one(docs, "Deployment", "t-tessera-authz-check")["spec"]["template"]["spec"]
    [volume] = [v for v in check["volumes"] if v["name"] == "tenants"]
    mount = tmp_path / "etc-tessera-config"
    for source in volume["projected"]["sources"]:
        data = one(docs, "ConfigMap", source["configMap"]["name"])["data"]
        items = source["configMap"].get("items") or [{"key": k, "path": k} for k in data]
        for item in items:
            target = mount / item["path"]
            target.parent.mkdir(parents=True, exist_ok=True)
            target.write_text(data[item["key"]])
    tenants = parse_tenants_file(mount / "tenants.yaml")
    settings, policy = tenants["finance"]
    assert policy is not None and "package tessera" in policy
    compile_policy(policy)
    assert "read_invoice" in str(settings)


def test_istio_authorization_policy_and_the_readme_snippet_match_the_chart():
    docs = render(VALUES_DIR / "istio.yaml")
    assert not find(docs, "Deployment", "t-tessera-authz-gateway")
    [policy] = find(docs, "AuthorizationPolicy")
    assert policy["apiVersion"] == "security.istio.io/v1"
    assert policy["spec"]["action"] == "CUSTOM"
    assert policy["spec"]["provider"] == {"name": "tessera-ext-authz"}
    assert policy["metadata"]["namespace"] == "tools"
    assert policy["spec"]["selector"] == {"matchLabels": {"app": "invoices-mcp"}}
    assert policy["spec"]["rules"] == [
        {"to": [{"operation": {"paths": ["/mcp", "/mcp/*", "/v1/tool-call"]}}]}
    ]
    # the README's meshConfig snippet registers that provider with the settings Tessera's own Envoy uses
    readme = (CHART / "README.md").read_text()
    snippet = re.search(r"```yaml\n(meshConfig:\n.*?)```", readme, re.S)
    assert snippet, "chart README lacks the meshConfig snippet"
    mesh = yaml.safe_load(snippet.group(1))["meshConfig"]
    [provider] = mesh["extensionProviders"]
    grpc = provider["envoyExtAuthzGrpc"]
    assert provider["name"] == "tessera-ext-authz"
    assert grpc["service"] == "t-tessera-authz-check.tessera.svc.cluster.local"
    values = yaml.safe_load((CHART / "values.yaml").read_text())
    assert grpc["port"] == values["check"]["port"]
    command = [sys.executable, "-m", "authz.cli", "envoy-config", "--mode", "sidecar"]
    local = yaml.safe_load(
        subprocess.run(command, capture_output=True, text=True, check=True, timeout=60).stdout
    )
    hcm = local["static_resources"]["listeners"][0]["filter_chains"][0]["filters"][0]["typed_config"]
    ext_authz = next(f for f in hcm["http_filters"] if f["name"] == EXT_AUTHZ_FILTER)["typed_config"]
    assert (
        _ms(grpc["timeout"]) == _ms(ext_authz["grpc_service"]["timeout"]) == values["envoy"]["checkTimeoutMs"]
    )
    assert grpc["failOpen"] is ext_authz["failure_mode_allow"] is False
    assert grpc["statusOnError"] == "503" and ext_authz["status_on_error"] == {"code": "ServiceUnavailable"}
    body = grpc["includeRequestBodyInCheck"]
    assert body == {
        "maxRequestBytes": ext_authz["with_request_body"]["max_request_bytes"],
        "allowPartialMessage": ext_authz["with_request_body"]["allow_partial_message"],
        "packAsBytes": ext_authz["with_request_body"]["pack_as_bytes"],
    }
    # only the mesh's sidecars in the named namespace reach the check port
    policy = one(docs, "NetworkPolicy", "t-tessera-authz-check")
    [rule] = [r for r in policy["spec"]["ingress"] if r["ports"][0]["port"] == 9191]
    assert rule["from"] == [{"namespaceSelector": {"matchLabels": {"kubernetes.io/metadata.name": "tools"}}}]


def _ms(duration: str) -> float:
    assert duration.endswith("s") and not duration.endswith("ms"), duration
    return round(float(duration[:-1]) * 1000, 3)


def test_chart_readme_covers_every_top_level_value():
    readme = (CHART / "README.md").read_text()
    values = yaml.safe_load((CHART / "values.yaml").read_text())
    missing = [key for key in values if f"`{key}" not in readme]
    assert missing == [], f"chart README does not document {missing}"


def test_dashboards_ship_from_the_chart_directory():
    docs = render(None, "grafanaDashboards.enabled=true", "prometheusRules.enabled=true")
    dashboards = one(docs, "ConfigMap", "t-tessera-authz-dashboards")
    assert dashboards["metadata"]["labels"]["grafana_dashboard"] == "1"
    shipped = {p.name for p in (CHART / "dashboards").glob("*.json")}
    assert set(dashboards.get("data") or {}) == shipped
    kubernetes_validate.validate(dashboards, KUBERNETES_VERSION, strict=True)
    [rules] = find(docs, "PrometheusRule")
    assert rules["apiVersion"] == "monitoring.coreos.com/v1"
    # The chart ships the dashboard and alert rules that deploy/observability/ holds and tests
    # (promtool): the same bytes, so the two never drift.
    source = CHART.parent.parent / "deploy" / "observability"
    assert (CHART / "dashboards" / "tessera.json").read_bytes() == (
        source / "grafana-dashboard.json"
    ).read_bytes()
    assert (CHART / "dashboards" / "tessera.rules.yaml").read_bytes() == (source / "alerts.yaml").read_bytes()
    assert yaml.safe_load((source / "alerts.yaml").read_text())["groups"] == rules["spec"]["groups"]


@pytest.mark.parametrize(
    ("bad", "message"),
    [
        ("unknown-mode.yaml", "at '/mode': value must be one of 'gateway', 'sidecar'"),
        ("replicas-on-sqlite.yaml", "more than one check replica needs PostgreSQL"),
        ("hpa-on-sqlite.yaml", "scaling the check service needs PostgreSQL"),
        ("typo.yaml", "additional properties 'chek' not allowed"),
        ("replicas-not-a-number.yaml", "at '/check/replicas': got string, want integer"),
        ("no-master-key.yaml", "at '/masterKey/existingSecret': minLength"),
        ("postgres-without-secret.yaml", "database.type=postgresql needs database.existingSecret"),
        ("bad-port.yaml", "at '/check/port': maximum"),
        ("mcp-cors-origin-with-path.yaml", "at '/mcp/corsOrigins/0'"),
        ("mcp-server-bad-name.yaml", "at '/mcp/servers': additional properties 'Billing' not allowed"),
        ("oauth-without-resource.yaml", "oauth.enabled needs oauth.resource"),
        ("oauth-issuer-without-audience.yaml", "missing property 'audience'"),
    ],
)
def test_bad_values_fail_with_a_message_that_names_the_problem(bad, message):
    # `helm template` (as `helm install` and `upgrade`) refuses them
    proc = helm("template", "t", str(CHART), "-f", str(BAD_VALUES / bad), check=False)
    assert proc.returncode != 0, proc.stdout
    assert message in proc.stderr, proc.stderr
    # `helm lint` names the problem too (Helm 4 reports a template's `fail` at INFO level, without failing)
    lint = helm("lint", str(CHART), "-f", str(BAD_VALUES / bad), check=False)
    assert message in lint.stderr + lint.stdout, lint.stderr + lint.stdout


def test_oauth_values_reach_envoy_and_both_services(tmp_path):
    values = VALUES_DIR / "oauth.yaml"
    spec_values = yaml.safe_load(values.read_text())["oauth"]
    docs = render(values)
    issuers = one(docs, "ConfigMap", "t-tessera-authz-oauth-issuers")
    assert yaml.safe_load(issuers["data"]["issuers.yaml"]) == {"issuers": spec_values["issuers"]}
    services = [
        c for _, spec in pod_specs(docs) for c in spec["containers"] if c["name"] in ("check", "admin")
    ]
    assert {c["name"] for c in services} == {"check", "admin"}
    for c in services:
        env = {e["name"]: e.get("value") for e in c["env"]}
        assert env["TESSERA_OAUTH_ISSUERS_FILE"] == "/etc/tessera/oauth/issuers.yaml"
        mounts = {m["mountPath"] for m in c["volumeMounts"]}
        assert "/etc/tessera/oauth" in mounts
    [(_, path, args)] = _envoy_configs(docs, tmp_path)
    assert args[args.index("--oauth-resource") + 1] == spec_values["resource"]
    assert args[args.index("--oauth-tenant") + 1] == (
        "acme,https://acme.gw.example.com/v1/mcp,https://login.acme.example"
    )
    doc = yaml.safe_load(path.read_text())
    hcm = doc["static_resources"]["listeners"][0]["filter_chains"][0]["filters"][0]["typed_config"]
    vhosts = {v["name"]: v for v in hcm["route_config"]["virtual_hosts"]}
    assert vhosts["tenant_acme"]["domains"] == ["acme.gw.example.com"]
    routes = {r["name"]: r for r in vhosts["tessera"]["routes"]}
    assert "oauth_metadata" in routes and "oauth_token" in routes
    # Off by default: no issuers file, no OAuth flags (the IntentGate-compatible mode).
    plain = render(None)
    assert not find(plain, "ConfigMap", "t-tessera-authz-oauth-issuers")
    assert not any(
        "--oauth-resource" in init.get("args", ())
        for _, spec in pod_specs(plain)
        for init in spec.get("initContainers", ())
    )
