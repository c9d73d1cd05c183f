"""Forwarder metrics in Prometheus text format (``tessera forward run --metrics-port``).

Lag, dead letters and last success come from the store (every replica reports the same numbers, so
alert on any); delivered and dead-lettered counters and ``lease_held`` are this process's own.
"""

from __future__ import annotations

from collections.abc import Sequence

from authz.forward._driver import Forwarder
from authz.forward._health import SinkHealth, forwarder_health
from authz.storage.protocols import Store


def _label(value: str) -> str:
    return value.replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n")


class ForwarderMetrics:
    """``refresh()`` (async, from the store) then ``render()`` (sync, for the metrics endpoint)."""

    def __init__(self, forwarders: Sequence[Forwarder]):
        self.forwarders = list(forwarders)
        self.health: list[SinkHealth] = []
        self.refresh_errors = 0

    async def refresh(self, store: Store) -> None:
        try:
            self.health = await forwarder_health(store)
        except Exception:  # keep serving the last numbers; the error counter says they are stale
            self.refresh_errors += 1

    def render(self) -> str:
        lines: list[str] = []

        def family(name: str, kind: str, help_text: str) -> None:
            lines.extend([f"# HELP {name} {help_text}", f"# TYPE {name} {kind}"])

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
            family(name, "gauge", help_text)
            for h in self.health:
                labels = f'sink="{_label(h.cursor.sink)}",tenant="{_label(h.cursor.tenant)}"'
                lines.append(f"{name}{{{labels}}} {value(h)}")
        per_sink = [
            ("tessera_forwarder_events_delivered_total", "counter", "Events this process delivered.",
             lambda f: f.delivered),
            ("tessera_forwarder_events_dead_lettered_total", "counter", "Events this process dead-lettered.",
             lambda f: f.dead_lettered),
            ("tessera_forwarder_lease_held", "gauge", "1 when this process is the sink's active forwarder.",
             lambda f: int(f.lease_held)),
        ]  # fmt: skip
        for name, kind, help_text, value in per_sink:
            family(name, kind, help_text)
            for f in self.forwarders:
                lines.append(f'{name}{{sink="{_label(f.sink.name)}"}} {value(f)}')
        family(
            "tessera_forwarder_metrics_refresh_errors_total", "counter", "Failed reads of forwarder health."
        )
        lines.append(f"tessera_forwarder_metrics_refresh_errors_total {self.refresh_errors}")
        return "\n".join(lines) + "\n"
