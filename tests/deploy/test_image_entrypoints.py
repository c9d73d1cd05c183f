"""The Dockerfile and the chart start Tessera from the installed wheel.

No image can be built on this machine, so this runs what the image would: the chart's sidecar-mode check
pod (init container `envoy-config`, then the `check`, `admin` and `envoy` containers), each with the exact
command and arguments the chart renders (the image's ENTRYPOINT when the chart gives only args) and the
environment of the Dockerfile's final stage plus the container's own. The commands run from the wheel
installed as ``tessera-authz[envoy,demo]`` in a fresh virtualenv (the image installs it the same way);
container paths (volume mounts, /opt/tessera) map to directories under the test's tmp_path. The demo MCP
server from the same wheel stands in for the tool server container. Then an agent's call through that
Envoy is allowed and reaches the tool server, and the admin REST API answers through the same Envoy.
"""

from __future__ import annotations

import json
import re
import shutil
import socket
import subprocess
import time
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import httpx
import pytest

from authz.local.envoy_config import die_with_parent
from authz.local.stack import free_port, stop_process, wait_grpc_health, wait_http
from authz.secrets import Secret
from authz.token import KeyRing, mint
from tests.deploy.chart import ROOT, container, one, render
from tests.deploy.conftest import WheelVenv

# building and installing the wheel (the first test of a session) takes a minute or more on a busy machine
pytestmark = [pytest.mark.integration, pytest.mark.timeout(600)]

MASTER_KEY = "image-entrypoint-test-master-key-0123456789"


def dockerfile_runtime(path: Path = ROOT / "Dockerfile") -> dict:
    """ENV, ENTRYPOINT, CMD, USER and WORKDIR of the Dockerfile's final stage."""
    lines = re.sub(r"\\\n", " ", path.read_text()).splitlines()
    stages = [i for i, line in enumerate(lines) if line.startswith("FROM ")]
    final = lines[stages[-1] :]
    runtime: dict = {"env": {}, "stages": len(stages), "copy_from": []}
    for line in final:
        word, _, rest = line.partition(" ")
        if word == "ENV":
            for pair in rest.split():
                key, _, value = pair.partition("=")
                runtime["env"][key] = value
        elif word in ("ENTRYPOINT", "CMD"):
            runtime[word.lower()] = json.loads(rest)
        elif word in ("USER", "WORKDIR"):
            runtime[word.lower()] = rest.strip()
        elif word == "COPY" and rest.startswith("--from="):
            runtime["copy_from"].append(rest.split()[1:])
    return runtime


def test_dockerfile_is_multi_stage_non_root_with_tessera_as_entrypoint():
    runtime = dockerfile_runtime()
    assert runtime["stages"] >= 2
    assert runtime["user"] == "10001:10001"
    assert runtime["entrypoint"] == ["tessera"] and runtime["cmd"] == ["serve"]
    assert runtime["copy_from"] == [["/opt/tessera", "/opt/tessera"]]  # only the built venv crosses over
    assert runtime["env"]["PYTHONDONTWRITEBYTECODE"] == "1"  # nothing written to a read-only root
    text = (ROOT / "Dockerfile").read_text()
    assert "tessera_authz-*.whl)[envoy,postgres,console]" in text


class Pod:
    """Runs one rendered pod spec's containers as local processes."""

    def __init__(self, spec: dict, venv: WheelVenv, root: Path) -> None:
        self.spec = spec
        self.venv = venv
        self.root = root
        self.runtime = dockerfile_runtime()
        self.procs: dict[str, subprocess.Popen] = {}
        self.mounts = {"/opt/tessera": str(venv.root)}
        for c in [*spec.get("initContainers", ()), *spec["containers"]]:
            for m in c.get("volumeMounts", ()):
                self.mounts[m["mountPath"]] = str(root / m["name"])
                (root / m["name"]).mkdir(parents=True, exist_ok=True)

    def path(self, text: str) -> str:
        # one pass, longest container path first, so a mapped path is never mapped again
        alternatives = "|".join(re.escape(p) for p in sorted(self.mounts, key=len, reverse=True))
        return re.sub(rf"(?<![\w/])({alternatives})(?=/|:|$)", lambda m: self.mounts[m.group(1)], text)

    def command(self, c: dict) -> list[str]:
        # Kubernetes: `command` replaces the image's ENTRYPOINT and drops its CMD; `args` alone replace CMD
        if c.get("command"):
            argv = [*c["command"], *c.get("args", ())]
        else:
            argv = [*self.runtime["entrypoint"], *(c.get("args") or self.runtime["cmd"])]
        return [self.path(a) for a in argv]

    def env(self, c: dict, secrets: dict[tuple[str, str], str]) -> dict[str, str]:
        env = {k: self.path(v) for k, v in self.runtime["env"].items()}
        env["PATH"] = env["PATH"].replace("/usr/local/bin:", "")  # this machine's python is not the image's
        for item in c.get("env", ()):
            if "value" in item:
                env[item["name"]] = self.path(item["value"])
            else:
                ref = item["valueFrom"]["secretKeyRef"]
                env[item["name"]] = secrets[(ref["name"], ref["key"])]
        return env

    def start(self, name: str, secrets: dict, log: Path) -> subprocess.Popen:
        c = container(self.spec, name)
        env = self.env(c, secrets)
        argv = self.command(c)
        argv[0] = shutil.which(argv[0], path=env["PATH"]) or argv[0]
        assert argv[0].startswith(str(self.venv.root)), f"{name}: {argv[0]} is not from the installed wheel"
        cwd = self.path(self.runtime["workdir"])
        with open(log, "wb") as out:  # the child keeps its own descriptor
            proc = subprocess.Popen(
                die_with_parent(argv), env=env, cwd=cwd, stdout=out, stderr=subprocess.STDOUT
            )
        self.procs[name] = proc
        return proc

    def stop(self) -> None:
        for proc in reversed(list(self.procs.values())):
            stop_process(proc)


