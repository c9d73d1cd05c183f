"""A throwaway PostgreSQL cluster for tests: ``initdb`` into a temp dir, ``pg_ctl`` on a free loopback port.

Direct use::

    with PostgresCluster() as cluster:
        url = cluster.create_database()     # a fresh, empty database
        cluster.stop(); cluster.start()     # an outage, same port and data

From any test folder, in its ``conftest.py``::

    from tests.pg import pg_fixtures

    pg_cluster, pg_url = pg_fixtures()

``pg_cluster`` (session scope) is one cluster per test process, shared by every folder that asks for it;
``pg_url`` (function scope) is a fresh database on it, dropped after the test. When no PostgreSQL server
binaries are found the fixtures skip, unless ``TESSERA_PG_REQUIRED=1`` (then they fail).

Binaries: ``$TESSERA_PG_BINDIR``, else ``initdb``/``pg_ctl`` on ``PATH``, else Debian's
``/usr/lib/postgresql/<version>/bin`` (newest), else ``pg_config --bindir``. PostgreSQL refuses to run
as root: under root the cluster runs as ``$TESSERA_PG_USER``, else ``postgres``, else ``nobody``, in a
data directory that user owns. The data directory goes to ``$TESSERA_PG_TMPDIR``, else ``/dev/shm`` when it
has 1 GiB free, else the temp dir. Settings favour speed over durability (``fsync=off``): test data only.
Cleanup is certain: on exit, and by a watchdog process if the test process is killed (SIGKILL, timeout).
"""

from __future__ import annotations

import atexit
import contextlib
import glob
import json
import os
import pwd
import re
import shutil
import socket
import stat
import subprocess
import sys
import tempfile
import threading
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

SUPERUSER = "postgres"


# Run by the watchdog process (see PostgresCluster._start_watchdog) with one JSON argument.
_WATCHDOG = """
import json, shutil, subprocess, sys
spec = json.loads(sys.argv[1])
sys.stdin.buffer.read()  # EOF: the test process closed the pipe or died
subprocess.run([spec["pg_ctl"], "-D", spec["datadir"], "-m", "immediate", "-w", "stop"], env=spec["env"],
               user=spec["user"], group=spec["group"], extra_groups=[] if spec["user"] is not None else None,
               capture_output=True, timeout=60, check=False)
shutil.rmtree(spec["tmp"], ignore_errors=True)
"""


class PostgresNotInstalled(RuntimeError):
    """No PostgreSQL server binaries (``initdb``, ``pg_ctl``) on this machine."""


def find_bindir() -> Path:
    """The directory holding ``initdb`` and ``pg_ctl`` (see the module docstring for the search order)."""
    candidates: list[Path] = []
    if env := os.environ.get("TESSERA_PG_BINDIR"):
        candidates.append(Path(env))
    if initdb := shutil.which("initdb"):
        candidates.append(Path(initdb).parent)

    def version(path: str) -> tuple[int, ...]:
        return tuple(int(n) for n in re.findall(r"\d+", path))

    debian = sorted(glob.glob("/usr/lib/postgresql/*/bin/initdb"), key=version, reverse=True)
    candidates += [Path(p).parent for p in debian]
    if pg_config := shutil.which("pg_config"):
        with contextlib.suppress(OSError, subprocess.CalledProcessError):
            out = subprocess.run([pg_config, "--bindir"], capture_output=True, text=True, check=True).stdout
            candidates.append(Path(out.strip()))
    for path in candidates:
        if (path / "initdb").is_file() and (path / "pg_ctl").is_file():
            return path
    raise PostgresNotInstalled(
        "PostgreSQL server binaries (initdb, pg_ctl) not found; install Debian's 'postgresql' "
        "package or set TESSERA_PG_BINDIR"
    )


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _run_as() -> pwd.struct_passwd | None:
    """The unprivileged account to run PostgreSQL as when we are root; None when we are not root."""
    if os.geteuid() != 0:
        return None
    names = [os.environ.get("TESSERA_PG_USER"), "postgres", "nobody"]
    for name in filter(None, names):
        with contextlib.suppress(KeyError):
            return pwd.getpwnam(name)
    raise PostgresNotInstalled(
        "running as root and no unprivileged account (postgres, nobody) to run PostgreSQL"
    )


