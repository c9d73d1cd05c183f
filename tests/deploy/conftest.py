"""Fixtures for the deployment tests: the built wheel installed into a fresh virtualenv outside the
repository, and the Helm binary (``make helm``)."""

from __future__ import annotations

import subprocess
import sys
import zipfile
from dataclasses import dataclass
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]


@dataclass(frozen=True)
class WheelVenv:
    wheel: Path
    root: Path

    @property
    def bin(self) -> Path:
        return self.root / "bin"

    @property
    def wheel_files(self) -> list[str]:
        with zipfile.ZipFile(self.wheel) as whl:
            return whl.namelist()


def _run(args: list[str], **kwargs) -> None:
    proc = subprocess.run(args, capture_output=True, text=True, timeout=600, **kwargs)
    if proc.returncode != 0:
        raise AssertionError(f"{' '.join(args)} failed ({proc.returncode}):\n{proc.stdout}\n{proc.stderr}")


@pytest.fixture(scope="session")
def wheel_venv(tmp_path_factory: pytest.TempPathFactory) -> WheelVenv:
    """Build the wheel from this checkout and install ``tessera-authz[envoy,demo]`` from it into a new
    virtualenv in a temporary directory (the same as ``pip install 'tessera-authz[envoy,demo]'``)."""
    base = tmp_path_factory.mktemp("wheel")
    dist = base / "dist"
    _run([sys.executable, "-m", "pip", "wheel", "-q", "--no-deps", str(ROOT), "-w", str(dist)])
    (wheel,) = dist.glob("tessera_authz-*.whl")
    root = base / "venv"
    _run([sys.executable, "-m", "venv", str(root)])
    requirement = f"tessera-authz[envoy,demo] @ {wheel.as_uri()}"
    _run([str(root / "bin" / "python"), "-m", "pip", "install", "-q", requirement], cwd=base)
    return WheelVenv(wheel, root)
