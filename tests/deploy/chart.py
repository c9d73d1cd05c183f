"""Helpers for the chart tests: the pinned helm binary, rendering, and finding things in manifests."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path
from typing import Any

import yaml

ROOT = Path(__file__).resolve().parents[2]
CHART = ROOT / "helm" / "tessera"
VALUES_DIR = ROOT / "helm" / "values"
VALUES_FILES = sorted(VALUES_DIR.glob("*.yaml"))
KUBERNETES_VERSION = "1.37.0"
#: The oldest Kubernetes the chart supports (Chart.yaml kubeVersion; gRPC probes are GA from 1.27).
MIN_KUBERNETES_VERSION = "1.27.0"


def helm_binary() -> Path:
    """``helm`` installed by ``make helm`` next to the virtualenv's python; a clear failure otherwise."""
    helm = Path(sys.executable).parent / "helm"
    if not helm.is_file():
        raise AssertionError(f"{helm} is missing: run `make helm` (the pinned Helm the chart tests use)")
    return helm


def helm(*args: str, check: bool = True) -> subprocess.CompletedProcess:
    proc = subprocess.run([str(helm_binary()), *args], capture_output=True, text=True, timeout=120)
    if check and proc.returncode != 0:
        raise AssertionError(f"helm {' '.join(args)} failed ({proc.returncode}):\n{proc.stderr}")
    return proc


def render(
    values: Path | None = None, *sets: str, release: str = "t", namespace: str = "tessera"
) -> list[dict]:
    args = ["template", release, str(CHART), "--namespace", namespace]
    if values is not None:
        args += ["-f", str(values)]
    for item in sets:
        args += ["--set", item]
    return [doc for doc in yaml.safe_load_all(helm(*args).stdout) if doc]


def find(docs: list[dict], kind: str, name: str | None = None) -> list[dict]:
    return [d for d in docs if d["kind"] == kind and (name is None or d["metadata"]["name"] == name)]


def one(docs: list[dict], kind: str, name: str) -> dict:
    found = find(docs, kind, name)
    assert len(found) == 1, f"{kind}/{name}: {len(found)} rendered ({[d['metadata']['name'] for d in docs]})"
    return found[0]


def pod_specs(docs: list[dict]) -> list[tuple[str, dict[str, Any]]]:
    """(owner name, pod spec) of every Deployment and Job."""
    return [
        (d["metadata"]["name"], d["spec"]["template"]["spec"])
        for d in docs
        if d["kind"] in ("Deployment", "Job")
    ]


def container(spec: dict[str, Any], name: str) -> dict[str, Any]:
    for c in [*spec.get("initContainers", ()), *spec["containers"]]:
        if c["name"] == name:
            return c
    raise AssertionError(f"no container {name!r} in {[c['name'] for c in spec['containers']]}")