def _traversable_by(path: Path, account: pwd.struct_passwd) -> bool:
    """Whether ``account`` can reach ``path`` (search permission on every ancestor)."""
    for parent in path.resolve().parents:
        st = parent.stat()
        if st.st_uid == account.pw_uid:
            ok = st.st_mode & stat.S_IXUSR
        elif st.st_gid == account.pw_gid:
            ok = st.st_mode & stat.S_IXGRP
        else:
            ok = st.st_mode & stat.S_IXOTH
        if not ok:
            return False
    return True


def _default_base() -> str:
    """tmpfs when there is room (``CREATE DATABASE`` is ~10x faster than on a busy disk), else TMPDIR."""
    shm = "/dev/shm"
    with contextlib.suppress(OSError):
        st = os.statvfs(shm)
        if st.f_bavail * st.f_frsize >= 1 << 30 and os.access(shm, os.W_OK | os.X_OK):
            return shm
    return tempfile.gettempdir()


class PostgresCluster:
    """One throwaway cluster. ``start()`` on enter (``initdb`` the first time), ``cleanup()`` on exit.

    ``url`` names the cluster's ``postgres`` database; :meth:`create_database` makes isolated ones.
    The port is chosen once, so :meth:`stop` then :meth:`start` brings the same server back (outage tests).
    """

    def __init__(self, *, bindir: Path | None = None, settings: dict[str, Any] | None = None):
        self.bindir = bindir or find_bindir()
        self.host = "127.0.0.1"
        self.port = 0
        self.settings = dict(settings or {})
        self._account = _run_as()
        self._tmp: Path | None = None
        self._running = False
        self._lock = threading.Lock()
        self._counter = 0
        self._watchdog: subprocess.Popen[bytes] | None = None

    # -- paths and commands ----------------------------------------------------------------------------
    @property
    def datadir(self) -> Path:
        assert self._tmp is not None, "cluster not initialised"
        return self._tmp / "data"

    @property
    def logfile(self) -> Path:
        assert self._tmp is not None, "cluster not initialised"
        return self._tmp / "postgres.log"

    def url_for(self, database: str) -> str:
        return f"postgresql://{SUPERUSER}@{self.host}:{self.port}/{database}"

    @property
    def url(self) -> str:
        return self.url_for("postgres")

    def _user_env(self) -> tuple[dict[str, str], dict[str, Any]]:
        """Environment and ``subprocess`` user switch for PostgreSQL's own programs."""
        env = {k: v for k, v in os.environ.items() if not k.startswith("PG")}
        env.update(LC_ALL="C", LANG="C")
        kwargs: dict[str, Any] = {}
        if self._account is not None:
            kwargs = {"user": self._account.pw_uid, "group": self._account.pw_gid, "extra_groups": []}
            env["HOME"] = str(self._tmp)
        return env, kwargs

    def _run(self, *args: str | Path, timeout: float = 60) -> subprocess.CompletedProcess[str]:
        env, kwargs = self._user_env()
        # pg_ctl start detaches the server with its output sent to the log file (-l), so the pipes close.
        return subprocess.run(
            [str(a) for a in args],
            env=env,
            capture_output=True,
            text=True,
            timeout=timeout,
            check=False,
            **kwargs,
        )

    def _start_watchdog(self) -> None:
        """A helper process that stops the server and removes the files when this process goes away,
        however it goes (SIGKILL, a CI timeout): it waits for EOF on a pipe only this process holds."""
        env, kwargs = self._user_env()
        spec = json.dumps({
            "pg_ctl": str(self.bindir / "pg_ctl"), "datadir": str(self.datadir), "tmp": str(self._tmp),
            "env": env, "user": kwargs.get("user"), "group": kwargs.get("group"),
        })  # fmt: skip
        self._watchdog = subprocess.Popen(
            [sys.executable, "-c", _WATCHDOG, spec],
            stdin=subprocess.PIPE,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
            start_new_session=True,  # Ctrl-C in a terminal must not kill it before it has cleaned up
        )

    def _make_tmp(self) -> Path:
        base = Path(os.environ.get("TESSERA_PG_TMPDIR") or _default_base())
        if self._account is not None and not _traversable_by(base / "x", self._account):
            base = Path("/tmp")  # e.g. TMPDIR under /root, which the postgres account cannot enter
        tmp = Path(tempfile.mkdtemp(prefix="tessera-pg-", dir=base))
        if self._account is not None:
            os.chown(tmp, self._account.pw_uid, self._account.pw_gid)
            if not _traversable_by(tmp / "x", self._account):
                shutil.rmtree(tmp, ignore_errors=True)
                raise RuntimeError(
                    f"{tmp} is not reachable by {self._account.pw_name}; set TESSERA_PG_TMPDIR"
                )
        return tmp

    # -- lifecycle -------------------------------------------------------------------------------------
    def init(self) -> None:
        """``initdb`` a new cluster (trust auth, C locale, UTF8) into a fresh temp dir."""
        self._tmp = self._make_tmp()
        atexit.register(self.cleanup)
        self._start_watchdog()
        result = self._run(
            self.bindir / "initdb", "-D", self.datadir, "-U", SUPERUSER, "-A", "trust", "-E", "UTF8",
            "--no-locale", "--no-sync", "--no-instructions",
        )  # fmt: skip
        if result.returncode != 0:
            raise RuntimeError(f"initdb failed ({result.returncode}):\n{result.stdout}\n{result.stderr}")

    def _write_settings(self) -> None:
        # Unix socket in the temp dir when its path fits (107 bytes), otherwise TCP only.
        socket_dir = str(self._tmp) if len(str(self._tmp)) < 80 else ""
        settings: dict[str, Any] = {
            "listen_addresses": self.host,
            "port": self.port,
            "unix_socket_directories": socket_dir,
            "fsync": "off",
            "synchronous_commit": "off",
            "full_page_writes": "off",
            "max_connections": 200,
            "shared_buffers": "32MB",
            "max_wal_size": "256MB",
            "logging_collector": "off",
            "log_min_messages": "warning",
        }
        settings.update(self.settings)

        def quote(value: Any) -> str:
            return str(value) if isinstance(value, int) else "'" + str(value).replace("'", "''") + "'"

        lines = "".join(f"{key} = {quote(value)}\n" for key, value in settings.items())
        conf = self.datadir / "postgresql.conf"
        base = conf.read_text().split("# --- tessera tests ---\n")[0]
        conf.write_text(base + "# --- tessera tests ---\n" + lines)

    def start(self) -> None:
        """Start the server and wait until it accepts connections (``initdb`` first if needed)."""
        if self._tmp is None:
            self.init()
        if self._running:
            return
        attempts = 1 if self.port else 5  # a fresh port may be taken between probing and binding
        for _ in range(attempts):
            if not self.port or attempts > 1:
                self.port = free_port()
                self._write_settings()
            result = self._run(
                self.bindir / "pg_ctl", "-D", self.datadir, "-l", self.logfile, "-w", "-t", "60", "start"
            )
            if result.returncode == 0:
                self._running = True
                return
            if "could not bind" not in self._log_tail() and "in use" not in self._log_tail():
                break
        output = f"{result.stdout}\n{result.stderr}\n{self._log_tail()}"
        raise RuntimeError(f"pg_ctl start failed ({result.returncode}):\n{output}")

    def stop(self, mode: str = "fast") -> None:
        """Stop the server (``fast``: disconnect clients and shut down cleanly; ``immediate``: abort)."""
        if not self._running:
            return
        result = self._run(self.bindir / "pg_ctl", "-D", self.datadir, "-m", mode, "-w", "-t", "60", "stop")
        if result.returncode != 0 and self._is_running():
            raise RuntimeError(f"pg_ctl stop failed:\n{result.stdout}\n{result.stderr}")
        self._running = False

    def _is_running(self) -> bool:
        return self._run(self.bindir / "pg_ctl", "-D", self.datadir, "status").returncode == 0

    def cleanup(self) -> None:
        """Stop the server (if running) and remove every file. Idempotent."""
        if self._tmp is None:
            return
        with contextlib.suppress(Exception):
            if self._running or self._is_running():
                self._running = True
                self.stop("immediate")
        shutil.rmtree(self._tmp, ignore_errors=True)
        self._tmp = None
        atexit.unregister(self.cleanup)
        if self._watchdog is not None:
            watchdog, self._watchdog = self._watchdog, None
            watchdog.stdin.close()  # type: ignore[union-attr]  # nothing left for it to do: let it exit
            with contextlib.suppress(subprocess.TimeoutExpired):
                watchdog.wait(timeout=10)

    def _log_tail(self, lines: int = 30) -> str:
        try:
            return "\n".join(self.logfile.read_text(errors="replace").splitlines()[-lines:])
        except OSError:
            return ""

    def __enter__(self) -> PostgresCluster:
        try:
            self.start()
        except BaseException:
            self.cleanup()
            raise
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.cleanup()

    # -- databases -------------------------------------------------------------------------------------
    def execute(self, sql: str, database: str = "postgres") -> None:
        """Run one statement as the superuser, in autocommit mode."""
        import psycopg  # here, so that importing this helper needs no PostgreSQL driver

        with psycopg.connect(self.url_for(database), autocommit=True, connect_timeout=10) as conn:
            conn.execute(sql)  # type: ignore[arg-type]

    def create_database(self, name: str | None = None) -> str:
        """Create an empty database (a copy of ``template0``) and return its URL."""
        with self._lock:
            self._counter += 1
            name = name or f"t{self._counter}_{uuid.uuid4().hex[:8]}"
        if not re.fullmatch(r"[a-z_][a-z0-9_]*", name):
            raise ValueError(f"unsafe database name {name!r}")
        # FILE_COPY (PostgreSQL 15+) copies the template's files instead of WAL-logging every block:
        # about twice as fast for a tiny template, and durability does not matter here.
        strategy = " STRATEGY FILE_COPY" if self.server_version() >= 150000 else ""
        self.execute(f"CREATE DATABASE {name} TEMPLATE template0{strategy}")
        return self.url_for(name)

    def drop_database(self, name_or_url: str) -> None:
        """Drop a database, disconnecting whoever is still connected to it."""
        name = name_or_url.rsplit("/", 1)[-1].split("?")[0]
        if not re.fullmatch(r"[a-z_][a-z0-9_]*", name):
            raise ValueError(f"unsafe database name {name!r}")
        self.execute(f"DROP DATABASE IF EXISTS {name} WITH (FORCE)")

    def server_version(self) -> int:
        import psycopg

        with psycopg.connect(self.url, autocommit=True, connect_timeout=10) as conn:
            return conn.info.server_version


