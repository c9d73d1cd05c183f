"""S3 sink: gzip NDJSON objects partitioned by tenant, date and hour, through ``boto3`` (extra ``s3``).

Object key: ``{prefix}tenant=<t>/date=YYYY-MM-DD/hour=HH/<first seq>-<last seq>.ndjson.gz`` (seqs
zero-padded to 12 digits), one object per batch and hour the batch spans, the hour being the event's
own time (UTC). The key is a function of the events it holds, so resending a batch after a crash
overwrites the same object: S3 itself deduplicates. The Hive-style ``key=value`` folders are what the
Athena DDL in the query pack projects as partitions.

``boto3`` would open its own connections by name, so the client is pinned
(:func:`authz.outbound.pin_botocore_client`): each request's host is vetted against the operator's
outbound rules and the request goes to the vetted address itself, never to a later DNS answer. The
endpoint is also vetted before every batch (:func:`authz.outbound.vet_host_sync`); a refused endpoint is
retried (and, if it stays refused, dead-lettered), never silently skipped.
"""

from __future__ import annotations

import asyncio
import functools
import gzip
import os
from collections.abc import Callable, Sequence
from datetime import UTC, datetime
from itertools import groupby
from typing import Any
from urllib.parse import urlsplit

from authz.forward._event import GZIP_LEVEL, ForwardEvent
from authz.forward._sink import Ack, Outcome, Reject, Retry, parse_retry_after

# S3 error codes an operator must fix (bucket, permissions, credentials): resending cannot help.
_REJECT_CODES = {
    "AccessDenied",
    "NoSuchBucket",
    "InvalidAccessKeyId",
    "SignatureDoesNotMatch",
    "InvalidBucketName",
}


def partition_key(prefix: str, event: ForwardEvent) -> str:
    return _partition(prefix, event.tenant, event.time_ms // HOUR_MS)


HOUR_MS = 3_600_000


@functools.lru_cache(maxsize=256)
def _partition(prefix: str, tenant: str, hour: int) -> str:
    """The folder of an hour (hours since the epoch): a batch's events share one or two of them."""
    when = datetime.fromtimestamp(hour * 3600, UTC)
    return f"{prefix}tenant={tenant}/date={when:%Y-%m-%d}/hour={when:%H}/"


class S3Sink:
    def __init__(
        self,
        name: str,
        bucket: str,
        client: Any,
        *,
        prefix: str = "",
        vet: Callable[[], object] | None = None,
        gzip_level: int = GZIP_LEVEL,
    ):
        """``client``: a boto3 S3 client (see :func:`s3_client`); ``vet()`` raises when the endpoint is
        refused by the outbound rules; ``gzip_level`` 1 (fastest) to 9 (smallest objects)."""
        if not 1 <= gzip_level <= 9:
            raise ValueError("gzip_level must be 1..9")
        if prefix and not prefix.endswith("/"):
            prefix += "/"
        self.name = name
        self.bucket = bucket
        self.prefix = prefix
        self._client = client
        self._vet = vet
        self.gzip_level = gzip_level

    def objects(self, batch: Sequence[ForwardEvent]) -> list[tuple[str, bytes]]:
        """``(key, gzip body)`` per partition the batch touches (events stay in seq order)."""
        out = []
        for folder, group in groupby(batch, key=lambda e: partition_key(self.prefix, e)):
            events = list(group)
            body = gzip.compress(
                b"".join(e.ndjson_line() for e in events), compresslevel=self.gzip_level, mtime=0
            )
            out.append((f"{folder}{events[0].seq:012d}-{events[-1].seq:012d}.ndjson.gz", body))
        return out

    def _put_all(self, batch: Sequence[ForwardEvent]) -> Outcome:
        from botocore.exceptions import BotoCoreError, ClientError

        if self._vet is not None:
            self._vet()
        for key, body in self.objects(batch):
            try:
                self._client.put_object(
                    Bucket=self.bucket, Key=key, Body=body, ContentType="application/x-ndjson"
                )
            except ClientError as exc:
                error = exc.response.get("Error", {})
                meta = exc.response.get("ResponseMetadata", {})
                status = int(meta.get("HTTPStatusCode") or 0)
                reason = (
                    f"S3 {self.name} put {key}: HTTP {status} {error.get('Code')}: {error.get('Message')}"
                )
                if error.get("Code") in _REJECT_CODES or (400 <= status < 500 and status not in (408, 429)):
                    return Reject(reason)
                retry_after = parse_retry_after((meta.get("HTTPHeaders") or {}).get("retry-after"))
                return Retry(reason, retry_after)
            except BotoCoreError as exc:
                return Retry(f"S3 {self.name} put {key}: {exc}")
        return Ack()

    async def send(self, batch: Sequence[ForwardEvent]) -> Outcome:
        # boto3 is blocking: keep the event loop (and any other sink on it) free while it uploads.
        return await asyncio.to_thread(self._put_all, batch)

    async def aclose(self) -> None:
        await asyncio.to_thread(self._client.close)


def s3_client(
    *,
    region: str,
    endpoint_url: str | None = None,
    access_key_id: str | None = None,
    secret_access_key: str | None = None,
    timeout_s: float = 10.0,
    outbound: Any = None,
    purpose: str = "S3 sink",
    verify: bool | str | None = None,
) -> Any:
    """A boto3 S3 client; without keys, boto3's own chain (instance role, web identity, ...) applies.
    Path-style addressing with a custom endpoint (MinIO, Ceph and other S3-compatible servers), retries
    left to the forwarder (boto3's own would hide failures from the cursor's health).

    With ``outbound`` (an :class:`authz.outbound.OutboundPolicy`) every request is vetted and sent to
    the vetted address itself (:func:`authz.outbound.pin_botocore_client`), so a DNS answer that changes
    after the vetting cannot move the connection. ``verify``: a CA bundle path, or False; by default
    ``AWS_CA_BUNDLE`` or botocore's own bundle."""
    import boto3
    from botocore.config import Config

    if verify is None:
        verify = os.environ.get("AWS_CA_BUNDLE") or True

    config = Config(
        connect_timeout=timeout_s,
        read_timeout=timeout_s,
        retries={"max_attempts": 1, "mode": "standard"},
        s3={"addressing_style": "path" if endpoint_url else "auto"},
    )
    client = boto3.client(
        "s3",
        region_name=region,
        endpoint_url=endpoint_url,
        aws_access_key_id=access_key_id,
        aws_secret_access_key=secret_access_key,
        config=config,
        verify=verify,
    )
    if outbound is not None:
        from authz.outbound import pin_botocore_client

        pin_botocore_client(
            client,
            outbound,
            purpose=purpose,
            verify=verify,
            connect_timeout=timeout_s,
            read_timeout=timeout_s,
        )
    return client


def endpoint_host(region: str, endpoint_url: str | None) -> tuple[str, int]:
    """The host and port boto3 will connect to, for the outbound vetting."""
    if endpoint_url:
        parts = urlsplit(endpoint_url)
        return parts.hostname or "", parts.port or (443 if parts.scheme == "https" else 80)
    return f"s3.{region}.amazonaws.com", 443
