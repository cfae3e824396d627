"""A snapshot's event keeps its id however often it is published (issue 20, item 5).

The id derives from the dataset id, and a retraining request's snapshot is cut once per request:
running ``on_training_requested`` again on the same request (a crash before its offset was
committed) finds its snapshot instead of cutting another, and an event re-published after a crash
(recorded, maybe sent, not marked sent) carries the same id, which consumers further down skip."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pandas as pd
import pytest

from llmops_events import ContentMode, Envelope, KafkaRecord, derived_id, encode
from llmops_events.v1 import DatasetSnapshotted, TrainingReason, TrainingRequested
from llmops_features import CREATED_FIELD, ENTITY, INT_FEATURES, TIMESTAMP_FIELD
from llmops_ingestion.adapters.metrics import IngestionMetrics
from llmops_ingestion.adapters.state import IngestionState
from llmops_ingestion.domain.snapshot import Position, SplitRatios
from llmops_ingestion.domain.validation import ValidationRules
from llmops_ingestion.handlers import CurationConfig, IngestionService
from llmops_messaging import EventConsumer, Origin, Outcome, ProcessedEvents
from llmops_storage import open_store

OpenProcessed = Callable[[], ProcessedEvents]
"""The ``open_processed`` fixture (conftest.py): each test runs on SQLite, then on PostgreSQL."""


class MemoryFeatures:
    """The feature store, in memory: what was pushed is what the point-in-time join returns."""

    def __init__(self) -> None:
        self.rows: dict[str, dict[str, Any]] = {}

    def push(self, rows: Sequence[dict[str, Any]]) -> None:
        for row in rows:
            self.rows[row[ENTITY]] = dict(row)

    def historical(self, record_ids: Sequence[str], *, as_of: datetime) -> Any:
        frame = pd.DataFrame([self.rows[record_id] for record_id in record_ids])
        for name in INT_FEATURES:
            frame[name] = 0
        return frame


class RecordingSink:
    """The publisher, less Kafka: the envelopes it would send (``fail_next``: the broker is down)."""

    def __init__(self) -> None:
        self.sent: list[Envelope[Any]] = []
        self.fail_next = False

    async def publish(self, data: Any, *, id: str | None = None) -> Envelope[Any]:
        if self.fail_next:
            self.fail_next = False
            raise ConnectionError("broker unavailable")
        envelope = Envelope.wrap(data, source="/llmops/ingestion", id=id)
        self.sent.append(envelope)
        return envelope


def _service(
    tmp_path: Path, sink: RecordingSink, open_processed: OpenProcessed
) -> tuple[IngestionService, ProcessedEvents]:
    processed = open_processed()
    state = IngestionState(processed)
    now = datetime(2026, 11, 30, tzinfo=UTC)
    with processed.transaction() as connection:
        for index in range(6):
            record_id = f"acme/r-{index}"
            stamp = (now + timedelta(seconds=index)).isoformat()
            IngestionState.store_curated(
                connection,
                record_id=record_id,
                tenant="acme",
                dedup_key=f"k-{index}",
                labelled=True,
                position=Position("llmops.records.raw.v1", 0, index),
                feature_row={
                    ENTITY: record_id,
                    "tenant": "acme",
                    "source": "crm",
                    "text": f"text {index}",
                    "label": "card_arrival" if index % 2 else "lost_card",
                    TIMESTAMP_FIELD: stamp,
                    CREATED_FIELD: stamp,
                },
                ingested_at=now,
            )
    service = IngestionService(
        config=CurationConfig(
            rules=ValidationRules(),
            split_ratios=SplitRatios(),
            snapshot_every_n_labelled=0,
            dataset_name="banking",
            push_batch_size=100,
            flywheel_retention=timedelta(days=3),
        ),
        redact=lambda text: pytest.fail("nothing is redacted here"),
        processed=processed,
        state=state,
        features=MemoryFeatures(),
        artifacts=open_store(str(tmp_path / "artifacts")),
        events=sink,
        metrics=IngestionMetrics(),
    )
    return service, processed


def _retraining_request() -> Envelope[TrainingRequested]:
    return Envelope.wrap(
        TrainingRequested(model_name="banking-intents", reason=TrainingReason.DRIFT, requested_by="monitoring"),
        source="/llmops/monitoring",
    )


async def test_a_retraining_request_handled_twice_announces_one_snapshot_under_one_id(
    tmp_path: Path, open_processed: OpenProcessed
) -> None:
    sink = RecordingSink()
    service, _ = _service(tmp_path, sink, open_processed)
    request = _retraining_request()
    await service.on_training_requested(request)
    await service.on_training_requested(request)  # redelivered: the handler runs again
    assert len(sink.sent) == 1
    (event,) = sink.sent
    assert event.id == derived_id(event.data.dataset_id, DatasetSnapshotted.event_type)


async def test_a_snapshot_published_again_after_a_crash_keeps_its_id_and_is_skipped_downstream(
    tmp_path: Path, open_processed: OpenProcessed
) -> None:
    sink = RecordingSink()
    service, processed = _service(tmp_path, sink, open_processed)
    request = _retraining_request()
    sink.fail_next = True  # recorded, then the broker fails: the handler fails, the request comes again
    with pytest.raises(ConnectionError):
        await service.on_training_requested(request)
    await service.on_training_requested(request)
    assert len(sink.sent) == 1  # the recorded snapshot went out; no second one was cut
    # Sent, but the process died before it was marked sent: the next start sends it again.
    processed.sql.execute("UPDATE snapshots SET published = 0")
    await service.publish_pending_snapshots()
    first, again = sink.sent
    assert again.id == first.id and again.data == first.data

    applied: list[str] = []

    async def on_snapshot(envelope: Envelope[Any]) -> None:
        applied.append(envelope.id)

    class NoDeadLetters:
        async def send(self, record: KafkaRecord, **_: Any) -> None:
            raise AssertionError("nothing is dead-lettered")

    downstream = EventConsumer(
        group_id="fine-tuning",
        handlers={DatasetSnapshotted: on_snapshot},
        dlq=NoDeadLetters(),  # type: ignore[arg-type]
        processed=ProcessedEvents(":memory:", consumer="fine-tuning"),
    )
    outcomes = [
        await downstream.process(encode(envelope, ContentMode.BINARY), Origin("llmops.datasets.v1", 0, offset, "f"))
        for offset, envelope in enumerate(sink.sent)
    ]
    assert outcomes == [Outcome.HANDLED, Outcome.DUPLICATE]
    assert applied == [first.id]
