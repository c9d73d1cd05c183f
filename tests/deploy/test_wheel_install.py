"""The published package works outside the repository: build the wheel, install
``tessera-authz[envoy,demo]`` into a fresh virtualenv under a temporary directory, run ``tessera run``
from an empty directory and make an allowed call through Envoy."""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import httpx
import pytest

from authz.local.stack import free_port
from tests.deploy.conftest import ROOT, WheelVenv

# building and installing the wheel (the first test of a session) takes a minute or more on a busy machine
pytestmark = [pytest.mark.integration, pytest.mark.timeout(600)]


@pytest.fixture
def venv(wheel_venv: WheelVenv) -> WheelVenv:
    return wheel_venv


def test_wheel_carries_the_data_files_the_commands_need(venv):
    names = set(venv.wheel_files)
    for data in (
        "authz/local/envoy/envoy.yaml",
        "authz/local/envoy/admin_descriptor.binpb",
        "authz/demo/tenants.yaml",
        "authz/policy/examples/demo.rego",
        "authz/intent/examples/demo_catalog.yaml",
    ):
        assert data in names, data
    assert any(n.startswith("authz/storage/postgres/migrations/") for n in names)
    assert venv.wheel.name.startswith("tessera_authz-")


def test_tessera_run_from_an_empty_directory_serves_an_allowed_call(venv, tmp_path):
    empty = tmp_path / "empty"
    empty.mkdir()
    listen = free_port()
    env = {k: v for k, v in os.environ.items() if not k.startswith(("TESSERA_", "PYTHON", "VIRTUAL_ENV"))}
    env |= {
        "PATH": f"{venv.bin}:/usr/bin:/bin",
        "TESSERA_CHECK_PORT": str(free_port()),
        "TESSERA_ADMIN_PORT": str(free_port()),
        "TESSERA_METRICS_PORT": str(free_port()),
        "TESSERA_DEMO_PORT": str(free_port()),
        "TESSERA_ENVOY_ADMIN_PORT": str(free_port()),
    }
    run = subprocess.Popen(
        [str(venv.bin / "tessera"), "run", "--port", str(listen)],
        cwd=empty, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
    )  # fmt: skip
    output = ""
    try:
        deadline = time.monotonic() + 90
        while "Ctrl-C stops everything" not in output:
            assert time.monotonic() < deadline and run.poll() is None, output
            output += run.stdout.readline()
        token = re.search(r"export TOKEN=(\S+)", output).group(1)
        reply = httpx.post(
            f"http://127.0.0.1:{listen}/v1/tool-call",
            json={"tool": "read_invoice", "arguments": {"invoice_id": "INV-1001"}},
            headers={"authorization": f"Bearer {token}"},
            timeout=10,
        )
        assert reply.status_code == 200 and "INV-1001" in reply.text, reply.text
        assert reply.headers.get("x-tessera-decision-id")
        denied = httpx.post(
            f"http://127.0.0.1:{listen}/v1/tool-call",
            json={"tool": "delete_invoice", "arguments": {"invoice_id": "INV-1001"}},
            headers={"authorization": f"Bearer {token}"},
            timeout=10,
        )
        assert denied.status_code == 403 and "-32012" in denied.text, denied.text
    finally:
        run.send_signal(signal.SIGTERM)
        run.wait(30)
    # everything came from the installed package: the Envoy config names its descriptor set there
    rendered = (empty / "var" / "envoy.yaml").read_text()
    descriptor = re.search(r"proto_descriptor: (\S+)", rendered).group(1)
    assert descriptor.startswith(str(venv.root)), descriptor
    assert not descriptor.startswith(str(ROOT))


def test_the_installed_cli_is_the_wheel_not_the_checkout(venv, tmp_path):
    probe = subprocess.run(
        [str(venv.bin / "python"), "-c", "import authz, sys; print(authz.__file__)"],
        cwd=tmp_path, capture_output=True, text=True, timeout=60, env={"PATH": "/usr/bin:/bin"},
    )  # fmt: skip
    assert probe.returncode == 0, probe.stderr
    assert Path(probe.stdout.strip()).is_relative_to(venv.root)
    assert sys.prefix != str(venv.root)
