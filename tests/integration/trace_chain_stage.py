"""One hop of a record's way to deployment, as its own process exporting spans over OTLP, for
``test_tracing``: the platform's consumer (``EventConsumer`` over the real broker) and tracing
helpers with the spans the services open around their work, and stand-in work inside them.

Run as a script (``python trace_chain_stage.py STAGE PREFIX STATE_DIR RECORDS``): the tracer
provider is set up as a service's (``configure_tracing``: service name ``llmops-STAGE``, exported to
``OTEL_EXPORTER_OTLP_ENDPOINT``); it consumes its topic under ``PREFIX``, publishes its one event on
the next topic and exits 0 once its spans are flushed.

- ``ingestion``: records in batches; once ``RECORDS`` arrived, a snapshot is cut in a task started
  under the batch (as the count policy does), inside ``triggered_span``: ``dataset.snapshotted``.
- ``fine-tuning``, ``evaluation``, ``deployment``: one event in, one ``job_span`` around the work
  (training job, evaluation, go live) with the event it publishes inside.
"""

from __future__ import annotations

import asyncio
import sys
from collections.abc import Sequence
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

TOPICS = ("records", "datasets", "training", "trained", "evaluations", "deployments")
"""Suffixes of the chain's topics, in order (each test run uses its own prefix)."""
STAGE_TIMEOUT_S = 240


async def main(stage: str, prefix: str, state_dir: Path, records: int) -> None:
    from llmops_config import PlatformSettings
    from llmops_config.telemetry import configure_tracing, flush
    from llmops_events import ContentMode, Envelope, EventData, encode
    from llmops_events.v1 import (
        DatasetSnapshotted,
        Decision,
        DeploymentPromoted,
        EvaluationCompleted,
        RecordSubmitted,
        TrainingCompleted,
        TrainingRequested,
    )
    from llmops_messaging import (
        DeadLetterQueue,
        Delivery,
        EventConsumer,
        EventPublisher,
        ProcessedEvents,
        create_broker,
        subscribe,
    )
    from llmops_messaging.tracing import current_traceparent, job_span, triggered_span

    assert configure_tracing(stage), "OTEL_EXPORTER_OTLP_ENDPOINT is not set: spans would not leave the process"
    settings = PlatformSettings()
    publisher = EventPublisher(settings, service="tests")
    done = asyncio.Event()
    background: list[asyncio.Task[None]] = []

    async def emit(data: EventData, suffix: str) -> None:
        """Publish on the chain's next topic in the current span's trace (``EventPublisher.publish``
        does the same on the platform's own topics)."""
        envelope = Envelope.wrap(data, source=publisher.source, traceparent=current_traceparent())
        await publisher.publish_record(f"{prefix}.{suffix}", encode(envelope, ContentMode.BINARY))
        done.set()

    seen = 0

    async def on_records(deliveries: Sequence[Delivery]) -> list[None]:
        nonlocal seen
        seen += len(deliveries)
        if seen >= records and not background:  # the batch that crossed the threshold
            background.append(asyncio.get_running_loop().create_task(cut()))
        return [None] * len(deliveries)

    async def cut() -> None:
        with triggered_span("dataset snapshot", attributes={"llmops.snapshot.trigger": "policy"}):
            await emit(
                DatasetSnapshotted(
                    dataset_id=f"{prefix}-1",
                    uri="file:///dev/null",
                    manifest_uri="file:///dev/null",
                    row_count=seen,
                    content_hash="0" * 64,
                    created_at=datetime.now(UTC),
                ),
                "datasets",
            )

    async def on_training(envelope: Envelope[Any]) -> None:
        request: TrainingRequested = envelope.data
        with job_span("training job", attributes={"llmops.model.name": request.model_name}):
            await emit(
                TrainingCompleted(
                    model_name=request.model_name,
                    request_id=envelope.id,
                    model_version=1,
                    artifact_uri="file:///dev/null",
                    trainable_parameter_share=1.0,
                    wall_time_seconds=0.0,
                    completed_at=datetime.now(UTC),
                ),
                "trained",
            )

    async def on_trained(envelope: Envelope[Any]) -> None:
        trained: TrainingCompleted = envelope.data
        with job_span("evaluation", attributes={"llmops.model.name": trained.model_name}):
            await emit(
                EvaluationCompleted(
                    model_name=trained.model_name,
                    model_version=trained.model_version,
                    candidate_artifact_uri=trained.artifact_uri,
                    decision=Decision.APPROVED,
                ),
                "evaluations",
            )

    async def on_evaluated(envelope: Envelope[Any]) -> None:
        evaluated: EvaluationCompleted = envelope.data
        with job_span("go live", attributes={"llmops.model.name": evaluated.model_name}):
            await emit(
                DeploymentPromoted(model_name=evaluated.model_name, model_version=evaluated.model_version),
                "deployments",
            )

    stages: dict[str, tuple[str, dict[Any, Any], dict[Any, Any]]] = {
        "ingestion": ("records", {}, {RecordSubmitted: on_records}),
        "fine-tuning": ("training", {TrainingRequested: on_training}, {}),
        "evaluation": ("trained", {TrainingCompleted: on_trained}, {}),
        "deployment": ("evaluations", {EvaluationCompleted: on_evaluated}, {}),
    }
    suffix, handlers, batch_handlers = stages[stage]
    group = f"{prefix}-{stage}"
    consumer = EventConsumer(
        group_id=group,
        handlers=handlers,
        batch_handlers=batch_handlers,
        dlq=DeadLetterQueue(publisher, topic=f"{prefix}.dlq"),
        processed=ProcessedEvents(state_dir / f"{stage}.db", consumer=group),
        max_attempts=1,
    )
    broker = create_broker(settings, service="tests")
    subscribe(broker, consumer, f"{prefix}.{suffix}")
    await publisher.start()
    await broker.start()
    try:
        await asyncio.wait_for(done.wait(), timeout=STAGE_TIMEOUT_S)
    finally:
        await broker.stop()
        await publisher.stop()
        flush(10_000)


if __name__ == "__main__":
    asyncio.run(main(sys.argv[1], sys.argv[2], Path(sys.argv[3]), int(sys.argv[4])))
