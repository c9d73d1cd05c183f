"""OpenTelemetry tracing, configured by the standard ``OTEL_*`` environment variables; off by default.

Tracing is on when ``OTEL_TRACES_EXPORTER`` names an exporter (``otlp`` or ``console``), or when it is
unset and ``OTEL_EXPORTER_OTLP_ENDPOINT`` / ``OTEL_EXPORTER_OTLP_TRACES_ENDPOINT`` is set;
``OTEL_SDK_DISABLED=true`` or ``OTEL_TRACES_EXPORTER=none`` turns it off. The OTLP protocol comes from
``OTEL_EXPORTER_OTLP_TRACES_PROTOCOL`` / ``OTEL_EXPORTER_OTLP_PROTOCOL``: ``grpc`` (default) or
``http/protobuf``. Everything else (endpoint, headers, timeout, ``OTEL_SERVICE_NAME``,
``OTEL_RESOURCE_ATTRIBUTES``, ``OTEL_TRACES_SAMPLER``, ``OTEL_BSP_*``) is read by the SDK itself.

With tracing off nothing here is built: the gRPC servers get no interceptor and the pipeline no tracer,
so a check creates no span object at all.

Spans of one check, as Envoy → Tessera → stages:

- the gRPC server span ``envoy.service.auth.v3.Authorization/Check`` (``opentelemetry-instrumentation-grpc``,
  ``rpc.*`` attributes), a child of Envoy's ext_authz span through the W3C ``traceparent`` Envoy sends;
  Tessera adds ``mcp.session.id`` from the request's ``Mcp-Session-Id`` header;
- one span per authorized message, named ``{mcp.method.name} {gen_ai.tool.name}`` (MCP semantic
  conventions), with ``tessera.decision``, ``tessera.check``, ``tessera.code``, ``tessera.tenant``,
  ``tessera.agent``, ``tessera.decision_id`` and ``error.type`` for a JSON-RPC error;
- under it (unless ``TESSERA_TRACE_STAGES=off``) one span per stage: ``tessera.capability``,
  ``tessera.intent``, ``tessera.provenance``,
  ``tessera.policy`` (with ``tessera.approval`` inside when an approval is looked up or created),
  ``tessera.budget``; and ``tessera.audit`` for the durable audit commit.

Attributes never carry a token, a prompt or an argument value (tool and argument *names* only).
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from opentelemetry import trace
from opentelemetry.trace import SpanKind, Status, StatusCode

from authz import __version__
from authz.errors import ConfigError


def tracing_requested(env: Mapping[str, str] | None = None) -> bool:
    """Whether the ``OTEL_*`` variables ask for traces (see the module docstring)."""
    env = os.environ if env is None else env
    if env.get("OTEL_SDK_DISABLED", "").strip().lower() == "true":
        return False
    exporter = env.get("OTEL_TRACES_EXPORTER")
    if exporter is not None and exporter.strip():
        return exporter.strip().lower() != "none"
    return bool(env.get("OTEL_EXPORTER_OTLP_ENDPOINT") or env.get("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT"))


def require_current_otlp_protos() -> None:
    """Refuse to start tracing on a clobbered ``opentelemetry/proto``: ``xds-protos`` ships an older copy
    of that package, and when it is installed after ``opentelemetry-proto`` the OTLP exporters fail at
    import. ``make install`` and the Dockerfile reinstall ``opentelemetry-proto`` last; other installs
    get this error with the command that mends them."""
    from opentelemetry.proto.common.v1 import common_pb2

    if not hasattr(common_pb2, "InstrumentationScope"):
        raise ConfigError(
            "tracing is on, but opentelemetry/proto holds xds-protos' older copy: reinstall it last with "
            "`pip install --force-reinstall --no-deps opentelemetry-proto==$(pip show opentelemetry-proto "
            "| sed -n 's/^Version: //p')`"
        )


def _exporter(env: Mapping[str, str]) -> Any:
    name = (env.get("OTEL_TRACES_EXPORTER") or "otlp").split(",")[0].strip().lower()
    if name == "console":
        from opentelemetry.sdk.trace.export import ConsoleSpanExporter

        return ConsoleSpanExporter()
    if name != "otlp":
        raise ConfigError(f"OTEL_TRACES_EXPORTER={name!r} is not supported (otlp, console or none)")
    require_current_otlp_protos()
    protocol = (
        env.get("OTEL_EXPORTER_OTLP_TRACES_PROTOCOL") or env.get("OTEL_EXPORTER_OTLP_PROTOCOL") or "grpc"
    ).strip()
    if protocol == "grpc":
        from opentelemetry.exporter.otlp.proto.grpc.trace_exporter import OTLPSpanExporter

        return OTLPSpanExporter()
    if protocol == "http/protobuf":
        from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter as HttpExporter

        return HttpExporter()
    raise ConfigError(f"OTLP protocol {protocol!r} is not supported (grpc or http/protobuf)")


@dataclass
class Tracing:
    """A service's tracer provider and what it hands to the gRPC server, the pipeline and the logs."""

    provider: Any  # opentelemetry.sdk.trace.TracerProvider
    tracer: trace.Tracer

    def server_interceptors(self) -> list[Any]:
        """The ``grpc.aio`` server interceptor of ``opentelemetry-instrumentation-grpc``: a server span
        per RPC, continuing the caller's W3C trace context."""
        from opentelemetry.instrumentation.grpc import aio_server_interceptor

        return [aio_server_interceptor(tracer_provider=self.provider)]

    def pipeline_tracer(self, *, stages: bool = True) -> PipelineTracer:
        """The pipeline's spans; ``stages=False`` (``TESSERA_TRACE_STAGES=off``): the call's span only."""
        return PipelineTracer(self.tracer, stages=stages)

    def span(self, name: str, **attributes: Any) -> Any:
        return self.tracer.start_as_current_span(name, attributes=attributes or None)

    def shutdown(self) -> None:
        """Flush spans still buffered and stop the exporter."""
        self.provider.shutdown()


