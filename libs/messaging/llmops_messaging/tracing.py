"""W3C ``traceparent`` propagation between OpenTelemetry spans and CloudEvents envelopes."""

from __future__ import annotations

import re
from collections.abc import Iterable, Iterator, Mapping
from contextlib import contextmanager
from contextvars import ContextVar

from opentelemetry import context as otel_context
from opentelemetry import trace
from opentelemetry.trace.propagation.tracecontext import TraceContextTextMapPropagator

from llmops_config import telemetry
from llmops_events import KafkaRecord

_PROPAGATOR = TraceContextTextMapPropagator()
PLAIN_TRACEPARENT = "traceparent"
"""The W3C header name other producers (OpenTelemetry's Kafka instrumentations) use."""
_TRACEPARENT = re.compile(r"[0-9a-f]{2}-[0-9a-f]{32}-[0-9a-f]{16}-[0-9a-f]{2}")
MAX_LINKS = 32
"""Most links one span gets to the events of a batch: the latest ones (a batch holds hundreds of
records; a trace viewer shows a few links, and parsing every traceparent would cost per record)."""

Attributes = Mapping[str, str | int | float | bool]

_BATCH_TRIGGERS: ContextVar[tuple[trace.SpanContext, ...]] = ContextVar("llmops_batch_triggers", default=())
"""The producers' span contexts of the batch being handled (the latest ``MAX_LINKS + 1``, in batch
order), for work the batch sets off and that runs later, in a task created under it (a snapshot
cut): :func:`triggered_span` continues the last one's trace."""


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
    name: str,
    *,
    traceparents: Iterable[str | None],
    attributes: dict[str, str | int] | None = None,
    max_links: int = MAX_LINKS,
) -> Iterator[trace.Span]:
    """One consumer span for a batch of events, linked to the producers' spans of its latest
    ``max_links`` events (the OpenTelemetry messaging conventions for batch processing: a batch has
    many parents, so it links to them). Work the batch sets off continues the last event's trace
    (:func:`triggered_span`)."""
    contexts = _latest_span_contexts(traceparents, max_links + 1)
    links = [trace.Link(context) for context in contexts[-max_links:]] if max_links > 0 else []
    tracer = trace.get_tracer("llmops.messaging")
    token = _BATCH_TRIGGERS.set(contexts)
    try:
        with tracer.start_as_current_span(
            name, context=otel_context.Context(), kind=trace.SpanKind.CONSUMER, attributes=attributes, links=links
        ) as span:
            yield span
    finally:
        _BATCH_TRIGGERS.reset(token)


@contextmanager
def triggered_span(name: str, *, attributes: Attributes | None = None) -> Iterator[trace.Span]:
    """A span around work that handled events set off (a snapshot cut when a batch of records
    crosses the count policy's threshold), so the trace of the event that triggered it goes on
    through it and through what it publishes.

    Set off by a batch (also from a task created while the batch was handled): a child of the
    producer's span of the batch's last event that carries a trace context, linked to the other
    events' (at most ``MAX_LINKS`` in all) and to the batch's own consumer span; when none of the
    batch's events carries a trace context, a child of the batch's span. Otherwise: a child of the
    current span (the consumer span of the one event being handled), or a new trace.
    """
    triggers = _BATCH_TRIGGERS.get()
    links: list[trace.Link] = []
    parent: otel_context.Context | None = None
    if triggers:
        parent = trace.set_span_in_context(trace.NonRecordingSpan(triggers[-1]), otel_context.Context())
        links = [trace.Link(context) for context in triggers[:-1]]
        batch = trace.get_current_span().get_span_context()
        if batch.is_valid:
            links = [*links[-(MAX_LINKS - 1) :], trace.Link(batch)] if MAX_LINKS > 1 else [trace.Link(batch)]
    tracer = trace.get_tracer("llmops.jobs")
    token = _BATCH_TRIGGERS.set(())  # what it sets off in turn continues this span
    try:
        with tracer.start_as_current_span(name, context=parent, attributes=attributes, links=links) as span:
            yield span
    finally:
        _BATCH_TRIGGERS.reset(token)


def _latest_span_contexts(traceparents: Iterable[str | None], limit: int) -> tuple[trace.SpanContext, ...]:
    """The valid, distinct span contexts of the last ``limit`` events carrying one, in batch order
    (parsed from the end, so a batch of hundreds parses ``limit`` of them)."""
    if limit <= 0:
        return ()
    found: dict[str, trace.SpanContext] = {}
    for traceparent in reversed(list(traceparents)):
        if not traceparent or traceparent in found:
            continue
        span_context = trace.get_current_span(_PROPAGATOR.extract({"traceparent": traceparent})).get_span_context()
        if span_context.is_valid:
            found[traceparent] = span_context
            if len(found) >= limit:
                break
    return tuple(reversed(found.values()))


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
def job_span(name: str, *, attributes: Attributes | None = None) -> Iterator[trace.Span]:
    """An internal span around one long unit of work (a training job, an evaluation, a go-live)
    inside the handler's consumer span, so a trace shows the job itself next to the bus hops; the
    events published inside it carry it onward. One span per job, never per step."""
    with trace.get_tracer("llmops.jobs").start_as_current_span(name, attributes=attributes) as span:
        yield span


def annotate(attributes: Attributes) -> None:
    """Add attributes to the current span once they are known (a job's model version is allocated
    inside it); nothing when no span records."""
    span = trace.get_current_span()
    if span.is_recording():
        span.set_attributes(attributes)
