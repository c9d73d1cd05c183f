"""The whole local stack as child processes: demo MCP server, check service(s), admin service, Envoy.

``tessera run`` (``make run``) uses it with the default ports; the integration tests use it with free
ports and a temporary directory. Every child is stopped when the stack stops (and with the parent:
children get SIGTERM from a parent-death signal where Linux offers it).
"""

from __future__ import annotations

import contextlib
import os
import random
import secrets
import socket
import subprocess
import sys
import time
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path

import httpx

from authz.local.envoy_config import JSON_LOG_FORMAT, EnvoyProcess, die_with_parent, render_envoy_config
from authz.local.envoy_oauth import TokenRateLimit


def free_port() -> int:
    """A loopback port that is free now, for a server started next.

    Chosen below the kernel's ephemeral range: a port the kernel hands out for port 0 is also the next
    source port of some outgoing connection, which can take it before the server binds (seen as Envoy's
    "Address already in use" on a busy machine). Ports already handed out by this process are skipped.
    """
    low = _ephemeral_low()
    if low > 12_000:
        for _ in range(200):
            port = random.randrange(10_000, low)
            if port in _handed_out:
                continue
            with socket.socket() as sock:
                try:
                    sock.bind(("127.0.0.1", port))
                except OSError:
                    continue
            _handed_out.add(port)
            return port
    with socket.socket() as sock:  # no room below the ephemeral range: let the kernel choose
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


_handed_out: set[int] = set()


def free_port_run(count: int) -> int:
    """The first of ``count`` consecutive free loopback ports (check workers serve metrics on base + i)."""
    for _ in range(100):
        base = free_port()
        try:
            for port in range(base + 1, base + count):
                if port in _handed_out:
                    raise OSError(f"port {port} already handed out")
                with socket.socket() as sock:
                    sock.bind(("127.0.0.1", port))
        except OSError:
            continue
        _handed_out.update(range(base, base + count))
        return base
    raise OSError(f"no run of {count} free ports")


def child_pids(pid: int) -> list[int]:
    """The direct children of process ``pid`` (Linux /proc): a check supervisor's workers."""
    try:
        return [int(child) for child in Path(f"/proc/{pid}/task/{pid}/children").read_text().split()]
    except OSError:
        return []


def _ephemeral_low() -> int:
    try:
        return int(Path("/proc/sys/net/ipv4/ip_local_port_range").read_text().split()[0])
    except (OSError, ValueError, IndexError):
        return 0


