"""W3C ``traceparent`` propagation between OpenTelemetry spans and CloudEvents envelopes."""

from __future__ import annotations

import re
from collections.abc import Iterable, Iterator
from contextlib import contextmanager

from opentelemetry import context as otel_context
from opentelemetry import trace
from opentelemetry.trace.propagation.tracecontext import TraceContextTextMapPropagator

from llmops_config import telemetry
from llmops_events import KafkaRecord

_PROPAGATOR = TraceContextTextMapPropagator()
PLAIN_TRACEPARENT = "traceparent"
"""The W3C header name other producers (OpenTelemetry's Kafka instrumentations) use."""
_TRACEPARENT = re.compile(r"[0-9a-f]{2}-[0-9a-f]{32}-[0-9a-f]{16}-[0-9a-f]{2}")


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
    """Install the SDK tracer provider so each service starts real traces that events carry on,
    exported over OTLP when ``OTEL_EXPORTER_OTLP_ENDPOINT`` is set (``llmops_config.telemetry``)."""
    telemetry.configure_tracing(service)


def traceparent_of(record: KafkaRecord, envelope_traceparent: str | None) -> str | None:
    """The producer's trace context of a message: the CloudEvents extension (``ce_traceparent``
    header or the structured-mode attribute), else a plain W3C ``traceparent`` header as other
    producers' OpenTelemetry Kafka instrumentations write it."""
    if envelope_traceparent:
        return envelope_traceparent
    raw = record.header(PLAIN_TRACEPARENT)
    if raw is None:
        return None
    try:
        value = raw.decode("ascii").strip()
    except UnicodeDecodeError:
        return None
    return value if _TRACEPARENT.fullmatch(value) else None


@contextmanager
def job_span(name: str, *, attributes: dict[str, str | int] | None = None) -> Iterator[trace.Span]:
    """An internal span around one long unit of work (a training job, an evaluation) inside the
    handler's consumer span, so a trace shows the job itself next to the bus hops."""
    with trace.get_tracer("llmops.jobs").start_as_current_span(name, attributes=attributes) as span:
        yield span
