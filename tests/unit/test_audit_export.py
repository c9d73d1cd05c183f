"""Streaming export (NDJSON, CSV) with filters, and the ``tessera audit`` commands."""

from __future__ import annotations

import argparse
import csv
import hashlib
import io
import json
from datetime import UTC, datetime
from pathlib import Path

import pytest

from authz.audit import CSV_COLUMNS, GATEWAY_TENANT, ChainRecorder, export_events, iter_audit_events
from authz.audit.cli import add_audit_commands, parse_time
from authz.check.models import Check, Decision, Outcome, new_decision_id
from authz.errors import InvalidArgument
from authz.secrets import Secret
from authz.storage.sqlite import SQLiteStore
from authz.token import KeyRing
from tests.sqlite_raw import raw_sqlite

T0 = 1_767_225_600_000  # 2026-01-01T00:00:00Z in ms


def decision(outcome: Outcome, tenant: str | None, agent: str | None, tool: str = "send_email") -> Decision:
    check = {Outcome.ALLOW: None, Outcome.DENY: Check.POLICY, Outcome.ESCALATE: Check.APPROVAL}[outcome]
    return Decision(
        decision_id=new_decision_id(),
        outcome=outcome,
        check=check,
        reason="" if outcome is Outcome.ALLOW else '=HYPERLINK("http://evil")',
        tenant=tenant,
        agent=agent,
        tool=tool,
        argument_keys=("to",),
        arguments_sha256="11" * 32,
    )


async def fill(store: SQLiteStore) -> list[tuple[int, Decision]]:
    """36 decisions, one per minute from T0: tenants acme/globex/gateway, agents a0..a2, all outcomes."""
    times = iter(range(T0, T0 + 36 * 60_000, 60_000))
    recorder = ChainRecorder(store, clock_ms=lambda: next(times))
    made = []
    for i in range(36):
        tenant = ("acme", "globex", None)[i % 3]
        d = decision(
            (Outcome.ALLOW, Outcome.DENY, Outcome.ESCALATE)[i % 4 % 3],
            tenant,
            f"a{i % 2}" if tenant else None,
        )
        await recorder.record([d])
        made.append((T0 + i * 60_000, d))
    return made


@pytest.fixture
async def store(tmp_path: Path):
    s = SQLiteStore(tmp_path / "audit.db")
    await fill(s)
    yield s
    await s.close()


async def ndjson(store, **filters) -> list[dict]:
    out = io.StringIO()
    count = await export_events(store, out, format="ndjson", batch=4, **filters)
    lines = out.getvalue().splitlines()
    assert len(lines) == count
    return [json.loads(line) for line in lines]


async def test_ndjson_exports_every_event_verbatim_and_reverifiable(store):
    rows = await ndjson(store)
    assert len(rows) == 36
    assert [(r["tenant"], r["seq"]) for r in rows[:2]] == [(GATEWAY_TENANT, 1), (GATEWAY_TENANT, 2)]
    for row in rows:  # the export alone is enough to recompute each hash
        canonical = json.dumps(
            row["event"], sort_keys=True, separators=(",", ":"), ensure_ascii=False
        ).encode()
        assert hashlib.sha256(bytes.fromhex(row["prev_hash"]) + canonical).hexdigest() == row["hash"]
        assert row["event"]["class_uid"] == 6003


async def test_ndjson_filters(store):
    assert {r["tenant"] for r in await ndjson(store, tenant="acme")} == {"acme"}
    assert len(await ndjson(store, tenant="acme")) == 12
    by_agent = await ndjson(store, agent="a1")
    assert by_agent and {r["event"]["tessera"]["agent"] for r in by_agent} == {"a1"}
    denies = await ndjson(store, decision="deny")
    assert denies and {r["event"]["tessera"]["decision"] for r in denies} == {"deny"}
    since = datetime.fromtimestamp((T0 + 10 * 60_000) / 1000, UTC)
    window = await ndjson(store, since=since, until=T0 + 20 * 60_000)
    assert sorted(r["event"]["time"] for r in window) == [T0 + i * 60_000 for i in range(10, 20)]
    combined = await ndjson(
        store, tenant="globex", decision="allow", agent="a0", since=T0, until=T0 + 36 * 60_000
    )
    assert combined and all(
        (r["tenant"], r["event"]["tessera"]["decision"], r["event"]["tessera"]["agent"])
        == ("globex", "allow", "a0")
        for r in combined
    )
    assert await ndjson(store, since=T0 + 999 * 60_000) == []
    assert await ndjson(store, tenant="nobody") == []


async def test_csv_has_fixed_columns_and_defuses_formulas(store):
    out = io.StringIO()
    count = await export_events(store, out, format="csv", tenant="acme", decision="deny")
    rows = list(csv.reader(io.StringIO(out.getvalue())))
    assert tuple(rows[0]) == CSV_COLUMNS
    assert len(rows) - 1 == count and count > 0
    record = dict(zip(CSV_COLUMNS, rows[1], strict=True))
    assert record["tenant"] == "acme" and record["decision"] == "deny" and record["check"] == "policy"
    assert record["code"] == "-32012" and record["tool"] == "send_email" and len(record["hash"]) == 64
    assert record["time"].startswith("2026-01-01T00:") and record["time"].endswith("Z")
    assert record["reason"].startswith("'=HYPERLINK")  # not evaluated by a spreadsheet


