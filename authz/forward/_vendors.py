"""SIEM sinks over HTTP: Splunk HTTP Event Collector, Datadog Logs intake, Microsoft Sentinel (Azure
Monitor Logs Ingestion API). Each encodes a batch in its vendor's documented format and classifies the
answer with :func:`classify_http` (2xx ok; 408/429/5xx retried honouring ``Retry-After``; other 4xx dead
letter). Every event carries its chain hash (``tessera_chain.hash``) for deduplication downstream.
"""

from __future__ import annotations

import functools
import gzip
import json
import re
import time
from collections.abc import Callable, Sequence
from typing import Any
from urllib.parse import quote, urlencode

from authz.forward._event import GZIP_LEVEL, ForwardEvent, has_text_member, json_bytes, json_hex, quoted
from authz.forward._sink import HttpClient, Outcome, Retry, classify_http
from authz.secrets import Secret


@functools.lru_cache(maxsize=64)
def _utc_second(seconds: int) -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(seconds))


def _rfc3339(time_ms: int) -> str:
    seconds, millis = divmod(time_ms, 1000)
    return f"{_utc_second(seconds)}.{millis:03d}Z"  # a batch's events share a few seconds


class SplunkHecSink:
    """Splunk HEC ``POST {url}/services/collector/event`` with ``Authorization: Splunk <token>``.

    The body is HEC's batch form: event objects concatenated (not a JSON array), each
    ``{"time": <epoch seconds>, "host", "source", "sourcetype", ["index"], "event": <document>}``. HEC answers
    200 ``{"text":"Success","code":0}``; 503 (server busy, code 9) and 429 are retried; 400 (invalid data)
    and 401/403 (token) go to a dead letter.
    """

    def __init__(
        self,
        name: str,
        url: str,
        token: Secret,
        http: HttpClient,
        *,
        index: str | None = None,
        source: str = "tessera",
        sourcetype: str = "tessera:audit",
        host: str = "tessera",
    ):
        self.name = name
        self.endpoint = url.rstrip("/") + "/services/collector/event"
        self._token = token
        self._http = http
        self._meta: dict[str, str] = {"host": host, "source": source, "sourcetype": sourcetype}
        if index:
            self._meta["index"] = index
        # "host":…,"source":…: the members between "time" and "event", the same for every event
        self._meta_json = b"," + json_bytes(self._meta)[1:-1] + b',"event":'

    def entry(self, event: ForwardEvent) -> bytes:
        """``{"time", "host", "source", "sourcetype", ["index"], "event"}`` around the shared document."""
        time_s = repr(event.time_ms / 1000).encode()
        return b"".join((b'{"time":', time_s, self._meta_json, event.document_bytes(), b"}\n"))

    async def send(self, batch: Sequence[ForwardEvent]) -> Outcome:
        body = b"".join(self.entry(e) for e in batch)
        headers = {
            "authorization": "Splunk " + self._token.reveal().decode(),
            "content-type": "application/json",
        }
        response = await self._http.request("POST", self.endpoint, content=body, headers=headers)
        return classify_http(response, f"Splunk HEC {self.name}")

    async def aclose(self) -> None:
        return None


