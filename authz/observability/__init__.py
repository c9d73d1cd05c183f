"""Observability: Prometheus metrics, OpenTelemetry traces, JSON logs, and the metrics/health HTTP port.

- :mod:`._metrics`: :class:`CheckMetrics`, :class:`AdminMetrics` and :func:`new_registry` (exposed with
  ``prometheus_client``; the metric names are listed there).
- :mod:`._tracing`: :func:`setup_tracing` from the standard ``OTEL_*`` variables (off by default) and the
  pipeline's tracing seam.
- :mod:`._logging`: :func:`configure_logging`, one JSON object per line, credentials redacted.
- :mod:`._http`: :func:`serve_http`, ``/healthz``, ``/readyz``, ``/metrics``.
"""

from authz.observability._http import serve_http
from authz.observability._logging import JsonFormatter, Redactor, configure_logging, redactor
from authz.observability._metrics import (
    DURATION_BUCKETS,
    STAGES,
    AdminMetrics,
    CheckMetrics,
    Distribution,
    new_registry,
)
from authz.observability._tracing import (
    PipelineTracer,
    Tracing,
    annotate_check_span,
    current_trace_id,
    setup_tracing,
    tracing_requested,
)

__all__ = [
    "DURATION_BUCKETS",
    "STAGES",
    "AdminMetrics",
    "CheckMetrics",
    "Distribution",
    "JsonFormatter",
    "PipelineTracer",
    "Redactor",
    "Tracing",
    "annotate_check_span",
    "configure_logging",
    "current_trace_id",
    "new_registry",
    "redactor",
    "serve_http",
    "setup_tracing",
    "tracing_requested",
]
