"""Audit fan-out: committed audit events to SIEMs and files, from a durable cursor (ARCHITECTURE §9).

* :class:`Forwarder` — the one driver: lease, cursor, batching, backoff with jitter, dead letters.
* :class:`Sink` — what a destination implements: ``send(batch)`` → :class:`Ack` | :class:`Retry` |
  :class:`Reject`; :func:`classify_http` for the usual HTTP answers.
* Sinks: :class:`WebhookSink` (HMAC-signed, timestamped; :func:`verify_webhook` for receivers),
  :class:`NdjsonFileSink` (local file with rotation), :class:`SplunkHecSink`, :class:`DatadogLogsSink`,
  :class:`SentinelSink` (Logs Ingestion API), :class:`S3Sink` (gzip NDJSON by tenant/date/hour, boto3).
* Notifications (same driver, a :class:`NotifyRule` filter): :class:`SlackSink`, :class:`TeamsSink`,
  :class:`PagerDutySink` (Events v2, chain hash as ``dedup_key``).
* :class:`ForwarderSupervisor` — runs one :class:`Forwarder` per sink of the sinks file and of the
  tenants' API configuration (:mod:`authz.forward._tenant`), and restarts a sink whose configuration
  changed, without a process restart.
* ``tessera forward`` (:mod:`authz.forward.cli`) runs them in their own process; the admin service can
  run them too (``TESSERA_ADMIN_FORWARDER``).
* :class:`ForwardEvent` — the event shape every sink receives, chain hash as idempotency key.
"""

from __future__ import annotations

from authz.forward._driver import (
    ChainGap,
    CursorBatcher,
    EventCache,
    Forwarder,
    ForwarderSettings,
    LeaseLost,
    default_holder,
    request_replay,
)
from authz.forward._event import ForwardEvent, forward_event
from authz.forward._file import NdjsonFileSink
from authz.forward._health import SinkHealth, forwarder_health
from authz.forward._notify import SYSTEM_ACTIONS, NotifyRule, PagerDutySink, RateRule, SlackSink, TeamsSink
from authz.forward._s3 import S3Sink
from authz.forward._sink import (
    Ack,
    HttpClient,
    HttpResponse,
    Outcome,
    Reject,
    Retry,
    Sink,
    classify_http,
    parse_retry_after,
)
from authz.forward._supervisor import ForwarderSupervisor, supervisor_from_config
from authz.forward._tenant import (
    ROUTE_KINDS,
    SINK_KINDS,
    SINK_NAME,
    TenantSecrets,
    forwarder_sink_name,
    spec_urls,
    validate_route_spec,
    validate_sink_spec,
)
from authz.forward._vendors import DatadogLogsSink, SentinelSink, SplunkHecSink
from authz.forward._webhook import WebhookSink, verify_webhook, webhook_signature

__all__ = [
    "ROUTE_KINDS",
    "SINK_KINDS",
    "SINK_NAME",
    "SYSTEM_ACTIONS",
    "Ack",
    "ChainGap",
    "CursorBatcher",
    "DatadogLogsSink",
    "EventCache",
    "ForwardEvent",
    "Forwarder",
    "ForwarderSettings",
    "ForwarderSupervisor",
    "HttpClient",
    "HttpResponse",
    "LeaseLost",
    "NdjsonFileSink",
    "NotifyRule",
    "Outcome",
    "PagerDutySink",
    "RateRule",
    "Reject",
    "Retry",
    "S3Sink",
    "SentinelSink",
    "Sink",
    "SinkHealth",
    "SlackSink",
    "SplunkHecSink",
    "TeamsSink",
    "TenantSecrets",
    "WebhookSink",
    "classify_http",
    "default_holder",
    "forward_event",
    "forwarder_health",
    "forwarder_sink_name",
    "parse_retry_after",
    "request_replay",
    "spec_urls",
    "supervisor_from_config",
    "validate_route_spec",
    "validate_sink_spec",
    "verify_webhook",
    "webhook_signature",
]