class DatadogLogsSink:
    """Datadog Logs intake v2 ``POST {url}/api/v2/logs`` with ``DD-API-KEY``, gzip-encoded JSON array.

    Each entry: ``ddsource`` ``tessera``, ``service``, ``hostname``, ``ddtags`` (``tenant:<t>``, the
    decision, plus configured tags), ``message`` (the event's message) and the document's fields as
    attributes. Datadog's limits: 1000 entries and 5 MB uncompressed per request (keep ``batch_size`` at
    most 1000). Answers 202; 408, 429, 5xx retried; 400, 401, 403, 413 dead letter.
    """

    MAX_ENTRIES = 1000
    #: the members Datadog's entry adds to the document (besides ``message``)
    _ADDED = ("ddsource", "service", "hostname", "ddtags", "tessera_chain")
    #: absent anywhere in the stored event, they are surely not among its top-level members
    _ANY_ADDED = re.compile(b"|".join(re.escape(json_bytes(name)) for name in _ADDED))

    def __init__(
        self,
        name: str,
        url: str,
        api_key: Secret,
        http: HttpClient,
        *,
        service: str = "tessera",
        hostname: str = "tessera",
        tags: Sequence[str] = (),
    ):
        self.name = name
        self.endpoint = url.rstrip("/") + "/api/v2/logs"
        self._key = api_key
        self._http = http
        self._service = service
        self._hostname = hostname
        self._tags = list(tags)
        self._tags_json: dict[tuple[str, str], bytes] = {}  # (tenant, decision): few distinct values
        self._added_json = b"".join(
            (b',"ddsource":"tessera","service":', json_bytes(service), b',"hostname":', json_bytes(hostname))
        )

    def _ddtags(self, event: ForwardEvent) -> str:
        decision = [f"decision:{event.decision}"] if event.decision else []
        return ",".join([f"tenant:{event.tenant}", *decision, *self._tags])

    def _entry(self, event: ForwardEvent) -> dict[str, Any]:
        doc = event.document()
        return {
            **doc,
            "ddsource": "tessera",
            "service": self._service,
            "hostname": self._hostname,
            "ddtags": self._ddtags(event),
            "message": doc.get("message") or doc.get("class_name") or "tessera audit event",
        }

    def entry(self, event: ForwardEvent) -> bytes:
        """:meth:`_entry` as JSON. The usual event already has its ``message`` and none of the members
        Datadog's entry adds: then the entry is the shared document with those members appended (the
        same JSON, without encoding the event again)."""
        if self._ANY_ADDED.search(event.raw) or not has_text_member(event.raw, "message"):
            # Not the usual event (or one this quick look cannot settle): decode it and decide exactly.
            raw = event.event
            message = raw.get("message")
            if not (isinstance(message, str) and message) or any(key in raw for key in self._ADDED):
                return json_bytes(self._entry(event))
        document = event.document_bytes()
        tags = self._tags_json.get((event.tenant, event.decision))
        if tags is None:
            tags = self._tags_json[(event.tenant, event.decision)] = json_bytes(self._ddtags(event))
        return b"".join((document[:-1], self._added_json, b',"ddtags":', tags, b"}"))

    async def send(self, batch: Sequence[ForwardEvent]) -> Outcome:
        if len(batch) > self.MAX_ENTRIES:
            return Retry(f"Datadog accepts at most {self.MAX_ENTRIES} entries per request; lower batch_size")
        body = gzip.compress(b"[" + b",".join(self.entry(e) for e in batch) + b"]", GZIP_LEVEL)
        headers = {
            "dd-api-key": self._key.reveal().decode(),
            "content-type": "application/json",
            "content-encoding": "gzip",
        }
        response = await self._http.request("POST", self.endpoint, content=body, headers=headers)
        return classify_http(response, f"Datadog {self.name}")

    async def aclose(self) -> None:
        return None


