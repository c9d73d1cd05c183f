"""The query packs (docs/queries/athena.sql, docs/queries/sentinel.kql) against events a test run
produced: decisions of every outcome, an admin mutation and an outage marker, stored in the chain and
forwarded (NDJSON file sink; Sentinel records as the Sentinel sink builds them). Every field an event
carries has a column of a matching type, and every column and parser path names a real field."""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

import pytest

from authz.audit import admin_event, event_from_decision
from authz.audit._events import outage_event
from authz.check.models import Check, Decision, Outcome
from authz.forward import Forwarder, NdjsonFileSink, SentinelSink, forward_event
from authz.storage.sqlite import SQLiteStore

ROOT = Path(__file__).resolve().parents[2]
T = 1_765_000_000_000


def decisions() -> list[Decision]:
    common = {
        "tenant": "acme",
        "agent": "agent-1",
        "token_id": "tok",
        "jti": "j1",
        "rpc_method": "tools/call",
    }
    return [
        Decision(
            "d1",
            Outcome.ALLOW,
            tool="read_invoice",
            argument_keys=("id",),
            arguments_sha256="ab" * 32,
            policy_version=3,
            policy_hash="sha256:" + "cd" * 32,
            latency_us=120,
            **common,
        ),
        Decision(
            "d2",
            Outcome.DENY,
            Check.BUDGET,
            "budget exhausted",
            {"scope": "agent", "limit": 5},
            tool="transfer_funds",
            prompt_sha256="ef" * 32,
            **common,
        ),
        Decision(
            "d3",
            Outcome.ESCALATE,
            Check.APPROVAL,
            "needs approval",
            {"expires_at": "2026-12-03T15:00:00Z"},
            tool="transfer_funds",
            approval_id="ap-1",
            intent_terms=("pay",),
            intent_determined=True,
            **common,
        ),
        Decision("d4", Outcome.DENY, Check.CAPABILITY, "token missing", tenant=None),
    ]


@pytest.fixture
async def produced(tmp_path: Path) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    """(documents as every sink sends them, Sentinel records), from one forwarding run."""
    store = SQLiteStore(tmp_path / "tessera.db")
    try:
        events = [
            (d.tenant or "_gateway", event_from_decision(d, time_ms=T + i)) for i, d in enumerate(decisions())
        ]
        events.append(
            ("acme", admin_event("acme", "alice", "policy.promote", "policy:3", {"version": 3}, time_ms=T))
        )
        events.append(("acme", outage_event("acme", 2, T - 10, T - 5, time_ms=T + 10)))
        await store.append_events(events)
        path = tmp_path / "out.ndjson"
        await Forwarder(store, NdjsonFileSink("file", path)).pass_once()
        docs = [json.loads(line) for line in path.read_bytes().splitlines()]
        records = []
        for tenant in await store.audit_tenants():
            records += [SentinelSink.record(forward_event(r)) async for r in store.iter_events(tenant)]
    finally:
        await store.close()
    assert len(docs) == len(records) == 6
    return docs, records


# -- a small Hive type reader ----------------------------------------------------------------------------
def parse_type(text: str) -> Any:
    tokens = re.findall(r"[A-Za-z_][A-Za-z0-9_]*|[<>,:]", text)
    pos = 0

    def take(expected: str | None = None) -> str:
        nonlocal pos
        token = tokens[pos]
        pos += 1
        assert expected is None or token == expected, (expected, token, text)
        return token

    def one() -> Any:
        name = take().lower()
        if name == "array":
            take("<")
            inner = one()
            take(">")
            return ("array", inner)
        if name == "map":
            take("<")
            key = one()
            take(",")
            value = one()
            take(">")
            return ("map", key, value)
        if name == "struct":
            take("<")
            fields = {}
            while True:
                field = take()
                take(":")
                fields[field] = one()
                if take() == ">":
                    return ("struct", fields)
        return name

    result = one()
    assert pos == len(tokens), text
    return result


def conforms(value: Any, typ: Any, where: str, problems: list[str]) -> None:
    if value is None:
        return
    if typ == "string":
        ok = isinstance(value, str)
    elif typ in ("int", "bigint"):
        ok = isinstance(value, int) and not isinstance(value, bool)
    elif typ == "double":
        ok = isinstance(value, int | float) and not isinstance(value, bool)
    elif typ == "boolean":
        ok = isinstance(value, bool)
    elif typ[0] == "array":
        ok = isinstance(value, list)
        for i, item in enumerate(value if ok else []):
            conforms(item, typ[1], f"{where}[{i}]", problems)
    elif typ[0] == "map":  # the JSON SerDe reads scalar values of a map<string,string> as strings
        ok = isinstance(value, dict) and all(not isinstance(v, dict | list) for v in value.values())
    else:
        ok = isinstance(value, dict)
        for key, item in (value if ok else {}).items():
            if key not in typ[1]:
                problems.append(f"{where}.{key}: no column")
            else:
                conforms(item, typ[1][key], f"{where}.{key}", problems)
    if not ok:
        problems.append(f"{where}: {value!r} is not {typ}")


def athena_columns() -> dict[str, Any]:
    ddl = (ROOT / "docs/queries/athena.sql").read_text()
    body = ddl[ddl.index("tessera_audit (") : ddl.index("PARTITIONED BY")]
    return {m[1]: parse_type(m[2]) for m in re.finditer(r"^\s*`(\w+)` (.+?),?$", body, re.M)}


async def test_athena_table_matches_the_forwarded_documents(produced):
    docs, _ = produced
    columns = athena_columns()
    problems: list[str] = []
    for i, doc in enumerate(docs):
        conforms(doc, ("struct", columns), f"doc{i}", problems)
    assert problems == []
    unused = [name for name in columns if all(doc.get(name) is None for doc in docs)]
    assert unused == []  # every column names a field the events carry
    # Partition projection folders are the ones the S3 sink writes.
    assert "tenant=${tenant}/date=${date}/hour=${hour}/" in (ROOT / "docs/queries/athena.sql").read_text()


async def test_sentinel_table_and_parser_match_the_records(produced):
    _, records = produced
    kql = (ROOT / "docs/queries/sentinel.kql").read_text()
    declared = dict(
        item.strip().split(":")
        for item in re.search(r"// columns: (.+)", kql).group(1).split(",")  # type: ignore[union-attr]
    )
    python_types = {"datetime": str, "string": str, "long": int, "dynamic": dict}
    for record in records:
        assert set(record) == set(declared)
        for name, kind in declared.items():
            assert record[name] is None or isinstance(record[name], python_types[kind]), (name, record[name])
        assert re.fullmatch(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z", record["TimeGenerated"])
    paths = set(re.findall(r"Event\.([a-z_][a-z0-9_.]*)", kql))
    assert len(paths) > 20

    def present(doc: dict[str, Any], path: str) -> bool:
        node: Any = doc
        for part in path.split("."):
            if not isinstance(node, dict) or part not in node:
                return False
            node = node[part]
        return True

    missing = sorted(p for p in paths if not any(present(r["Event"], p) for r in records))
    assert missing == []
