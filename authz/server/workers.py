"""Several check processes on one port (``TESSERA_CHECK_WORKERS=N``), and the supervisor that runs them.

One Python process spends most of a check in the event loop and gRPC's C core, on one core. With N
workers the supervisor (``tessera serve``) prepares the store once (migrations, the tenants file), then
starts N ``python -m authz.server.workers`` processes. Each binds the check port with ``SO_REUSEPORT``
(the kernel spreads *connections* over them), opens its own store connection and serves health and
metrics on ``TESSERA_METRICS_PORT + i``: one Prometheus target per worker, like any multi-replica
service, with no shared state between the processes.

What stays correct across processes is what the store already guarantees across replicas: an audit
append reads the tenant's chain head under the store's lock (SQLite: ``BEGIN IMMEDIATE`` on the one
database file; PostgreSQL: the head row ``FOR UPDATE``), budget reservations are atomic updates, and a
decision is answered only after its event committed, so killing a worker loses no committed event.

The supervisor restarts a worker that exits unexpectedly (after a short back-off) and stops all of them
on SIGTERM/SIGINT; a worker gets SIGTERM if the supervisor dies.
"""

from __future__ import annotations

import argparse
import asyncio
import dataclasses
import logging
import os
import signal
import subprocess
import sys
import time
from collections.abc import Mapping

from authz.config import TesseraConfig

log = logging.getLogger("tessera")

#: A worker that lived at least this long is restarted at once (see WorkerSupervisor.poll).
_HEALTHY_AFTER_S = 30.0
_MAX_BACKOFF_S = 10.0


def worker_env(config: TesseraConfig, env: Mapping[str, str], index: int) -> dict[str, str]:
    """The environment of worker ``index``: the supervisor's, with its resolved listen/store settings (so
    CLI flags reach the workers) and the worker's own metrics port."""
    return {
        **env,
        "TESSERA_CHECK_WORKERS": "1",
        "TESSERA_HOST": config.listen.host,
        "TESSERA_CHECK_PORT": str(config.listen.check_port),
        "TESSERA_METRICS_PORT": str(config.listen.metrics_port + index),
        "TESSERA_DATABASE_URL": config.store.database_url,
        "TESSERA_VAR_DIR": str(config.var_dir),
        "TESSERA_LOG_LEVEL": logging.getLevelName(logging.getLogger().getEffectiveLevel()),
    }


async def _prepare(config: TesseraConfig) -> None:
    """Migrations and the tenants file, once, before any worker starts (N processes applying the same
    file at once would race on its versions)."""
    import functools

    from authz.policy import compile_policy
    from authz.storage import open_store
    from authz.tenants import apply_tenants_file

    store = open_store(config.store.database_url)
    try:
        if config.tenants_file is not None:
            validate = functools.partial(compile_policy, engine=config.check.policy_engine)
            for change in await apply_tenants_file(store, config.tenants_file, validate_policy=validate):
                log.info("%s", change)
    finally:
        await store.close()


class WorkerSupervisor:
    """Starts ``count`` worker processes, restarts those that die, stops them all on :meth:`stop`."""

    def __init__(self, config: TesseraConfig, env: Mapping[str, str], count: int):
        self._config = config
        self._env = dict(env)
        self._count = count
        self._procs: list[subprocess.Popen | None] = [None] * count
        self._started = [0.0] * count
        self._backoff = [0.0] * count
        self._died: list[float | None] = [None] * count
        self._stopping = False
        self.restarts = 0

    def _spawn(self, index: int) -> None:
        from authz.local.envoy_config import die_with_parent

        args = die_with_parent([sys.executable, "-m", "authz.server.workers", "--index", str(index)])
        self._procs[index] = subprocess.Popen(args, env=worker_env(self._config, self._env, index))
        self._started[index] = time.monotonic()

    def start(self) -> None:
        for index in range(self._count):
            self._spawn(index)

    def poll(self) -> None:
        """Restart every worker that exited (unless stopping); call it periodically. A worker that died
        within :data:`_HEALTHY_AFTER_S` of its start waits a back-off (0.5 s, doubling up to
        :data:`_MAX_BACKOFF_S`) before its restart, so one that cannot start does not spin."""
        now = time.monotonic()
        for index, proc in enumerate(self._procs):
            if self._stopping or proc is None or proc.poll() is None:
                continue
            if self._died[index] is None:
                self._died[index] = now
                lived = now - self._started[index]
                if lived >= _HEALTHY_AFTER_S:
                    self._backoff[index] = 0.0
                else:
                    self._backoff[index] = min(_MAX_BACKOFF_S, max(0.5, self._backoff[index] * 2))
                log.warning(
                    "check worker %d (pid %d) exited with code %s; restarting in %.1f s",
                    index,
                    proc.pid,
                    proc.returncode,
                    self._backoff[index],
                )
            if now - self._died[index] < self._backoff[index]:
                continue
            self._died[index] = None
            self.restarts += 1
            self._spawn(index)

    def stop(self, timeout: float = 10.0) -> None:
        """SIGTERM to every worker (each drains its in-flight checks and flushes its audit), then SIGKILL
        to those still running after ``timeout``."""
        self._stopping = True
        live = [proc for proc in self._procs if proc is not None and proc.poll() is None]
        for proc in live:
            proc.terminate()
        deadline = time.monotonic() + timeout
        for proc in live:
            try:
                proc.wait(max(0.0, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()


def serve_workers(config: TesseraConfig, env: Mapping[str, str]) -> int:
    """``tessera serve`` with ``TESSERA_CHECK_WORKERS`` > 1: prepare the store, run the workers until
    SIGTERM/SIGINT."""
    asyncio.run(_prepare(config))
    supervisor = WorkerSupervisor(config, env, config.check.workers)
    stop = False

    def on_signal(signum, frame) -> None:
        nonlocal stop
        stop = True

    signal.signal(signal.SIGTERM, on_signal)
    signal.signal(signal.SIGINT, on_signal)
    supervisor.start()
    log.info(
        "check service: %d workers on %s:%s (metrics on :%d-%d)",
        config.check.workers,
        config.listen.host,
        config.listen.check_port,
        config.listen.metrics_port,
        config.listen.metrics_port + config.check.workers - 1,
    )
    while not stop:
        supervisor.poll()
        time.sleep(0.2)
    log.info("check service stopping %d workers", config.check.workers)
    supervisor.stop()
    return 0


def _worker_main(argv: list[str] | None = None) -> int:
    import uvloop

    from authz import config as config_mod
    from authz.observability import configure_logging
    from authz.server.app import serve_check

    parser = argparse.ArgumentParser(prog="python -m authz.server.workers")
    parser.add_argument("--index", type=int, required=True)
    args = parser.parse_args(argv)
    scrubber = configure_logging(
        os.environ.get("TESSERA_LOG_LEVEL") or "INFO",
        (os.environ.get("TESSERA_LOG_FORMAT") or "json").lower(),
    )
    # The supervisor applied the tenants file already; the worker only reads the store.
    cfg = dataclasses.replace(config_mod.load(), tenants_file=None)
    scrubber.add(cfg.keys.master_key)
    log.info("check worker %d (pid %d) starting", args.index, os.getpid())
    uvloop.run(serve_check(cfg, reuse_port=True))
    return 0


if __name__ == "__main__":
    sys.exit(_worker_main())
