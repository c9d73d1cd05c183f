"""Splunk HEC, Datadog Logs and Microsoft Sentinel sinks against real HTTP receivers on 127.0.0.1 that
check each vendor's documented request format, headers and auth, and answer with its documented status
codes (including 429/5xx with Retry-After). Driven by the real forwarder on a real SQLite store.
HTTP goes through the outbound client (authz.outbound) with loopback allowlisted explicitly, as an
operator would with TESSERA_OUTBOUND_ALLOW."""

from __future__ import annotations

import gzip
import json
from collections.abc import AsyncIterator
from pathlib import Path
from urllib.parse import parse_qs

import pytest

from authz.audit import admin_event
from authz.forward import Forwarder, ForwarderSettings
from authz.forward._vendors import DatadogLogsSink, SentinelSink, SplunkHecSink
from authz.outbound import OutboundClient, OutboundPolicy
from authz.secrets import Secret
from authz.storage.sqlite import SQLiteStore
from tests.forward_receivers import Answer, Received, Receiver

FAST = ForwarderSettings(batch_size=4, backoff_base_s=0.01, backoff_cap_s=0.05, max_retry_after_s=0.2)


@pytest.fixture
async def store(tmp_path: Path) -> AsyncIterator[SQLiteStore]:
    s = SQLiteStore(tmp_path / "tessera.db")
    await s.append_events(
        [
            ("acme", admin_event("acme", "alice", "tenant.update", f"t:{i}", time_ms=1_700_000_000_000 + i))
            for i in range(6)
        ]
    )
    yield s
    await s.close()


@pytest.fixture
async def http() -> AsyncIterator[OutboundClient]:
    async with OutboundClient(
        OutboundPolicy.build(["127.0.0.1"]), timeout_s=2.0, purpose="audit forwarder"
    ) as client:
        yield client


def _json_error(status: int, text: str, code: int) -> Answer:
    return (status, {"content-type": "application/json"}, json.dumps({"text": text, "code": code}).encode())


# -- Splunk HEC ----------------------------------------------------------------------------------------
def splunk_check(request: Received) -> Answer | None:
    """HEC: /services/collector/event, "Authorization: Splunk <token>", concatenated event objects."""
    if request.path != "/services/collector/event":
        return _json_error(404, "Not Found", 404)
    if request.headers.get("authorization") != "Splunk hec-token":
        return (
            _json_error(401, "Invalid token", 4)
            if request.headers.get("authorization")
            else _json_error(401, "Token is required", 2)
        )
    decoder, text, pos, events = json.JSONDecoder(), request.body.decode(), 0, []
    try:
        while pos < len(text):
            obj, end = decoder.raw_decode(text, pos)
            events.append(obj)
            pos = end
            while pos < len(text) and text[pos].isspace():
                pos += 1
    except ValueError:
        return _json_error(400, "Invalid data format", 6)
    for obj in events:
        if not isinstance(obj.get("event"), dict) or not isinstance(obj.get("time"), float | int):
            return _json_error(400, "Event field is required", 12)
        if obj["sourcetype"] != "tessera:audit" or obj["index"] != "security":
            return _json_error(400, "Incorrect index", 7)
    return None


def splunk_seqs(receiver: Receiver) -> list[int]:
    decoder = json.JSONDecoder()
    out = []
    for request in receiver.accepted:
        text, pos = request.body.decode(), 0
        while pos < len(text.rstrip()):
            obj, pos = decoder.raw_decode(text, pos)
            out.append(obj["event"]["tessera_chain"]["seq"])
            pos += 1
    return out


async def test_splunk_hec_gets_every_event_in_batch_form_retrying_server_busy(store, http):
    ok = _json_error(200, "Success", 0)
    receiver = Receiver(splunk_check, ok=ok, script=[_json_error(503, "Server is busy", 9)]).start()
    try:
        sink = SplunkHecSink("splunk", receiver.url, Secret("hec-token"), http, index="security")
        await Forwarder(store, sink, FAST).pass_once()
    finally:
        receiver.stop()
    assert [status for _, status in receiver.refused] == [503]
    assert splunk_seqs(receiver) == [1, 2, 3, 4, 5, 6]
    assert (await store.get_forwarder_cursor("acme", "splunk")).seq == 6


async def test_splunk_hec_bad_token_is_a_dead_letter_not_a_skip(store, http):
    receiver = Receiver(splunk_check).start()
    try:
        sink = SplunkHecSink("splunk", receiver.url, Secret("wrong"), http, index="security")
        await Forwarder(store, sink, FAST).pass_once()
    finally:
        receiver.stop()
    dead = await store.list_dead_letters(sink="splunk")
    # 7 and 8 are the first two dead letters' own events; the third holds only such an event, so it is
    # not announced again.
    assert [(d.from_seq, d.to_seq) for d in dead] == [(1, 4), (5, 7), (8, 8)]
    assert "HTTP 401" in dead[0].reason and "Invalid token" in dead[0].reason


# -- Datadog -------------------------------------------------------------------------------------------
def datadog_check(request: Received) -> Answer | None:
    """Logs intake v2: /api/v2/logs, DD-API-KEY, JSON array (gzip), at most 1000 entries."""
    if request.path != "/api/v2/logs":
        return (404, {}, b"")
    if request.headers.get("dd-api-key") != "dd-key":
        return (403, {"content-type": "application/json"}, b'{"errors":["Forbidden"]}')
    if request.headers.get("content-type") != "application/json":
        return (400, {}, b'{"errors":["Bad Request"]}')
    body = request.body
    if request.headers.get("content-encoding") == "gzip":
        body = gzip.decompress(body)
    entries = json.loads(body)
    if not isinstance(entries, list) or not 1 <= len(entries) <= 1000:
        return (400, {}, b'{"errors":["Bad Request"]}')
    for entry in entries:
        if entry["ddsource"] != "tessera" or "tenant:acme" not in entry["ddtags"].split(","):
            return (400, {}, b'{"errors":["Bad Request"]}')
        if not isinstance(entry.get("message"), str) or entry["service"] != "tessera":
            return (400, {}, b'{"errors":["Bad Request"]}')
    request.body = body
    return None