@pytest.fixture
def sidecar_pod(wheel_venv: WheelVenv, tmp_path: Path) -> Iterator[tuple[Pod, dict[str, int]]]:
    ports = {name: free_port() for name in ("check", "metrics", "admin", "envoy", "envoy_admin", "upstream")}
    docs = render(
        None,
        "mode=sidecar",
        f"check.port={ports['check']}",
        f"check.metricsPort={ports['metrics']}",
        f"admin.port={ports['admin']}",
        f"envoy.port={ports['envoy']}",
        f"envoy.adminPort={ports['envoy_admin']}",
        "envoy.concurrency=1",
        "upstream.host=127.0.0.1",
        f"upstream.port={ports['upstream']}",
    )
    spec = one(docs, "Deployment", "t-tessera-authz-check")["spec"]["template"]["spec"]
    pod = Pod(spec, wheel_venv, tmp_path / "pod")
    master = spec["volumes"][0]
    assert master["name"] == "master-key"
    (tmp_path / "pod" / "master-key" / "master-key").write_text(MASTER_KEY)
    demo = [
        str(wheel_venv.bin / "python"),
        "-m",
        "authz.demo",
        "--host",
        "127.0.0.1",
        "--port",
        str(ports["upstream"]),
    ]
    with open(tmp_path / "upstream.log", "wb") as out:
        upstream = subprocess.Popen(die_with_parent(demo), stdout=out, stderr=subprocess.STDOUT)
    try:
        yield pod, ports
    finally:
        pod.stop()
        stop_process(upstream)


def test_the_chart_pod_runs_from_the_installed_wheel_and_allows_a_call(sidecar_pod, tmp_path):
    pod, ports = sidecar_pod
    logs = tmp_path / "logs"
    logs.mkdir()
    assert [c["name"] for c in pod.spec["initContainers"]] == ["envoy-config"]
    init = pod.start("envoy-config", {}, logs / "envoy-config.log")
    assert init.wait(60) == 0, (logs / "envoy-config.log").read_text()

    check = pod.start("check", {}, logs / "check.log")
    admin = pod.start("admin", {}, logs / "admin.log")
    envoy = pod.start("envoy", {}, logs / "envoy.log")
    try:
        # readiness the way the kubelet probes it: the rendered probes' ports and paths
        check_probe = container(pod.spec, "check")["readinessProbe"]["httpGet"]
        assert check_probe["port"] == "http-metrics"
        wait_http(f"http://127.0.0.1:{ports['metrics']}{check_probe['path']}", 60, check, "check container")
        wait_grpc_health(container(pod.spec, "admin")["readinessProbe"]["grpc"]["port"], 60, admin, "admin")
        deadline = time.monotonic() + 30
        while True:
            assert envoy.poll() is None, (logs / "envoy.log").read_text()
            try:
                socket.create_connection(("127.0.0.1", ports["envoy"]), timeout=0.5).close()
                break
            except OSError:
                assert time.monotonic() < deadline, (logs / "envoy.log").read_text()
                time.sleep(0.1)
        wait_http(f"http://127.0.0.1:{ports['upstream']}/healthz", 30, what="demo tool server")

        keyring = KeyRing(Secret(MASTER_KEY), active_kid="k1", live_kids=("k1",))
        token = mint(
            keyring, tenant="demo", agent="demo-agent", expires=datetime.now(UTC) + timedelta(hours=1)
        )
        url = f"http://127.0.0.1:{ports['envoy']}"
        allowed = httpx.post(
            f"{url}/v1/tool-call",
            json={"tool": "read_invoice", "arguments": {"invoice_id": "INV-1001"}},
            headers={"authorization": f"Bearer {token}"},
            timeout=10,
        )
        assert allowed.status_code == 200 and "INV-1001" in allowed.text, allowed.text
        assert allowed.headers.get("x-tessera-decision-id")
        forged = httpx.post(
            f"{url}/v1/tool-call",
            json={"tool": "read_invoice", "arguments": {"invoice_id": "INV-1001"}},
            headers={"authorization": "Bearer not-a-token"},
            timeout=10,
        )
        assert forged.status_code == 401 and "-32010" in forged.text, forged.text
        # the admin service in the same pod answers REST through the pod's Envoy (and wants a key)
        admin_reply = httpx.get(f"{url}/v1/admin/tenants", timeout=10)
        assert admin_reply.status_code == 401, admin_reply.text
        # state went to the mounted state volume, nowhere else
        assert (pod.root / "state" / "tessera.db").exists()
        # no process of the pod wrote into the installed package (a read-only root filesystem)
        assert not list(pod.venv.root.rglob("*.db"))
    finally:
        pod.stop()