def setup_tracing(service_name: str, env: Mapping[str, str] | None = None) -> Tracing | None:
    """Build tracing from ``OTEL_*``; None when it is off (the default)."""
    env = os.environ if env is None else env
    if not tracing_requested(env):
        return None
    from opentelemetry.sdk.resources import SERVICE_NAME, SERVICE_VERSION, Resource
    from opentelemetry.sdk.trace import TracerProvider
    from opentelemetry.sdk.trace.export import BatchSpanProcessor

    version = __version__
    # Resource.create adds OTEL_RESOURCE_ATTRIBUTES; OTEL_SERVICE_NAME, when set, names the service.
    name = env.get("OTEL_SERVICE_NAME") or service_name
    resource = Resource.create({SERVICE_NAME: name, SERVICE_VERSION: version})
    provider = TracerProvider(resource=resource)
    provider.add_span_processor(BatchSpanProcessor(_exporter(env), max_export_batch_size=_batch_size(env)))
    return Tracing(provider, provider.get_tracer("tessera", version))


#: Spans per export when ``OTEL_BSP_MAX_EXPORT_BATCH_SIZE`` is unset (the SDK's default is 512). The
#: export thread encodes a batch holding the GIL, and the checks wait meanwhile: measured at one check in
#: flight with every span exported, batches of 512 put the p99 at ~31 ms, of 64 at ~14 ms, at the same
#: throughput with 32 in flight (16 cost a third of it).
EXPORT_BATCH_SIZE = 64


def _batch_size(env: Mapping[str, str]) -> int | None:
    """Tessera's batch size, unless the operator set the SDK's own variable (None: the SDK reads it)."""
    return None if env.get("OTEL_BSP_MAX_EXPORT_BATCH_SIZE", "").strip() else EXPORT_BATCH_SIZE


def current_trace_id() -> str | None:
    """The active span's trace id (32 hex digits), None outside a sampled trace (an id whose spans are
    never exported would send an auditor nowhere)."""
    context = trace.get_current_span().get_span_context()
    return format(context.trace_id, "032x") if context.is_valid and context.trace_flags.sampled else None


