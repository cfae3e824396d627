"""The dead-letter queue: messages no handler could accept, kept byte for byte with the reason."""

from __future__ import annotations

import logging
from dataclasses import dataclass
from datetime import UTC, datetime

from llmops_events import KafkaRecord
from llmops_events.topics import RECORDS_DLQ
from llmops_messaging import headers as h
from llmops_messaging.bus_metrics import count_dead_letter
from llmops_messaging.producer import EventPublisher

logger = logging.getLogger(__name__)

MAX_DETAIL_LENGTH = 2000


@dataclass(frozen=True, slots=True)
class Origin:
    """Where a message was read from, so ``dlq-replay`` can send it back there."""

    topic: str
    partition: int
    offset: int
    consumer_group: str


def dead_letter(record: KafkaRecord, *, origin: Origin, stage: str, reason: str, detail: str) -> KafkaRecord:
    """The DLQ copy of a message: original key, value and headers plus the ``error.*`` headers."""
    original_headers = tuple((name, value) for name, value in record.headers if name not in h.DLQ_HEADERS)
    error_headers = (
        (h.ERROR_STAGE, stage.encode()),
        (h.ERROR_REASON, reason.encode()),
        (h.ERROR_DETAIL, detail[:MAX_DETAIL_LENGTH].encode("utf-8", "replace")),
        (h.ERROR_TOPIC, origin.topic.encode()),
        (h.ERROR_PARTITION, str(origin.partition).encode()),
        (h.ERROR_OFFSET, str(origin.offset).encode()),
        (h.ERROR_CONSUMER_GROUP, origin.consumer_group.encode()),
        (h.ERROR_TIME, datetime.now(UTC).isoformat().encode()),
    )
    return KafkaRecord(key=record.key, value=record.value, headers=original_headers + error_headers)


def without_error_headers(record: KafkaRecord) -> KafkaRecord:
    """The original message of a DLQ entry, ready to be replayed to its topic."""
    return KafkaRecord(
        key=record.key, value=record.value, headers=tuple((n, v) for n, v in record.headers if n not in h.DLQ_HEADERS)
    )


class DeadLetterQueue:
    """Sends refused messages to the DLQ topic and waits for the broker to have them."""

    def __init__(self, publisher: EventPublisher, *, topic: str = RECORDS_DLQ) -> None:
        self._publisher = publisher
        self._topic = topic

    async def send(self, record: KafkaRecord, *, origin: Origin, stage: str, reason: str, detail: str) -> None:
        await self._publisher.publish_record(
            self._topic, dead_letter(record, origin=origin, stage=stage, reason=reason, detail=detail)
        )
        count_dead_letter(consumer_group=origin.consumer_group, topic=origin.topic, stage=stage, reason=reason)
        logger.warning(
            "message sent to the DLQ",
            extra={
                "stage": stage,
                "reason": reason,
                "detail": detail[:200],
                "topic": origin.topic,
                "partition": origin.partition,
                "offset": origin.offset,
            },
        )
