"""Glue to ``llmops_messaging.EventConsumer``: the message's position for lineage, DLQ metrics."""

from __future__ import annotations

from contextvars import ContextVar
from typing import Any

from llmops_events import KafkaRecord
from llmops_ingestion.adapters.metrics import IngestionMetrics
from llmops_ingestion.domain.snapshot import Position
from llmops_messaging import DeadLetterQueue, EventConsumer, Origin, Outcome

_CURRENT_ORIGIN: ContextVar[Origin | None] = ContextVar("ingestion_current_origin", default=None)


def current_position() -> Position:
    """Topic/partition/offset of the message being handled (set by ``PositionAwareConsumer``)."""
    origin = _CURRENT_ORIGIN.get()
    if origin is None:
        raise RuntimeError("no message is being processed in this context")
    return Position(origin.topic, origin.partition, origin.offset)


class PositionAwareConsumer(EventConsumer):
    """An ``EventConsumer`` whose handlers can ask where the current message came from.

    The library's handlers receive only the envelope, but snapshot lineage needs the offset;
    a context variable carries it without changing the handler signature.
    """

    def __init__(self, *, metrics: IngestionMetrics, **options: Any) -> None:
        super().__init__(**options)
        self._metrics = metrics

    async def process(self, record: KafkaRecord, origin: Origin) -> Outcome:
        token = _CURRENT_ORIGIN.set(origin)
        try:
            outcome = await super().process(record, origin)
        finally:
            _CURRENT_ORIGIN.reset(token)
        self._metrics.messages.labels(origin.topic, outcome.value).inc()
        return outcome


class MeteredDeadLetterQueue(DeadLetterQueue):
    """The DLQ, counting every message it takes by stage and reason."""

    def __init__(self, *args: Any, metrics: IngestionMetrics, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._metrics = metrics

    async def send(self, record: KafkaRecord, *, origin: Origin, stage: str, reason: str, detail: str) -> None:
        await super().send(record, origin=origin, stage=stage, reason=reason, detail=detail)
        self._metrics.dead_lettered.labels(stage, reason).inc()
