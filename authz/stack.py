"""The whole local stack as child processes: demo MCP server, check service(s), Envoy.

``tessera run`` (``make run``) uses it with the default ports; the integration tests use it with free
ports and a temporary directory. Every child is stopped when the stack stops (and with the parent:
children get SIGTERM from a parent-death signal where Linux offers it).
"""

from __future__ import annotations

import contextlib
import ctypes
import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path

import httpx

from authz.envoy_config import EnvoyProcess, render_envoy_config

_PR_SET_PDEATHSIG = 1


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def _die_with_parent() -> None:  # runs in the child between fork and exec
    with contextlib.suppress(Exception):
        ctypes.CDLL("libc.so.6", use_errno=True).prctl(_PR_SET_PDEATHSIG, signal.SIGTERM)


def spawn(
    args: list[str], *, env: Mapping[str, str] | None = None, log: Path | None = None
) -> subprocess.Popen:
    out = open(log, "ab") if log is not None else subprocess.DEVNULL  # noqa: SIM115 (lives with the child)
    return subprocess.Popen(
        args,
        env={**os.environ, **(env or {})},
        stdout=out,
        stderr=subprocess.STDOUT,
        preexec_fn=_die_with_parent,
    )


def wait_http(url: str, timeout: float, proc: subprocess.Popen | None = None, what: str = "") -> None:
    deadline = time.monotonic() + timeout
    last: Exception | None = None
    while time.monotonic() < deadline:
        if proc is not None and proc.poll() is not None:
            raise RuntimeError(f"{what or url} exited with code {proc.returncode} before it was ready")
        try:
            if httpx.get(url, timeout=0.5).status_code == 200:
                return
        except httpx.HTTPError as exc:
            last = exc
        time.sleep(0.05)
    raise TimeoutError(f"{what or url} not ready after {timeout}s ({last})")


def stop_process(proc: subprocess.Popen | None, timeout: float = 5.0) -> None:
    if proc is None or proc.poll() is not None:
        return
    proc.terminate()
    try:
        proc.wait(timeout)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()


@dataclass
class StackPorts:
    listen: int = 8080
    envoy_admin: int = 9901
    check: int = 9191
    admin: int = 9192
    metrics: int = 9464
    upstream: int = 9000

    @classmethod
    def free(cls) -> StackPorts:
        return cls(*(free_port() for _ in range(6)))


@dataclass
class CheckProcess:
    """One check-service replica."""

    port: int
    metrics_port: int
    env: dict[str, str]
    log: Path
    proc: subprocess.Popen | None = None

    def start(self, timeout: float = 30.0) -> None:
        self.proc = spawn([sys.executable, "-m", "authz.cli", "serve"], env=self.env, log=self.log)
        wait_http(f"http://127.0.0.1:{self.metrics_port}/readyz", timeout, self.proc, "check service")

    def stop(self) -> None:
        stop_process(self.proc)

    def kill(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait()


@dataclass
class Stack:
    """Demo upstream + N check replicas + Envoy, sharing one database and master key."""

    workdir: Path
    ports: StackPorts = field(default_factory=StackPorts)
    env: dict[str, str] = field(default_factory=dict)
    replicas: int = 1
    check_timeout_ms: int = 500
    max_request_bytes: int = 1048576
    start_upstream: bool = True
    upstream: subprocess.Popen | None = None
    checks: list[CheckProcess] = field(default_factory=list)
    envoy: EnvoyProcess | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.ports.listen}"

    @property
    def upstream_url(self) -> str:
        return f"http://127.0.0.1:{self.ports.upstream}"

    def service_env(self) -> dict[str, str]:
        return {
            "TESSERA_VAR_DIR": str(self.workdir),
            "TESSERA_HOST": "127.0.0.1",
            **self.env,
        }

    def start(self) -> Stack:
        self.workdir.mkdir(parents=True, exist_ok=True)
        try:
            if self.start_upstream:
                self.upstream = spawn(
                    [
                        sys.executable,
                        "-m",
                        "authz.demo",
                        "--host",
                        "127.0.0.1",
                        "--port",
                        str(self.ports.upstream),
                    ],
                    log=self.workdir / "upstream.log",
                )
            for index in range(self.replicas):
                check_port = self.ports.check if index == 0 else free_port()
                metrics_port = self.ports.metrics if index == 0 else free_port()
                env = self.service_env() | {
                    "TESSERA_CHECK_PORT": str(check_port),
                    "TESSERA_METRICS_PORT": str(metrics_port),
                    "TESSERA_ADMIN_PORT": str(self.ports.admin if index == 0 else free_port()),
                }
                replica = CheckProcess(check_port, metrics_port, env, self.workdir / f"check-{index}.log")
                replica.start()
                self.checks.append(replica)
            config_path = self.workdir / "envoy.yaml"
            config_path.write_text(
                render_envoy_config(
                    listen_port=self.ports.listen,
                    admin_port=self.ports.envoy_admin,
                    check_endpoints=[("127.0.0.1", c.port) for c in self.checks]
                    or [("127.0.0.1", self.ports.check)],
                    upstream=("127.0.0.1", self.ports.upstream),
                    check_timeout_ms=self.check_timeout_ms,
                    max_request_bytes=self.max_request_bytes,
                )
            )
            self.envoy = EnvoyProcess(
                config_path, admin_port=self.ports.envoy_admin, log_path=self.workdir / "envoy.log"
            )
            self.envoy.start()
            self.envoy.wait_ready(30)
            if self.upstream is not None:
                wait_http(f"{self.upstream_url}/healthz", 30, self.upstream, "demo upstream")
        except BaseException:
            self.stop()
            raise
        return self

    def stop(self) -> None:
        if self.envoy is not None:
            self.envoy.stop()
        for replica in self.checks:
            replica.stop()
        stop_process(self.upstream)

    def __enter__(self) -> Stack:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()


@contextlib.contextmanager
def running_stack(workdir: Path, **kwargs: object) -> Iterator[Stack]:
    stack = Stack(workdir, **kwargs)  # type: ignore[arg-type]
    with stack:
        yield stack
