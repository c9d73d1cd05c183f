"""``python -m bench --json``: the headline figures the README and the notes quote, as one object."""

from __future__ import annotations

import json

from bench.__main__ import figures


def _row(rps: float, p50: float, p99: float, errors: int = 0) -> dict:
    return {"rps": rps, "p50": p50, "p99": p99, "errors": errors, "ok": int(rps)}


def test_figures_are_ratios_of_one_run_and_name_every_key_scripts_read():
    rows = [
        ("direct gRPC, no-op servicer, 32 in flight", _row(4000, 7.0, 9.0)),
        ("direct gRPC, Tessera pipeline, 32 in flight", _row(1000, 30.0, 40.0)),
        ("Envoy + no-op ext_authz, 32 in flight", _row(3000, 9.0, 12.0)),
        ("Envoy alone, 1 in flight", _row(6000, 0.1, 0.3)),
        ("Envoy + Tessera, 1 in flight", _row(500, 1.6, 3.5, errors=2)),
        ("Envoy + Tessera, 32 in flight", _row(900, 30.0, 55.0)),
    ]
    result = figures(rows, allows=1500, answered=1400)
    assert result["direct_ratio"] == 0.25 and result["envoy_ratio"] == 0.3
    assert result["added_p50_ms"] == 1.5 and result["p99_ms"] == 55.0
    assert result["errors"] == 2 and result["audited_equals_answered"] is True
    assert figures(rows, allows=10, answered=11)["audited_equals_answered"] is False
    assert json.loads(json.dumps(result)) == result  # printable as one JSON object


def test_postgres_rows_are_a_ratio_to_the_same_runs_no_op_floor_and_check_the_audit():
    from bench import pgrow

    rows = {
        "direct gRPC, no-op servicer, 32 in flight": _row(4000, 7.0, 9.0),
        pgrow.ROW_32: _row(800, 35.0, 60.0),
    }
    cpu = {"1": 700.0, "32": 80.0}
    result = pgrow.figures({"allows": 900, "answered": 900, "append_cpu_us": cpu}, rows)
    assert result == {
        "postgres_ratio": 0.2,
        "postgres_p99_ms_direct_32": 60.0,
        "postgres_audited_equals_answered": True,
        "postgres_append_cpu_us": cpu,
    }
    assert (
        "700 µs one at a time, 80 µs with 32 records gathered"
        in pgrow.report({"allows": 1, "answered": 1, "append_cpu_us": cpu})[1]
    )
    missing = {"allows": 899, "answered": 900, "append_cpu_us": cpu}
    assert pgrow.figures(missing, rows)["postgres_audited_equals_answered"] is False
    assert not pgrow.ok(missing) and "MISSING EVENTS" in pgrow.report(missing)[0]
    skipped = {"skipped": "PostgresNotInstalled: no initdb"}
    assert pgrow.ok(skipped) and "not measured" in pgrow.report(skipped)[0]
    assert "Tessera" not in pgrow.ROW_32 + pgrow.ROW_1  # kept out of the SQLite rows' audit count


def test_the_cpu_profile_reads_each_threads_cpu_and_reports_the_difference_per_request():
    import os
    import threading
    import time

    from bench.cpu_profile import report, thread_cpu_s

    pid, stop = os.getpid(), threading.Event()

    def busy():
        while not stop.is_set():
            sum(range(1000))

    worker = threading.Thread(target=busy)
    before = thread_cpu_s(pid)
    worker.start()
    try:
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:  # this thread works too, until both show a clock tick
            sum(range(100_000))
            after = thread_cpu_s(pid)
            if after[pid][1] > before[pid][1] and after.get(worker.native_id, ("", 0.0))[1] > 0:
                break
    finally:
        stop.set()
        worker.join()
    assert after[pid][1] > before[pid][1]  # the calling thread's CPU grew
    assert after[worker.native_id][1] > 0  # and the worker's is read from its own task entry
    lines = report(
        {"rps": 2000.0, "us": {"event loop thread": 300.0, "other python threads": 80.0}, "dso": {}},
        {"rps": 800.0, "us": {"event loop thread": 1000.0, "other python threads": 140.0}, "dso": {}},
    )
    assert lines[2].split() == ["event", "loop", "thread", "300", "1000", "+700"]
    assert lines[-1].split()[:5] == ["whole", "process", "380", "1140", "+760"]
    assert "(CPU ratio 0.33)" in lines[-1]


def test_worker_rows_open_several_connections_per_process_and_keep_the_in_flight_total():
    from bench.workers import CONNECTIONS_PER_PROCESS, connections

    assert connections(32, 1) == (1, 32)
    for workers in (2, 4):
        clients, streams = connections(32, workers)
        assert clients == workers * CONNECTIONS_PER_PROCESS  # each process likely gets some
        assert clients * streams == 32
    assert connections(1, 2) == (1, 1)  # fewer streams than processes: one connection