def annotate_check_span(request: Any) -> None:
    """Put the MCP session id (``Mcp-Session-Id``) on the current gRPC server span."""
    span = trace.get_current_span()
    if not span.is_recording():
        return
    http = request.attributes.request.http
    session = None
    for header in http.header_map.headers:
        if header.key.lower() == "mcp-session-id":
            session = (header.raw_value or header.value.encode()).decode("utf-8", "replace")
            break
    else:
        session = http.headers.get("mcp-session-id")
    if session:
        span.set_attribute("mcp.session.id", session[:256])


class PipelineTracer:
    """The pipeline's tracing seam (see :class:`authz.check.pipeline.Pipeline`), on OpenTelemetry."""

    __slots__ = ("_stages", "_tracer")

    def __init__(self, tracer: trace.Tracer, *, stages: bool = True):
        self._tracer = tracer
        self._stages = stages

    def call(self, inp: Any) -> Any:
        """The span of one authorized message (its name and attributes follow the MCP conventions)."""
        method = inp.rpc_method or inp.http_method
        attributes: dict[str, Any] = {"mcp.method.name": method, "tessera.transport": inp.transport}
        name = method
        if inp.tool is not None:
            attributes["gen_ai.tool.name"] = inp.tool
            attributes["gen_ai.operation.name"] = "execute_tool"
            name = f"{method} {inp.tool}"
        return self._tracer.start_as_current_span(
            name, kind=SpanKind.INTERNAL, attributes=attributes, record_exception=False
        )

    def stage(self, name: str, within: Any = None) -> Any:
        """A stage's span, started and ended around the stage without becoming the current span: what
        makes a span current (context attach and detach) cost as much again as the span itself, five
        times per check. Spans a stage opens name it as ``within``; logs in a stage carry the call's.
        With stage spans off, none is made: with every span exported, the five stage spans per check cost
        a third of the traced throughput (616 against 419 checks/s at 32 in flight)."""
        if not self._stages:
            return _NO_STAGE_SPAN
        return _StageSpan(self._tracer, name, within)

    def finish(self, span: Any, decision: Any) -> None:
        check = decision.check
        attributes: dict[str, Any] = {
            "tessera.decision": decision.outcome.value,
            "tessera.decision_id": decision.decision_id,
        }
        if check is not None:
            attributes["tessera.check"] = check.value
        if decision.code is not None:
            attributes["tessera.code"] = decision.code
            attributes["error.type"] = str(decision.code)
        if decision.tenant:
            attributes["tessera.tenant"] = decision.tenant
        if decision.agent:
            attributes["tessera.agent"] = decision.agent
        span.set_attributes(attributes)
        if check is not None and check.value == "unavailable":
            span.set_status(Status(StatusCode.ERROR, "authorization unavailable (fail closed)"))


_NO_STAGE_SPAN = contextlib.nullcontext()


class _StageSpan:
    """The context manager of :meth:`PipelineTracer.stage` (an exception leaving the stage is recorded
    on its span and marks it as an error, as ``start_as_current_span`` does)."""

    __slots__ = ("_attributes", "_context", "_name", "_span", "_tracer")

    def __init__(self, tracer: trace.Tracer, name: str, within: Any):
        self._tracer = tracer
        self._name = f"tessera.{name}"
        self._attributes = {"tessera.stage": name}
        self._context = None if within is None else trace.set_span_in_context(within)
        self._span: Any = None

    def __enter__(self) -> Any:
        self._span = self._tracer.start_span(self._name, context=self._context, attributes=self._attributes)
        return self._span

    def __exit__(self, kind: Any, exc: Any, traceback: Any) -> None:
        span = self._span
        if exc is not None and isinstance(exc, Exception):
            span.record_exception(exc)
            span.set_status(Status(StatusCode.ERROR, f"{type(exc).__name__}: {exc}"))
        span.end()
