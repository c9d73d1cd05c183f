"""TESSERA_CHECK_WORKERS: parsing, and what each worker process is told (its own metrics port)."""

from __future__ import annotations

import pytest

from authz import config
from authz.errors import ConfigError
from authz.server.app import grpc_server_options
from authz.server.workers import worker_env

BASE = {"TESSERA_MASTER_KEY": "unit-test-master-key-0123456789abcdef0123456"}


def test_one_worker_by_default_and_at_least_one(tmp_path):
    env = BASE | {"TESSERA_VAR_DIR": str(tmp_path)}
    assert config.load(env).check.workers == 1
    assert config.load(env | {"TESSERA_CHECK_WORKERS": "4"}).check.workers == 4
    with pytest.raises(ConfigError):
        config.load(env | {"TESSERA_CHECK_WORKERS": "0"})


def test_each_worker_gets_the_shared_check_port_and_its_own_metrics_port(tmp_path):
    cfg = config.load(
        BASE | {"TESSERA_VAR_DIR": str(tmp_path), "TESSERA_CHECK_WORKERS": "3"},
        check_port=7001,
        metrics_port=7100,
        database_url=f"sqlite:///{tmp_path / 'x.db'}",
    )
    envs = [worker_env(cfg, {"OTHER": "kept"}, index) for index in range(3)]
    assert [e["TESSERA_METRICS_PORT"] for e in envs] == ["7100", "7101", "7102"]
    assert {e["TESSERA_CHECK_PORT"] for e in envs} == {"7001"}
    assert {e["TESSERA_CHECK_WORKERS"] for e in envs} == {"1"}  # a worker never supervises
    assert {e["TESSERA_DATABASE_URL"] for e in envs} == {f"sqlite:///{tmp_path / 'x.db'}"}
    assert all(e["OTHER"] == "kept" for e in envs)


def test_only_workers_bind_with_so_reuseport():
    # A single check process must fail to start on a port already in use, not share it silently.
    assert dict(grpc_server_options())["grpc.so_reuseport"] == 0
    assert dict(grpc_server_options(reuse_port=True))["grpc.so_reuseport"] == 1


def test_a_worker_that_keeps_dying_is_restarted_with_a_growing_back_off(tmp_path, monkeypatch):
    import subprocess
    import sys
    import time

    from authz.server import workers

    cfg = config.load(BASE | {"TESSERA_VAR_DIR": str(tmp_path), "TESSERA_CHECK_WORKERS": "2"})
    supervisor = workers.WorkerSupervisor(cfg, {}, 1)
    spawned: list[float] = []

    def spawn_failing(index: int) -> None:  # a real process that exits at once, as a broken worker would
        supervisor._procs[index] = subprocess.Popen([sys.executable, "-S", "-c", "raise SystemExit(3)"])
        supervisor._started[index] = time.monotonic()
        spawned.append(time.monotonic())

    monkeypatch.setattr(supervisor, "_spawn", spawn_failing)
    supervisor.start()
    deadline = time.monotonic() + 30.0  # bounded; under no load three starts take about 1.6 s
    while len(spawned) < 3 and time.monotonic() < deadline:
        supervisor.poll()
        time.sleep(0.02)
    supervisor.stop()
    assert len(spawned) == 3, spawned
    # Each restart waited at least its back-off, and the back-off doubled (0.5 s, then 1 s): without
    # it the supervisor would restart every 20 ms poll.
    first, second = spawned[1] - spawned[0], spawned[2] - spawned[1]
    assert first >= 0.5 and second >= 1.0, (first, second)
    assert supervisor.restarts == 2