class SentinelSink:
    """Microsoft Sentinel through the Azure Monitor Logs Ingestion API.

    ``POST {endpoint}/dataCollectionRules/{dcr_id}/streams/{stream}?api-version=2023-01-01`` with a JSON
    array (gzip) of records ``{TimeGenerated, Tenant, ChainSeq, ChainHash, PrevHash, Decision, Event}``
    matching the stream's declared columns (the KQL in the query pack reads them), and
    ``Authorization: Bearer <Entra ID token>``. The token comes from the client-credentials flow
    (``POST {authority}/{directory}/oauth2/v2.0/token``, scope ``https://monitor.azure.com//.default``) and
    is cached until a minute before it expires. Answers 204; 429 (with ``Retry-After``) and 5xx retried;
    401 drops the cached token and retries; 400, 403, 413 dead letter.
    """

    API_VERSION = "2023-01-01"
    SCOPE = "https://monitor.azure.com//.default"

    def __init__(
        self,
        name: str,
        endpoint: str,
        dcr_id: str,
        stream: str,
        directory_id: str,
        client_id: str,
        client_secret: Secret,
        http: HttpClient,
        *,
        authority: str = "https://login.microsoftonline.com",
        clock: Callable[[], float] = time.time,
    ):
        self.name = name
        self.url = (
            f"{endpoint.rstrip('/')}/dataCollectionRules/{quote(dcr_id, safe='')}/streams/"
            f"{quote(stream, safe='')}?api-version={self.API_VERSION}"
        )
        self.token_url = f"{authority.rstrip('/')}/{quote(directory_id, safe='')}/oauth2/v2.0/token"
        self._client_id = client_id
        self._secret = client_secret
        self._http = http
        self._clock = clock
        self._token: tuple[str, float] | None = None  # (access token, expires at)

    async def _access_token(self) -> str | Outcome:
        if self._token is not None and self._clock() < self._token[1]:
            return self._token[0]
        form = urlencode(
            {
                "grant_type": "client_credentials",
                "client_id": self._client_id,
                "client_secret": self._secret.reveal().decode(),
                "scope": self.SCOPE,
            }
        ).encode()
        response = await self._http.request(
            "POST",
            self.token_url,
            content=form,
            headers={"content-type": "application/x-www-form-urlencoded"},
        )
        outcome = classify_http(response, f"Sentinel {self.name} token endpoint")
        if not 200 <= response.status_code < 300:
            # A refused credential is an operator's fix away: keep the events (retry), never dead-letter them.
            return outcome if isinstance(outcome, Retry) else Retry(outcome.reason)  # type: ignore[union-attr]
        try:
            answer = json.loads(response.content)
            token, expires_in = str(answer["access_token"]), float(answer.get("expires_in", 3600))
        except (ValueError, KeyError, TypeError):
            return Retry(f"Sentinel {self.name} token endpoint answered without an access_token")
        self._token = (token, self._clock() + max(0.0, expires_in - 60))
        return token

    @staticmethod
    def record(event: ForwardEvent) -> dict[str, Any]:
        return {
            "TimeGenerated": _rfc3339(event.time_ms),
            "Tenant": event.tenant,
            "ChainSeq": event.seq,
            "ChainHash": event.hash,
            "PrevHash": event.prev_hash,
            "Decision": event.decision,
            "Event": event.document(),
        }

    @staticmethod
    def record_bytes(event: ForwardEvent) -> bytes:
        """:meth:`record` as JSON, around the shared document (the event is not encoded again)."""
        return b"".join(
            (
                b'{"TimeGenerated":"',
                _rfc3339(event.time_ms).encode(),
                b'","Tenant":',
                quoted(event.tenant),
                b',"ChainSeq":',
                str(event.seq).encode(),
                b',"ChainHash":',
                json_hex(event.hash),
                b',"PrevHash":',
                json_hex(event.prev_hash),
                b',"Decision":',
                quoted(event.decision),
                b',"Event":',
                event.document_bytes(),
                b"}",
            )
        )

    async def send(self, batch: Sequence[ForwardEvent]) -> Outcome:
        token = await self._access_token()
        if not isinstance(token, str):
            return token
        headers = {
            "authorization": f"Bearer {token}",
            "content-type": "application/json",
            "content-encoding": "gzip",
        }
        body = gzip.compress(b"[" + b",".join(self.record_bytes(e) for e in batch) + b"]", GZIP_LEVEL)
        response = await self._http.request("POST", self.url, content=body, headers=headers)
        if response.status_code == 401:
            self._token = None  # expired or revoked early: fetch a new one on the retry
            return Retry(f"Sentinel {self.name} answered HTTP 401; token refreshed for the retry")
        return classify_http(response, f"Sentinel {self.name}")

    async def aclose(self) -> None:
        return None
