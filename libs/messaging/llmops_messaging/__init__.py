"""Bus helpers every service uses: broker factory, publisher, consumer glue, idempotency, DLQ, tracing."""

from llmops_messaging.broker import create_broker
from llmops_messaging.consumer import (
    BatchHandler,
    Delivery,
    EventConsumer,
    Outcome,
    Rejected,
    current_origin,
    subscribe,
)
from llmops_messaging.dlq import DeadLetterQueue, Origin, dead_letter, without_error_headers
from llmops_messaging.idempotency import ProcessedEvents
from llmops_messaging.producer import EventPublisher

__all__ = [
    "BatchHandler",
    "DeadLetterQueue",
    "Delivery",
    "EventConsumer",
    "EventPublisher",
    "Origin",
    "Outcome",
    "ProcessedEvents",
    "Rejected",
    "create_broker",
    "current_origin",
    "dead_letter",
    "subscribe",
    "without_error_headers",
]
