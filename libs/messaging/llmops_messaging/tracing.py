"""W3C ``traceparent`` propagation between OpenTelemetry spans and CloudEvents envelopes."""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from contextlib import contextmanager

from opentelemetry import context as otel_context
from opentelemetry import trace
from opentelemetry.trace.propagation.tracecontext import TraceContextTextMapPropagator

_PROPAGATOR = TraceContextTextMapPropagator()


def current_traceparent() -> str | None:
    """The ``traceparent`` of the active span, or None when no span is recording."""
    carrier: dict[str, str] = {}
    _PROPAGATOR.inject(carrier)
    return carrier.get("traceparent")


@contextmanager
def consumer_span(
    name: str, *, traceparent: str | None, attributes: dict[str, str] | None = None
) -> Iterator[trace.Span]:
    """A consumer span that continues the producer's trace when the event carries one."""
    parent = _PROPAGATOR.extract({"traceparent": traceparent}) if traceparent else otel_context.Context()
    tracer = trace.get_tracer("llmops.messaging")
    with tracer.start_as_current_span(
        name, context=parent, kind=trace.SpanKind.CONSUMER, attributes=attributes
    ) as span:
        yield span


@contextmanager
def batch_consumer_span(
    name: str, *, traceparents: Iterable[str | None], attributes: dict[str, str | int] | None = None
) -> Iterator[trace.Span]:
    """One consumer span for a batch of events, linked to each producer's span (the OpenTelemetry
    messaging conventions for batch processing: a batch has many parents, so it links to them)."""
    links = []
    for traceparent in dict.fromkeys(tp for tp in traceparents if tp):
        span_context = trace.get_current_span(_PROPAGATOR.extract({"traceparent": traceparent})).get_span_context()
        if span_context.is_valid:
            links.append(trace.Link(span_context))
    tracer = trace.get_tracer("llmops.messaging")
    with tracer.start_as_current_span(
        name, context=otel_context.Context(), kind=trace.SpanKind.CONSUMER, attributes=attributes, links=links
    ) as span:
        yield span


def configure_tracing(service: str) -> None:
    """Install an SDK tracer provider so each service starts real traces that events carry on.

    Spans are not exported by default; an OpenTelemetry exporter can be added by configuration
    (``OTEL_*`` variables with the exporter package installed) without code changes here.
    """
    from opentelemetry.sdk.resources import Resource
    from opentelemetry.sdk.trace import TracerProvider

    if isinstance(trace.get_tracer_provider(), TracerProvider):
        return
    trace.set_tracer_provider(TracerProvider(resource=Resource.create({"service.name": f"llmops-{service}"})))
