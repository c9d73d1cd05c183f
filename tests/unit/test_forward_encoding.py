"""The sinks' request bodies are spliced from the stored canonical bytes of each event (issue 18: no
decode and re-encode per sink). These tests pin that the spliced JSON is exactly what encoding the
decoded documents gives (same members, same values, no member twice), for events the real audit
builders produce and stored by the real SQLite store, and that an event no sink needs to read is never
decoded."""

from __future__ import annotations

import gzip
import json
import random
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest

from authz.audit import admin_event, event_from_decision
from authz.audit._events import outage_event
from authz.check.models import Check, Decision, Outcome
from authz.forward import forward_event
from authz.forward._event import ForwardEvent, has_text_member, json_bytes
from authz.forward._notify import NotifyRule, SlackSink
from authz.forward._s3 import S3Sink
from authz.forward._vendors import DatadogLogsSink, SentinelSink, SplunkHecSink
from authz.forward._webhook import WebhookSink
from authz.secrets import Secret
from authz.storage.sqlite import SQLiteStore

T0 = 1_700_000_000_000


def strict(text: bytes | str) -> Any:
    """json.loads that refuses a member appearing twice in one object (a splice gone wrong)."""

    def pairs(items: list[tuple[str, Any]]) -> dict[str, Any]:
        keys = [k for k, _ in items]
        assert len(keys) == len(set(keys)), f"member repeated: {keys}"
        return dict(items)

    return json.loads(text, object_pairs_hook=pairs)


def a_decision(outcome: Outcome, check: Check | None, reason: str) -> Decision:
    return Decision(
        decision_id="01a23d89b9a6d714c9ddc7db868b",
        outcome=outcome,
        check=check,
        reason=reason,
        tenant="acme",
        agent="agent-ü",  # non-ASCII text stays UTF-8, as in the stored canonical form
        token_id="t" * 64,
        jti="j1",
        tool="read_invoice",
        rpc_method="tools/call",
        arguments_sha256="0" * 64,
        argument_keys=("invoice_id",),
        latency_us=1503,
    )


@pytest.fixture
async def events(tmp_path: Path) -> AsyncIterator[list[ForwardEvent]]:
    store = SQLiteStore(tmp_path / "tessera.db")
    blank = admin_event("acme", "alice", "tenant.update", "t:2", time_ms=T0 + 2)
    blank["message"] = ""  # Datadog's entry then takes its message from class_name
    await store.append_events(
        [
            ("acme", event_from_decision(a_decision(Outcome.ALLOW, None, ""), time_ms=T0)),
            (
                "acme",
                event_from_decision(a_decision(Outcome.DENY, Check.POLICY, 'no "quotes"\n'), time_ms=T0),
            ),
            ("acme", admin_event("acme", "alice", "tenant.update", "t:1", time_ms=T0 + 1)),
            ("acme", blank),
            ("acme", outage_event("acme", 3, T0, T0 + 5, time_ms=T0 + 7)),
        ]
    )
    yield [forward_event(r) async for r in store.iter_events("acme")]
    await store.close()


def fresh(events: list[ForwardEvent]) -> list[ForwardEvent]:
    """The same events, not yet decoded (what the forwarder reads from the store)."""
    return [ForwardEvent(e.tenant, e.seq, e.hash, e.prev_hash, e.time_ms, e.decision, e.raw) for e in events]


def test_the_document_bytes_are_the_document(events: list[ForwardEvent]) -> None:
    for event in events:
        assert strict(event.document_bytes()) == event.document()
        assert list(strict(event.document_bytes())) == list(event.document())  # members in the same order
        assert event.document_bytes() == json_bytes(event.document())  # byte for byte, for these events
        assert event.ndjson_line() == event.document_bytes() + b"\n"
        assert event.decision == event.event["tessera"]["decision"]


class Capture:
    def __init__(self) -> None:
        self.bodies: list[bytes] = []

    async def request(self, method: str, url: str, *, content: bytes | None = None, headers=None):
        assert content is not None
        self.bodies.append(content)

        class Answer:
            status_code, headers, content = 200, {}, b"{}"

        return Answer()


async def test_splunk_webhook_datadog_and_sentinel_bodies_equal_the_encoded_documents(events) -> None:
    http = Capture()
    splunk = SplunkHecSink("splunk", "http://hec", Secret("t"), http, index="security")
    await splunk.send(fresh(events))
    lines = http.bodies[-1].decode().splitlines()
    assert [strict(line) for line in lines] == [
        {
            "time": e.time_ms / 1000,
            "host": "tessera",
            "source": "tessera",
            "sourcetype": "tessera:audit",
            "index": "security",
            "event": e.document(),
        }
        for e in events
    ]

    await WebhookSink("hook", "http://hook", Secret("k"), http).send(fresh(events))
    assert strict(http.bodies[-1]) == {
        "sink": "hook",
        "tenant": "acme",
        "events": [e.document() for e in events],
    }

    datadog = DatadogLogsSink("dd", "http://dd", Secret("k"), http, tags=["env:prod"])
    await datadog.send(fresh(events))
    entries = strict(gzip.decompress(http.bodies[-1]))
    assert entries == [datadog._entry(e) for e in events]
    assert entries[0]["ddtags"] == "tenant:acme,decision:allow,env:prod"
    assert entries[3]["message"]  # an event with an empty message falls back to its class name

    sentinel = SentinelSink("se", "http://ingest", "dcr", "Custom-Tessera", "dir", "app", Secret("s"), http)
    sentinel._token = ("token", float("inf"))
    await sentinel.send(fresh(events))
    records = strict(gzip.decompress(http.bodies[-1]))
    assert records == [SentinelSink.record(e) for e in events]
    assert records[0]["TimeGenerated"] == "2023-11-14T22:13:20.000Z" and records[0]["Decision"] == "allow"


