"""The S3 sink against moto's S3-compatible server, started as a process on 127.0.0.1 (moto[server]: the
stand-in for Amazon S3, which cannot run here). Objects are read back and every event found once."""

from __future__ import annotations

import gzip
import json
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import pytest

from authz.audit import admin_event
from authz.errors import OutboundRefused
from authz.forward import Ack, Forwarder, ForwarderSettings, forward_event
from authz.forward._s3 import S3Sink, endpoint_host, s3_client
from authz.outbound import OutboundPolicy, vet_host_sync
from authz.storage.sqlite import SQLiteStore
from tests.moto_s3 import moto_server

HOUR_MS = 3_600_000
T0 = 1_700_000_000_000  # 2023-11-14T22:13:20Z


@pytest.fixture(scope="module")
def moto_endpoint() -> Iterator[str]:
    with moto_server() as port:
        yield f"http://127.0.0.1:{port}"


@pytest.fixture
def client(moto_endpoint: str):
    c = s3_client(
        region="eu-west-1", endpoint_url=moto_endpoint, access_key_id="test", secret_access_key="test"
    )
    yield c
    c.close()


@pytest.fixture
async def store(tmp_path: Path) -> AsyncIterator[SQLiteStore]:
    s = SQLiteStore(tmp_path / "tessera.db")
    events = []
    for tenant in ("acme", "globex"):
        for i in range(5):  # the 4th and 5th event an hour later: two hour partitions
            when = T0 + i + (HOUR_MS if i >= 3 else 0)
            events.append((tenant, admin_event(tenant, "alice", "tenant.update", f"t:{i}", time_ms=when)))
    await s.append_events(events)
    yield s
    await s.close()


def vetter(moto_endpoint: str, allow: list[str]):
    host, port = endpoint_host("eu-west-1", moto_endpoint)
    policy = OutboundPolicy.build(allow)
    return lambda: vet_host_sync(policy, host, port, "audit forwarder")


def read_back(client, bucket: str) -> dict[str, list]:
    objects = {}
    for page in client.get_paginator("list_objects_v2").paginate(Bucket=bucket):
        for item in page.get("Contents", []):
            body = client.get_object(Bucket=bucket, Key=item["Key"])["Body"].read()
            objects[item["Key"]] = [json.loads(line) for line in gzip.decompress(body).splitlines()]
    return objects


async def test_s3_objects_are_gzip_ndjson_partitioned_by_tenant_date_hour_with_every_event_once(
    store, client, moto_endpoint
):
    client.create_bucket(Bucket="audit", CreateBucketConfiguration={"LocationConstraint": "eu-west-1"})
    sink = S3Sink("s3", "audit", client, prefix="tessera", vet=vetter(moto_endpoint, ["127.0.0.1"]))
    await Forwarder(store, sink, ForwarderSettings(batch_size=4)).pass_once()
    objects = read_back(client, "audit")
    assert sorted(objects) == [
        "tessera/tenant=acme/date=2023-11-14/hour=22/000000000001-000000000003.ndjson.gz",
        "tessera/tenant=acme/date=2023-11-14/hour=23/000000000004-000000000004.ndjson.gz",
        "tessera/tenant=acme/date=2023-11-14/hour=23/000000000005-000000000005.ndjson.gz",
        "tessera/tenant=globex/date=2023-11-14/hour=22/000000000001-000000000003.ndjson.gz",
        "tessera/tenant=globex/date=2023-11-14/hour=23/000000000004-000000000004.ndjson.gz",
        "tessera/tenant=globex/date=2023-11-14/hour=23/000000000005-000000000005.ndjson.gz",
    ]
    for tenant in ("acme", "globex"):
        seqs = [
            doc["tessera_chain"]["seq"]
            for key, docs in objects.items()
            if f"tenant={tenant}/" in key
            for doc in docs
        ]
        assert sorted(seqs) == [1, 2, 3, 4, 5]  # every event exactly once
        assert (await store.get_forwarder_cursor(tenant, "s3")).seq == 5
    # A resend (a crash before the cursor write) writes the same keys: S3 deduplicates by itself.
    resend = [forward_event(r) async for r in store.iter_events("acme") if r.seq <= 3]
    assert await sink.send(resend) == Ack()
    assert read_back(client, "audit") == objects


async def test_a_missing_bucket_is_a_dead_letter_that_replays_once_it_exists(store, client, moto_endpoint):
    sink = S3Sink("s3", "late-bucket", client, vet=vetter(moto_endpoint, ["127.0.0.1"]))
    await Forwarder(store, sink, ForwarderSettings(batch_size=10, tenants=("acme",))).pass_once()
    # the batch, then its own dead-letter event (6) refused in turn and not announced again
    dead, announced = await store.list_dead_letters()
    assert "NoSuchBucket" in dead.reason and (dead.from_seq, dead.to_seq, dead.attempts) == (1, 5, 1)
    assert (announced.from_seq, announced.to_seq) == (6, 6)
    client.create_bucket(Bucket="late-bucket", CreateBucketConfiguration={"LocationConstraint": "eu-west-1"})
    assert await Forwarder(store, sink, ForwarderSettings(batch_size=10)).replay(dead)
    seqs = sorted(
        doc["tessera_chain"]["seq"] for docs in read_back(client, "late-bucket").values() for doc in docs
    )
    assert seqs == [1, 2, 3, 4, 5]


def test_an_endpoint_outside_the_outbound_rules_is_refused(moto_endpoint):
    with pytest.raises(OutboundRefused, match="loopback"):
        vetter(moto_endpoint, [])()