def spawn(
    args: list[str], *, env: Mapping[str, str] | None = None, log: Path | None = None
) -> subprocess.Popen:
    out = open(log, "ab") if log is not None else subprocess.DEVNULL  # noqa: SIM115 (lives with the child)
    return subprocess.Popen(
        die_with_parent(args),  # SIGTERM when the parent goes, without a fork (see die_with_parent)
        env={**os.environ, **(env or {})},
        stdout=out,
        stderr=subprocess.STDOUT,
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
    admin_metrics: int = 9465

    @classmethod
    def free(cls) -> StackPorts:
        return cls(*(free_port() for _ in range(7)))


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


def wait_listening(
    port: int, timeout: float = 30.0, proc: subprocess.Popen | None = None, what: str = ""
) -> None:
    """Until something accepts connections on 127.0.0.1:``port``: a process just spawned is not yet
    listening, and a request sent then fails (or, through Envoy, comes back 503)."""
    deadline = time.monotonic() + timeout
    while True:
        try:
            socket.create_connection(("127.0.0.1", port), timeout=1).close()
            return
        except OSError as exc:
            if proc is not None and proc.poll() is not None:
                code = proc.returncode
                raise RuntimeError(f"{what or port} exited with code {code} before it listened") from exc
            if time.monotonic() > deadline:
                raise TimeoutError(f"{what or port} not listening after {timeout}s") from exc
            time.sleep(0.1)


def wait_grpc_health(port: int, timeout: float, proc: subprocess.Popen | None = None, what: str = "") -> None:
    """Wait until ``grpc.health.v1`` on 127.0.0.1:``port`` answers SERVING (overall status)."""
    import grpc
    from grpc_health.v1 import health_pb2, health_pb2_grpc

    deadline = time.monotonic() + timeout
    last: Exception | None = None
    with grpc.insecure_channel(f"127.0.0.1:{port}") as channel:
        stub = health_pb2_grpc.HealthStub(channel)
        while time.monotonic() < deadline:
            if proc is not None and proc.poll() is not None:
                raise RuntimeError(f"{what or port} exited with code {proc.returncode} before it was ready")
            try:
                answer = stub.Check(health_pb2.HealthCheckRequest(), timeout=0.5)
                if answer.status == health_pb2.HealthCheckResponse.SERVING:
                    return
            except grpc.RpcError as exc:
                last = exc
            time.sleep(0.05)
    raise TimeoutError(f"{what or port} not ready after {timeout}s ({last})")


@dataclass
class AdminProcess:
    """The admin service (``tessera serve-admin``): gRPC on ``port``, REST through Envoy."""

    port: int
    env: dict[str, str]
    log: Path
    proc: subprocess.Popen | None = None

    def spawn(self) -> None:
        self.proc = spawn([sys.executable, "-m", "authz.cli", "serve-admin"], env=self.env, log=self.log)

    def wait_ready(self, timeout: float = 30.0) -> None:
        wait_grpc_health(self.port, timeout, self.proc, "admin service")

    def start(self, timeout: float = 30.0) -> None:
        self.spawn()
        self.wait_ready(timeout)

    def stop(self) -> None:
        stop_process(self.proc)


@dataclass
class ConsoleProcess:
    """The operator console (``tessera serve-console``): HTTP on ``port``, reached through Envoy."""

    port: int
    env: dict[str, str]
    log: Path
    proc: subprocess.Popen | None = None

    def start(self, timeout: float = 30.0) -> None:
        self.proc = spawn([sys.executable, "-m", "authz.cli", "serve-console"], env=self.env, log=self.log)
        wait_http(f"http://127.0.0.1:{self.port}/console/healthz", timeout, self.proc, "console")

    def stop(self) -> None:
        stop_process(self.proc)


@dataclass
class Stack:
    """Demo upstream + N check replicas + the admin service + Envoy, sharing one database and master key.

    The admin service gets ``TESSERA_BOOTSTRAP_ADMIN_KEY`` from ``env`` (or the environment); when
    neither has one, the stack makes one up, so the first admin key of a fresh database is
    :attr:`admin_key` and is never printed to the admin service's log.
    """

    workdir: Path
    ports: StackPorts = field(default_factory=StackPorts)
    env: dict[str, str] = field(default_factory=dict)
    replicas: int = 1
    check_timeout_ms: int = 500
    max_request_bytes: int = 1048576
    #: Where Envoy sends its spans (OTLP/gRPC host, port); None renders the config without tracing.
    otlp_endpoint: tuple[str, int] | None = None
    start_upstream: bool = True
    start_admin: bool = True
    #: Extra command-line arguments of the demo upstream (``--sse``, ``--slow-tool``).
    upstream_args: tuple[str, ...] = ()
    #: The demo upstream refuses requests without a Tessera receipt (keys from the gateway's
    #: /v1/admin/receipt-keys; needs the admin service).
    upstream_receipts: bool = True
    #: Browser origins allowed by CORS (None: the shipped list) and the MCP stream idle timeout.
    cors_origins: list[str] | None = None
    mcp_idle_timeout_ms: int | None = None
    #: OAuth resource-server mode: the issuers named in the protected-resource metadata (None: off).
    oauth_authorization_servers: list[str] | None = None
    #: OAuth mode per tenant: ``{tenant: (resource URL, [issuer, ...])}`` (see render_envoy_config).
    oauth_tenants: dict[str, tuple[str, list[str]]] | None = None
    #: Where Envoy's list processor (ext_proc) runs; None: on the check replicas.
    list_endpoints: list[tuple[str, int]] | None = None
    #: More MCP tool servers behind the listener, at /v1/mcp/<name> (started by the caller).
    mcp_servers: dict[str, tuple[str, int]] | None = None
    #: The operator console's own settings (TESSERA_OIDC_*, TESSERA_CONSOLE_*); None: no console.
    #: The admin service gets the TESSERA_OIDC_* ones too, to accept the console's users.
    console_env: dict[str, str] | None = None
    console: ConsoleProcess | None = None
    #: The token endpoint's per-address rate limit; None: TESSERA_OAUTH_TOKEN_RATE_LIMIT of ``env``
    #: (or the process environment), else the default.
    oauth_token_rate_limit: TokenRateLimit | None = None
    upstream: subprocess.Popen | None = None
    checks: list[CheckProcess] = field(default_factory=list)
    admin: AdminProcess | None = None
    envoy: EnvoyProcess | None = None
    admin_key: str | None = None

    @property
    def admin_address(self) -> str:
        """host:port of the admin service's gRPC listener."""
        return f"127.0.0.1:{self.ports.admin}"

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
            # Everything of the local stack, demo webhook receivers and extractors included, is on
            # loopback: allow it explicitly, but keep Envoy's own listener and admin ports refused.
            "TESSERA_OUTBOUND_ALLOW": "127.0.0.0/8,::1",
            "TESSERA_OUTBOUND_REFUSED_PORTS": f"{self.ports.listen},{self.ports.envoy_admin}",
            # the demo tenant derives its intent catalog from this stack's own demo MCP server
            "TESSERA_DEMO_UPSTREAM_URL": self.upstream_url,
            **self.env,
        }

    def _receipt_args(self) -> tuple[str, ...]:
        if not (self.upstream_receipts and self.start_admin):
            return ()
        return ("--require-receipts", f"{self.url}/v1/admin/receipt-keys")

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
                        *self.upstream_args,
                        *self._receipt_args(),
                    ],
                    log=self.workdir / "upstream.log",
                )
            if self.start_admin:  # starts while the check replicas start; waited for below
                self.admin_key = (
                    self.env.get("TESSERA_BOOTSTRAP_ADMIN_KEY")
                    or os.environ.get("TESSERA_BOOTSTRAP_ADMIN_KEY")
                    or f"tsk_{secrets.token_hex(6)}_{secrets.token_urlsafe(32)}"
                )
                self.admin = AdminProcess(
                    self.ports.admin,
                    self.service_env()
                    | {
                        "TESSERA_ADMIN_PORT": str(self.ports.admin),
                        "TESSERA_ADMIN_METRICS_PORT": str(self.ports.admin_metrics),
                        "TESSERA_BOOTSTRAP_ADMIN_KEY": self.admin_key,
                    }
                    | {k: v for k, v in (self.console_env or {}).items() if k.startswith("TESSERA_OIDC_")},
                    self.workdir / "admin.log",
                )
                self.admin.spawn()
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
            if self.admin is not None:
                self.admin.wait_ready()
            if self.console_env is not None:
                port = free_port()
                self.console = ConsoleProcess(
                    port,
                    self.service_env()
                    | {
                        "TESSERA_CONSOLE_PORT": str(port),
                        "TESSERA_CONSOLE_ADMIN_ADDRESS": self.admin_address,
                        "TESSERA_CONSOLE_PUBLIC_URL": self.url,
                    }
                    | self.console_env,
                    self.workdir / "console.log",
                )
                self.console.start()
            config_path = self.workdir / "envoy.yaml"
            config_path.write_text(
                render_envoy_config(
                    listen_port=self.ports.listen,
                    admin_port=self.ports.envoy_admin,
                    check_endpoints=[("127.0.0.1", c.port) for c in self.checks]
                    or [("127.0.0.1", self.ports.check)],
                    upstream=("127.0.0.1", self.ports.upstream),
                    admin_endpoints=[("127.0.0.1", self.ports.admin)],
                    check_timeout_ms=self.check_timeout_ms,
                    max_request_bytes=self.max_request_bytes,
                    otlp_endpoint=self.otlp_endpoint,
                    list_endpoints=self.list_endpoints,
                    cors_origins=self.cors_origins,
                    mcp_idle_timeout_ms=self.mcp_idle_timeout_ms,
                    mcp_servers=self.mcp_servers,
                    oauth_resource=f"{self.url}/v1/mcp" if self.oauth_authorization_servers else None,
                    oauth_authorization_servers=self.oauth_authorization_servers or (),
                    oauth_tenants=self.oauth_tenants,
                    console_endpoint=("127.0.0.1", self.console.port) if self.console else None,
                    oauth_token_rate_limit=self.oauth_token_rate_limit
                    or TokenRateLimit.from_env({**os.environ, **self.env}),
                )
            )
            self.envoy = EnvoyProcess(
                config_path,
                admin_port=self.ports.envoy_admin,
                log_path=self.workdir / "envoy.log",
                extra_args=("--log-format", JSON_LOG_FORMAT),
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
        if self.console is not None:
            self.console.stop()
        if self.admin is not None:
            self.admin.stop()
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
