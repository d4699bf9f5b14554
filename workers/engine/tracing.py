"""Traces with OpenTelemetry: one trace from the HTTP call to the worker's completion of the task.

Each process calls `setup()` once at start (the HTTP server's first request, a pool worker's start); until
then, and whenever tracing is off, every function here is a no-op that costs one flag test. Tracing needs
the `otel` extra (the OpenTelemetry SDK and its OTLP/HTTP exporter); without it `setup()` logs a warning
and leaves tracing off. The exporter reads the standard `OTEL_*` variables itself (endpoint, headers,
`OTEL_SERVICE_NAME`, `OTEL_BSP_*` batching).

The spans, and where each is made:

- `HTTP <method> <route>` (server): `neutrino_site.tracing.TracingMiddleware`, continuing the caller's
  `traceparent` header when there is one;
- `neutrino.submit` and `neutrino.publish` (producer): the submit service, around the row's INSERT and the
  JetStream publish; the publish's context travels to the worker as `traceparent` in the task message
  and is kept on the task's row (the dashboard's trace link, and the link of a retry to its original);
- `neutrino.queue_wait`: from the message's JetStream timestamp to the worker's fetch;
- `neutrino.attempt` (consumer) with `neutrino.claim`, `neutrino.run` and `neutrino.complete` under it:
  the pool worker. The run span is made by the worker around its executor call, not inside the child
  process: a child exports nothing, so its own spans (if the task makes any) are not part of the trace.

Every attempt of a task (retries after a failure are redeliveries of the same message) is a child of the
same publish span; a retry asked for by a user (`POST /tasks/<id>/retry`) starts from its own request and
links to the original task's trace.

Imports no Django.
"""

from __future__ import annotations

import logging
import os
import threading
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager, nullcontext
from typing import Any

logger = logging.getLogger("neutrino.tracing")

TRACER_NAME = "neutrino"

_lock = threading.Lock()
_pid = 0  # the process that set tracing up: a forked child (a task's process) starts with it off
_tracer: Any = None


def setup(*, enabled: bool, service_name: str, exporter: str = "otlp") -> bool:
    """Turn tracing on for this process (once; later calls change nothing). True when it is on.

    `exporter`: "otlp" (OTLP over HTTP to OTEL_EXPORTER_OTLP_ENDPOINT, default http://localhost:4318) or
    "console" (spans printed on stdout, for a look without a collector)."""
    global _pid, _tracer
    if not enabled:
        return False
    with _lock:
        if _pid == os.getpid():
            return _tracer is not None
        _pid = os.getpid()
        try:
            from opentelemetry import trace
            from opentelemetry.sdk.resources import Resource
            from opentelemetry.sdk.trace import TracerProvider
            from opentelemetry.sdk.trace.export import BatchSpanProcessor, ConsoleSpanExporter, SpanExporter
        except ImportError as exc:
            logger.warning("tracing is on but the OpenTelemetry SDK is missing (%s): pip install 'neutrino[otel]'",
                           exc)
            return False
        span_exporter: SpanExporter
        if exporter == "console":
            span_exporter = ConsoleSpanExporter()
        else:
            from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter

            span_exporter = OTLPSpanExporter()
        provider = trace.get_tracer_provider()
        if not isinstance(provider, TracerProvider):
            # OTEL_SERVICE_NAME, when set, wins over our default (Resource.create merges the environment's).
            resource = Resource.create({"service.name": os.environ.get("OTEL_SERVICE_NAME") or service_name})
            provider = TracerProvider(resource=resource)
            trace.set_tracer_provider(provider)
        provider.add_span_processor(BatchSpanProcessor(span_exporter))
        _tracer = provider.get_tracer(TRACER_NAME)
        return True


def use_tracer_provider(provider: Any) -> None:
    """Trace this process into `provider` (tests: an SDK provider with an in-memory exporter)."""
    global _pid, _tracer
    with _lock:
        _pid = os.getpid()
        _tracer = provider.get_tracer(TRACER_NAME) if provider is not None else None


def enabled() -> bool:
    return _tracer is not None and _pid == os.getpid()


@contextmanager
def _span(name: str, kind: str, attributes: Mapping[str, Any] | None, parent: str | None,
          links: Sequence[str], start_time_ns: int | None) -> Iterator[Any]:
    from opentelemetry.trace import Link, SpanKind

    context = _context_of(parent) if parent else None
    span_links = [Link(span_context) for span_context in map(_span_context_of, links) if span_context is not None]
    with _tracer.start_as_current_span(name, context=context, kind=getattr(SpanKind, kind.upper()),
                                       attributes=dict(attributes or {}), links=span_links,
                                       start_time=start_time_ns) as span:
        yield span


def span(name: str, *, kind: str = "internal", attributes: Mapping[str, Any] | None = None,
         parent: str | None = None, links: Sequence[str] = (), start_time_ns: int | None = None) -> Any:
    """A context manager: a span named `name`, current while it is open, yielding it (None when off).

    `parent`: a W3C traceparent to continue (else the current span is the parent); `links`: traceparents
    of related spans (a retry's original); `kind`: internal, server, client, producer or consumer.
    An exception leaving the block is recorded on the span and sets its status to error."""
    if not enabled():
        return nullcontext()
    return _span(name, kind, attributes, parent, links, start_time_ns)


def server_span(name: str, headers: Mapping[str, str], *, attributes: Mapping[str, Any] | None = None) -> Any:
    """A server span for an incoming request, continuing the caller's `traceparent` (and `tracestate`)."""
    if not enabled():
        return nullcontext()
    return _span(name, "server", attributes, headers.get("traceparent") or None, (), None)


def current_traceparent() -> str:
    """The W3C traceparent of the current span: "" when there is none or tracing is off."""
    if not enabled():
        return ""
    return _traceparent_of_current()


def _traceparent_of_current() -> str:
    from opentelemetry.trace.propagation.tracecontext import TraceContextTextMapPropagator

    carrier: dict[str, str] = {}
    TraceContextTextMapPropagator().inject(carrier)
    return carrier.get("traceparent", "")


def trace_id_of(traceparent: str) -> str:
    """The 32 hex digits of the trace id in a W3C traceparent ("00-<trace>-<span>-<flags>"); "" when malformed."""
    parts = traceparent.split("-")
    if len(parts) != 4 or len(parts[1]) != 32:
        return ""
    return parts[1]


def set_attributes(span: Any, attributes: Mapping[str, Any]) -> None:
    """Add attributes to a span from `span()` (a no-op on None: tracing off)."""
    if span is not None:
        span.set_attributes(dict(attributes))


def _context_of(traceparent: str) -> Any:
    from opentelemetry.trace.propagation.tracecontext import TraceContextTextMapPropagator

    return TraceContextTextMapPropagator().extract({"traceparent": traceparent})


def _span_context_of(traceparent: str) -> Any:
    from opentelemetry import trace

    span_context = trace.get_current_span(_context_of(traceparent)).get_span_context()
    return span_context if span_context.is_valid else None
