"""Forwarder metrics (``tessera forward run --metrics-port``), a ``prometheus_client`` collector.

Lag, dead letters and last success come from the store (every replica reports the same numbers, so
alert on any); delivered and dead-lettered counters and ``lease_held`` are this process's own.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Sequence

from prometheus_client.metrics_core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

from authz.forward._driver import Forwarder
from authz.forward._health import SinkHealth, forwarder_health
from authz.storage.protocols import Store


class ForwarderMetrics(Collector):
    """``refresh()`` (async, from the store; the endpoint calls it every few seconds), then
    ``collect()`` from the last snapshot, so a scrape never waits for the database."""

    def __init__(self, forwarders: Sequence[Forwarder] | Callable[[], Sequence[Forwarder]]):
        # a callable: the supervisor's running forwarders, which change with the configuration
        self._forwarders = forwarders if callable(forwarders) else (lambda: list(forwarders))
        self.health: list[SinkHealth] = []
        self.refresh_errors = 0

    async def refresh(self, store: Store) -> None:
        try:
            self.health = await forwarder_health(store)
        except Exception:  # keep serving the last numbers; the error counter says they are stale
            self.refresh_errors += 1

    def collect(self) -> Iterator[Metric]:
        per_cursor = [
            ("tessera_forwarder_lag_events", "Committed audit events the sink has not acknowledged.",
             lambda h: h.lag_events),
            ("tessera_forwarder_lag_seconds", "Age of the oldest event the sink has not acknowledged.",
             lambda h: h.lag_seconds),
            ("tessera_forwarder_dead_letters", "Dead letters not yet replayed.", lambda h: h.dead_letters),
            ("tessera_forwarder_last_success_timestamp_seconds", "When the sink last acknowledged a batch.",
             lambda h: h.cursor.last_success_at or 0),
        ]  # fmt: skip
        for name, help_text, value in per_cursor:
            gauge = GaugeMetricFamily(name, help_text, labels=["sink", "tenant"])
            for h in self.health:
                gauge.add_metric([h.cursor.sink, h.cursor.tenant], value(h))
            yield gauge
        delivered = CounterMetricFamily(
            "tessera_forwarder_events_delivered", "Events this process delivered.", labels=["sink"]
        )
        dead = CounterMetricFamily(
            "tessera_forwarder_events_dead_lettered", "Events this process dead-lettered.", labels=["sink"]
        )
        held = GaugeMetricFamily(
            "tessera_forwarder_lease_held",
            "1 when this process is the sink's active forwarder.",
            labels=["sink"],
        )
        for f in self._forwarders():
            delivered.add_metric([f.sink.name], f.delivered)
            dead.add_metric([f.sink.name], f.dead_lettered)
            held.add_metric([f.sink.name], int(f.lease_held))
        yield from (delivered, dead, held)
        yield CounterMetricFamily(
            "tessera_forwarder_metrics_refresh_errors",
            "Failed reads of forwarder health.",
            value=self.refresh_errors,
        )