async def test_datadog_gets_gzip_arrays_and_429_is_retried_after_retry_after(store, http):
    receiver = Receiver(
        datadog_check,
        ok=(202, {"content-type": "application/json"}, b"{}"),
        script=[(429, {"retry-after": "0"}, b'{"errors":["Too Many Requests"]}'), (500, {}, b"")],
    ).start()
    try:
        sink = DatadogLogsSink("datadog", receiver.url, Secret("dd-key"), http, tags=["env:test"])
        await Forwarder(store, sink, FAST).pass_once()
    finally:
        receiver.stop()
    assert [status for _, status in receiver.refused] == [429, 500]
    entries = [entry for request in receiver.accepted for entry in json.loads(request.body)]
    assert [e["tessera_chain"]["seq"] for e in entries] == [1, 2, 3, 4, 5, 6]
    assert entries[0]["ddtags"] == "tenant:acme,decision:admin,env:test"
    assert (await store.get_forwarder_cursor("acme", "datadog")).seq == 6


# -- Sentinel ------------------------------------------------------------------------------------------
class Entra:
    """The client-credentials token endpoint the Sentinel sink asks first."""

    def __init__(self) -> None:
        self.issued = 0

    def check(self, request: Received) -> Answer | None:
        if request.path != "/dir-1/oauth2/v2.0/token":
            return (404, {}, b"")
        form = {k: v[0] for k, v in parse_qs(request.body.decode()).items()}
        if form != {
            "grant_type": "client_credentials",
            "client_id": "app-1",
            "client_secret": "app-secret",
            "scope": "https://monitor.azure.com//.default",
        }:
            return (401, {"content-type": "application/json"}, b'{"error":"invalid_client"}')
        self.issued += 1
        body = json.dumps({"token_type": "Bearer", "expires_in": 3599, "access_token": f"tok-{self.issued}"})
        return (200, {"content-type": "application/json"}, body.encode())


def sentinel_check(request: Received) -> Answer | None:
    """Logs Ingestion: /dataCollectionRules/{dcr}/streams/{stream}?api-version=2023-01-01, Bearer token,
    JSON array of records with TimeGenerated, gzip allowed."""
    if request.path != "/dataCollectionRules/dcr-0123/streams/Custom-TesseraAudit?api-version=2023-01-01":
        return (404, {}, b'{"error":{"code":"NotFound"}}')
    if not request.headers.get("authorization", "").startswith("Bearer tok-"):
        return (401, {}, b'{"error":{"code":"InvalidToken"}}')
    body = (
        gzip.decompress(request.body) if request.headers.get("content-encoding") == "gzip" else request.body
    )
    records = json.loads(body)
    if not isinstance(records, list) or any(
        "TimeGenerated" not in r or "ChainHash" not in r for r in records
    ):
        return (400, {}, b'{"error":{"code":"InvalidContent"}}')
    request.body = body
    return None


async def test_sentinel_fetches_a_token_once_and_posts_records_to_the_dcr_stream(store, http):
    entra = Entra()
    login = Receiver(entra.check).start()
    ingest = Receiver(
        sentinel_check,
        ok=(204, {}, b""),
        script=[(429, {"retry-after": "0"}, b'{"error":{"code":"TooManyRequests"}}')],
    ).start()
    try:
        sink = SentinelSink(
            "sentinel",
            ingest.url,
            "dcr-0123",
            "Custom-TesseraAudit",
            "dir-1",
            "app-1",
            Secret("app-secret"),
            http,
            authority=login.url,
        )
        await Forwarder(store, sink, FAST).pass_once()
    finally:
        ingest.stop()
        login.stop()
    assert entra.issued == 1  # cached across batches and the retry
    assert [status for _, status in ingest.refused] == [429]
    records = [r for request in ingest.accepted for r in json.loads(request.body)]
    assert [r["ChainSeq"] for r in records] == [1, 2, 3, 4, 5, 6]
    first = records[0]
    assert first["TimeGenerated"] == "2023-11-14T22:13:20.000Z" and first["Tenant"] == "acme"
    assert first["Decision"] == "admin" and first["Event"]["tessera_chain"]["hash"] == first["ChainHash"]
    assert (await store.get_forwarder_cursor("acme", "sentinel")).seq == 6


async def test_sentinel_refused_credentials_keep_the_events_for_a_retry(store, http):
    login = Receiver(Entra().check).start()
    try:
        sink = SentinelSink(
            "sentinel",
            "http://127.0.0.1:9",
            "dcr",
            "Custom-X",
            "dir-1",
            "app-1",
            Secret("wrong"),
            http,
            authority=login.url,
        )
        settings = ForwarderSettings(batch_size=10, backoff_base_s=0.0, max_attempts=2)
        await Forwarder(store, sink, settings).pass_once()
    finally:
        login.stop()
    # Retried (not rejected at once), then dead-lettered after max_attempts, with the reason.
    dead = (await store.list_dead_letters())[0]
    assert (dead.from_seq, dead.to_seq) == (1, 6)
    assert dead.attempts == 2 and "token endpoint answered HTTP 401" in dead.reason
