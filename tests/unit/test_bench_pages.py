"""The benchmark's SQLite I/O figure: pages one committed audit append writes (bench/scaling.py)."""

from __future__ import annotations

from pathlib import Path

from bench.scaling import sqlite_hold_ms, sqlite_pages_per_commit
from tests.unit.test_audit_recorder import decision


async def test_a_committed_append_writes_one_page_per_btree_it_touches(tmp_path: Path):
    # audit_events (table, primary-key index, time index, agent index) and audit_heads: five B-trees,
    # each writing its rightmost leaf, plus the occasional split. A new index or a wider row shows here.
    pages = await sqlite_pages_per_commit(decision(0), tmp_path, commits=200)
    assert 5.0 <= pages < 7.0, pages


async def test_the_sqlite_hold_row_times_the_transaction_and_is_positive(tmp_path: Path):
    # It once subtracted a separately timed canonical-JSON pass from the whole append and printed a
    # negative hold; the batch of 32 writes more than the single event, so it holds the lock longer.
    holds = await sqlite_hold_ms(decision(0), tmp_path)
    assert set(holds) == {1, 32}
    assert 0 < holds[1] < holds[32], holds