# -- one cluster per test process, shared by every folder's fixtures ------------------------------------
_shared_lock = threading.Lock()
_shared: PostgresCluster | None = None
_shared_users = 0


def acquire_shared_cluster() -> PostgresCluster:
    """The process-wide test cluster, started on first use; pair with :func:`release_shared_cluster`."""
    global _shared, _shared_users
    with _shared_lock:
        if _shared is None:
            cluster = PostgresCluster()
            cluster.__enter__()
            _shared = cluster
        _shared_users += 1
        return _shared


def release_shared_cluster() -> None:
    """Drop one user of the shared cluster; the last one stops and removes it."""
    global _shared, _shared_users
    with _shared_lock:
        _shared_users -= 1
        if _shared_users <= 0 and _shared is not None:
            _shared.cleanup()
            _shared, _shared_users = None, 0


def pg_fixtures(cluster_name: str = "pg_cluster", url_name: str = "pg_url") -> tuple[Callable, Callable]:
    """Make the ``pg_cluster`` (session) and ``pg_url`` (fresh database per test) fixtures.

    Bind both results to module names in a ``conftest.py`` so pytest finds them.
    """
    import pytest  # the helper itself stays importable without pytest

    @pytest.fixture(scope="session", name=cluster_name)
    def _cluster() -> Iterator[PostgresCluster]:
        try:
            cluster = acquire_shared_cluster()
        except PostgresNotInstalled as exc:
            if os.environ.get("TESSERA_PG_REQUIRED") == "1":
                pytest.fail(str(exc))
            pytest.skip(str(exc))
        try:
            yield cluster
        finally:
            release_shared_cluster()

    @pytest.fixture(name=url_name)
    def _url(request: pytest.FixtureRequest) -> Iterator[str]:
        cluster: PostgresCluster = request.getfixturevalue(cluster_name)
        url = cluster.create_database()
        yield url
        if cluster._running:
            with contextlib.suppress(Exception):  # best effort: the whole cluster goes at session end
                cluster.drop_database(url)

    return _cluster, _url
