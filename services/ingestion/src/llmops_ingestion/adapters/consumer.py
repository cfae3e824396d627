"""Glue to ``llmops_messaging.EventConsumer``: the message's position for lineage, metrics."""

from __future__ import annotations

from collections import Counter
from collections.abc import Sequence
from typing import Any

from llmops_events import KafkaRecord
from llmops_ingestion.adapters.metrics import IngestionMetrics
from llmops_ingestion.domain.snapshot import Position
from llmops_messaging import DeadLetterQueue, EventConsumer, Origin, Outcome, current_origin


def current_position() -> Position:
    """Topic/partition/offset of the message being handled, for snapshot lineage."""
    origin = current_origin()
    return Position(origin.topic, origin.partition, origin.offset)


class MeteredConsumer(EventConsumer):
    """An ``EventConsumer`` counting each message's outcome by topic."""

    def __init__(self, *, metrics: IngestionMetrics, **options: Any) -> None:
        super().__init__(**options)
        self._metrics = metrics

    async def process(self, record: KafkaRecord, origin: Origin) -> Outcome:
        outcome = await super().process(record, origin)
        self._metrics.messages.labels(origin.topic, outcome.value).inc()
        return outcome

    async def process_batch(self, batch: Sequence[tuple[KafkaRecord, Origin]]) -> list[Outcome]:
        outcomes = await super().process_batch(batch)
        counts = Counter((origin.topic, outcome.value) for (_, origin), outcome in zip(batch, outcomes, strict=True))
        for (topic, outcome_value), count in counts.items():
            self._metrics.messages.labels(topic, outcome_value).inc(count)
        return outcomes


class MeteredDeadLetterQueue(DeadLetterQueue):
    """The DLQ, counting every message it takes by stage and reason."""

    def __init__(self, *args: Any, metrics: IngestionMetrics, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._metrics = metrics

    async def send(self, record: KafkaRecord, *, origin: Origin, stage: str, reason: str, detail: str) -> None:
        await super().send(record, origin=origin, stage=stage, reason=reason, detail=detail)
        self._metrics.dead_lettered.labels(stage, reason).inc()
