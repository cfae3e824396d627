"""Bus helpers every service uses: broker factory, publisher, consumer glue, idempotency, DLQ, tracing."""

from llmops_messaging.broker import create_broker
from llmops_messaging.consumer import (
    BatchHandler,
    Delivery,
    EventConsumer,
    Outcome,
    Rejected,
    current_event_id,
    current_origin,
    subscribe,
)
from llmops_messaging.dlq import DeadLetterQueue, Origin, dead_letter, without_error_headers
from llmops_messaging.health import ConsumerHealth, ConsumerHealthCollector, stall_reasons
from llmops_messaging.idempotency import PostgresProcessedEvents, ProcessedEvents, open_processed_events
from llmops_messaging.producer import EventPublisher
from llmops_messaging.retry import RetryPolicy

__all__ = [
    "BatchHandler",
    "ConsumerHealth",
    "ConsumerHealthCollector",
    "DeadLetterQueue",
    "Delivery",
    "EventConsumer",
    "EventPublisher",
    "Origin",
    "Outcome",
    "PostgresProcessedEvents",
    "ProcessedEvents",
    "Rejected",
    "RetryPolicy",
    "create_broker",
    "current_event_id",
    "current_origin",
    "dead_letter",
    "open_processed_events",
    "stall_reasons",
    "subscribe",
    "without_error_headers",
]