def test_s3_objects_hold_the_document_lines_at_the_configured_gzip_level(events) -> None:
    for level in (1, 9):
        ((key, body),) = S3Sink("s3", "bucket", None, gzip_level=level).objects(events)
        assert key.endswith("000000000001-000000000005.ndjson.gz")
        assert [strict(line) for line in gzip.decompress(body).splitlines()] == [e.document() for e in events]
    with pytest.raises(ValueError):
        S3Sink("s3", "bucket", None, gzip_level=0)


async def test_events_a_notifier_rule_excludes_by_decision_are_never_decoded(events) -> None:
    http = Capture()
    batch = fresh(events)
    slack = SlackSink(
        "oncall", Secret("http://hooks/x"), http, rule=NotifyRule(decisions=("deny",), actions=())
    )
    await slack.send(batch)
    assert len(http.bodies) == 1 and "Denied (policy)" in strict(http.bodies[0])["text"]
    decoded = [e.seq for e in batch if e._event is not None]
    assert decoded == [2]  # the deny it posted; the allow, admin and outage events were read by index only
    # Splunk, the webhook and Sentinel do not decode either.
    for sink in (
        SplunkHecSink("splunk", "http://hec", Secret("t"), http),
        WebhookSink("hook", "http://hook", Secret("k"), http),
    ):
        await sink.send(batch)
    assert [e.seq for e in batch if e._event is not None] == [2]


async def test_datadog_decodes_only_an_event_without_a_message_of_its_own(events) -> None:
    batch = fresh(events)
    await DatadogLogsSink("dd", "http://dd", Secret("k"), Capture()).send(batch)
    # seq 4's message is empty (its entry takes the class name): the only one decoded
    assert [e.seq for e in batch if e._event is not None] == [4]


def _member_is_text(raw: bytes, name: str) -> bool:
    value = json.loads(raw).get(name)
    return isinstance(value, str) and value != ""


@pytest.mark.parametrize(
    "document",
    [
        {"message": "allow read_invoice", "api": {"response": {"message": "nested"}}},
        {"api": {"response": {"message": "only nested"}}},
        {"message": "", "api": {"message": "nested"}},
        {"message": 7},
        {"message": None, "x": 'a "message":"quoted" in a string'},
        {"a": "braces { [ in text", "message": "top"},
        {"a": "}}]] closing", "b": {"message": "nested"}},
        {"a": ['{"message":"in a list"}'], "message": "top"},
        {"a": 'escaped \\" quote and \\', "message": "top"},
        {"a": ["message", {"message": "in a list"}]},
        {"ünï": "cödé", "message": "naïve"},
    ],
)
def test_has_text_member_agrees_with_decoding(document: dict[str, Any]) -> None:
    raw = json_bytes(document)
    assert has_text_member(raw, "message") == _member_is_text(raw, "message")


def test_has_text_member_agrees_with_decoding_on_generated_objects() -> None:
    """Random nesting of objects, lists and strings full of JSON punctuation: never a wrong True (False
    only costs a decode, but for these it is exact too)."""
    rng = random.Random(18)
    alphabet = ['"', "\\", "{", "}", "[", "]", ":", ",", "message", "a", " ", "\n", "é"]

    def text() -> str:
        return "".join(rng.choice(alphabet) for _ in range(rng.randint(0, 6)))

    def value(depth: int) -> Any:
        kind = rng.randint(0, 4 if depth < 3 else 1)
        if kind == 0:
            return text()
        if kind == 1:
            return rng.choice([0, 1.5, None, True, "", "x"])
        if kind == 2:
            return [value(depth + 1) for _ in range(rng.randint(0, 3))]
        return {rng.choice(["message", "m", text()]): value(depth + 1) for _ in range(rng.randint(0, 3))}

    checked = 0
    for _ in range(3000):
        document = {rng.choice(["message", "a", "b", text()]): value(1) for _ in range(rng.randint(0, 4))}
        raw = json_bytes(document)
        assert has_text_member(raw, "message") == _member_is_text(raw, "message"), raw
        checked += _member_is_text(raw, "message")
    assert checked > 100  # the generator does produce top-level messages
