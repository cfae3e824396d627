"""Work that a batch of events sets off (a snapshot cut) continues the trace of the event that
triggered it, with bounded links to the others, so one trace runs from a record to deployment."""

from __future__ import annotations

import asyncio
from collections.abc import Iterator

import pytest
from opentelemetry import trace
from opentelemetry.sdk.trace import ReadableSpan, TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

from llmops_messaging.tracing import (
    MAX_LINKS,
    batch_consumer_span,
    configure_tracing,
    consumer_span,
    current_traceparent,
    job_span,
    triggered_span,
)


@pytest.fixture(scope="module")
def exported() -> Iterator[InMemorySpanExporter]:
    configure_tracing("tests")
    provider = trace.get_tracer_provider()
    assert isinstance(provider, TracerProvider)
    exporter = InMemorySpanExporter()
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    yield exporter
    exporter.shutdown()  # the provider is the process's: later spans are dropped, not kept here


def _traceparent(index: int) -> str:
    return f"00-{index + 1:032x}-{index + 1:016x}-01"


def _span(exporter: InMemorySpanExporter, name: str) -> ReadableSpan:
    return next(span for span in reversed(exporter.get_finished_spans()) if span.name == name)


async def test_a_cut_set_off_by_a_batch_continues_its_last_records_trace(exported: InMemorySpanExporter) -> None:
    records = [_traceparent(index) for index in range(100)] + [None]
    published: list[str | None] = []

    async def cut() -> None:
        with triggered_span("dataset snapshot"):
            published.append(current_traceparent())

    with batch_consumer_span("records process", traceparents=records):
        task = asyncio.get_running_loop().create_task(cut())  # as the count policy starts a cut
    await task

    batch, snapshot = _span(exported, "records process"), _span(exported, "dataset snapshot")
    assert len(batch.links) == MAX_LINKS  # the latest events' producers, not all hundred
    assert snapshot.parent is not None
    assert (snapshot.parent.trace_id, snapshot.parent.span_id) == (100, 100)  # the last record carrying one
    assert snapshot.context.trace_id == 100
    linked = {link.context.span_id for link in snapshot.links}
    assert len(snapshot.links) <= MAX_LINKS and batch.context.span_id in linked and 99 in linked
    # The event the cut publishes carries the cut's span onward.
    assert published == [f"00-{100:032x}-{snapshot.context.span_id:016x}-01"]


async def test_a_cut_set_off_by_records_without_trace_context_is_a_child_of_the_batch(
    exported: InMemorySpanExporter,
) -> None:
    with batch_consumer_span("plain process", traceparents=[None, None]), triggered_span("plain snapshot"):
        pass
    batch, snapshot = _span(exported, "plain process"), _span(exported, "plain snapshot")
    assert snapshot.parent is not None and snapshot.parent.span_id == batch.context.span_id
    assert not snapshot.links


def test_a_cut_for_one_event_and_a_job_are_children_of_its_consumer_span(exported: InMemorySpanExporter) -> None:
    request = _traceparent(7)
    with (
        consumer_span("training process", traceparent=request),
        triggered_span("requested snapshot"),
        job_span("training job", attributes={"llmops.model.name": "m"}),
    ):
        pass
    consumer = _span(exported, "training process")
    snapshot, job = _span(exported, "requested snapshot"), _span(exported, "training job")
    assert consumer.context.trace_id == snapshot.context.trace_id == job.context.trace_id == 8
    assert snapshot.parent is not None and snapshot.parent.span_id == consumer.context.span_id
    assert job.parent is not None and job.parent.span_id == snapshot.context.span_id
    assert job.attributes is not None and job.attributes["llmops.model.name"] == "m"


def test_a_batch_without_links_still_hands_its_last_records_trace_on(exported: InMemorySpanExporter) -> None:
    with (
        batch_consumer_span("unlinked process", traceparents=[_traceparent(1)], max_links=0),
        triggered_span("unlinked snapshot"),
    ):
        pass
    assert not _span(exported, "unlinked process").links
    snapshot = _span(exported, "unlinked snapshot")
    assert snapshot.parent is not None and snapshot.parent.span_id == 2