async def test_csv_filters(store):
    for filters, check in [
        ({"agent": "a0"}, lambda r: r["agent"] == "a0"),
        ({"decision": "escalate"}, lambda r: r["decision"] == "escalate"),
        ({"tenant": GATEWAY_TENANT}, lambda r: r["tenant"] == GATEWAY_TENANT and r["agent"] == ""),
        ({"since": T0 + 30 * 60_000}, lambda r: r["time"] >= "2026-01-01T00:30:00.000Z"),
    ]:
        out = io.StringIO()
        await export_events(store, out, format="csv", **filters)
        rows = [
            dict(zip(CSV_COLUMNS, row, strict=True))
            for row in list(csv.reader(io.StringIO(out.getvalue())))[1:]
        ]
        assert rows and all(check(r) for r in rows), filters


async def test_export_streams_in_batches(store):
    class Sink:
        def __init__(self):
            self.writes = []

        def write(self, text):
            self.writes.append(text)

    sink = Sink()
    assert await export_events(store, sink, batch=5) == 36
    assert len(sink.writes) == 36 // 5 + 1  # one write per batch, never one big string
    assert sum(1 for _ in [r async for r in iter_audit_events(store, batch=3)]) == 36


async def test_export_rejects_bad_arguments(store):
    with pytest.raises(InvalidArgument):
        await export_events(store, io.StringIO(), format="xml")
    with pytest.raises(InvalidArgument):
        await export_events(store, io.StringIO(), decision="maybe")


# -- CLI ---------------------------------------------------------------------------------------------------


class Runtime:
    """What the lead's CLI passes: opens a fresh store each time, like a separate process would."""

    def __init__(self, path: Path):
        self.path = path
        self.keyring = KeyRing(Secret(b"m" * 32))

    def __call__(self, args: argparse.Namespace):
        return None, SQLiteStore(self.path), self.keyring


def cli(runtime: Runtime, *argv: str) -> int:
    parser = argparse.ArgumentParser(prog="tessera")
    add_audit_commands(parser.add_subparsers(dest="command", required=True), runtime)
    args = parser.parse_args(list(argv))
    return args.func(args)


def test_cli_verify_checkpoint_export(tmp_path: Path, capsys):
    import asyncio

    db = tmp_path / "cli.db"

    async def setup():
        s = SQLiteStore(db)
        await fill(s)
        await s.close()

    asyncio.run(setup())
    runtime = Runtime(db)
    assert cli(runtime, "audit", "verify") == 0
    assert "tenant acme: OK, 12 events, head seq 12" in capsys.readouterr().out

    cp_file = tmp_path / "acme.checkpoint.json"
    assert cli(runtime, "audit", "checkpoint", "--tenant", "acme", "--output", str(cp_file)) == 0
    assert json.loads(cp_file.read_text())["seq"] == 12
    assert cli(runtime, "audit", "verify", "--checkpoint", str(cp_file)) == 0
    capsys.readouterr()

    out_file = tmp_path / "acme.csv"
    code = cli(
        runtime,
        "audit",
        "export",
        "--format",
        "csv",
        "--tenant",
        "acme",
        "--decision",
        "allow",
        "--since",
        "2026-01-01T00:00:00Z",
        "--until",
        "1767229200",
        "--output",
        str(out_file),
    )
    assert code == 0
    rows = list(csv.reader(out_file.open(newline="")))
    assert tuple(rows[0]) == CSV_COLUMNS and {r[3] for r in rows[1:]} == {"allow"}

    # Truncate acme behind the checkpoint and fix the head: only the exported checkpoint notices.
    with raw_sqlite(db) as conn:
        conn.execute("DELETE FROM audit_events WHERE tenant = 'acme' AND seq > 10")
        (h,) = conn.execute("SELECT hash FROM audit_events WHERE tenant = 'acme' AND seq = 10").fetchone()
        conn.execute("UPDATE audit_heads SET seq = 10, hash = ? WHERE tenant = 'acme'", (h,))
        conn.execute("DELETE FROM audit_checkpoints")
    assert cli(runtime, "audit", "verify", "--tenant", "acme") == 0
    capsys.readouterr()
    assert cli(runtime, "audit", "verify", "--checkpoint", str(cp_file)) == 1
    assert "FAILED at seq 11: checkpoint seq 12 not found" in capsys.readouterr().out

    with raw_sqlite(db) as conn:
        conn.execute("DELETE FROM audit_events WHERE tenant = 'globex' AND seq = 4")
    assert cli(runtime, "audit", "verify") == 1
    out = capsys.readouterr().out
    assert "tenant globex: FAILED at seq 4: sequence gap after 3: seq 4 missing (event deleted)" in out
    assert "tenant _gateway: OK" in out

    # Usage errors exit 2.
    assert cli(runtime, "audit", "verify", "--checkpoint", str(tmp_path / "missing.json")) == 2
    assert cli(runtime, "audit", "verify", "--tenant", "globex", "--checkpoint", str(cp_file)) == 2
    assert cli(runtime, "audit", "checkpoint", "--tenant", "nobody") == 2
    with pytest.raises(SystemExit) as exit_info:
        cli(runtime, "audit", "export", "--format", "xml")
    assert exit_info.value.code == 2
    with pytest.raises(SystemExit) as exit_info:
        cli(runtime, "audit", "export", "--since", "yesterday-ish")
    assert exit_info.value.code == 2


def test_parse_time():
    assert parse_time("2026-01-01T00:00:00Z") == datetime(2026, 1, 1, tzinfo=UTC)
    assert parse_time("2026-01-01") == datetime(2026, 1, 1, tzinfo=UTC)
    assert parse_time("1767225600") == datetime(2026, 1, 1, tzinfo=UTC)
