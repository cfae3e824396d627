"""From a Kafka message to a handler's effect: decode, de-duplicate, handle, or dead-letter.

The orchestration (``EventConsumer.process``) knows nothing of FastStream, so it is tested
without a broker; ``subscribe`` attaches it to a FastStream broker as a subscriber whose
offsets are committed only after ``process`` returns, i.e. after the effect is durable.
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable, Mapping
from contextvars import ContextVar
from enum import StrEnum
from typing import Any

from faststream import AckPolicy
from faststream.kafka import KafkaBroker
from faststream.kafka.annotations import KafkaMessage

from llmops_events import DecodeError, Envelope, EventData, KafkaRecord, decode
from llmops_messaging.dlq import DeadLetterQueue, Origin
from llmops_messaging.idempotency import ProcessedEvents
from llmops_messaging.tracing import consumer_span

logger = logging.getLogger(__name__)

Handler = Callable[[Envelope[Any]], Awaitable[None]]

_CURRENT_ORIGIN: ContextVar[Origin | None] = ContextVar("llmops_current_origin", default=None)


def current_origin() -> Origin:
    """Where the message a handler is working on was read from (topic, partition, offset, group).

    Handlers take only the envelope; the few that need the position (dataset lineage) ask here.
    """
    origin = _CURRENT_ORIGIN.get()
    if origin is None:
        raise RuntimeError("no message is being processed in this context")
    return origin


class Rejected(Exception):
    """A handler's verdict that this event can never be applied: it goes to the DLQ, not back."""

    def __init__(self, reason: str, detail: str, *, stage: str = "handle") -> None:
        super().__init__(f"{reason}: {detail}")
        self.reason = reason
        self.detail = detail
        self.stage = stage


class Outcome(StrEnum):
    HANDLED = "handled"
    DUPLICATE = "duplicate"
    IGNORED = "ignored"
    DEAD_LETTERED = "dead_lettered"


class EventConsumer:
    """Applies each event once through the handler registered for its type.

    * undecodable or invalid messages go to the DLQ with the decoder's reason;
    * event types this consumer has no handler for are skipped (topics carry several types);
    * an event id already applied is skipped, so redelivery has no second effect;
    * ``Rejected`` from a handler goes to the DLQ at once; any other error is retried by
      redelivery up to ``max_attempts`` times and then dead-lettered, never retried forever.
    """

    def __init__(
        self,
        *,
        group_id: str,
        handlers: Mapping[type[EventData], Handler],
        dlq: DeadLetterQueue,
        processed: ProcessedEvents,
        max_attempts: int = 5,
    ) -> None:
        self.group_id = group_id
        self._handlers = {model.event_type: handler for model, handler in handlers.items()}
        self._dlq = dlq
        self._processed = processed
        self._max_attempts = max_attempts
        self._attempts: dict[tuple[str, int, int], int] = {}

    async def process(self, record: KafkaRecord, origin: Origin) -> Outcome:
        token = _CURRENT_ORIGIN.set(origin)
        try:
            return await self._process(record, origin)
        finally:
            _CURRENT_ORIGIN.reset(token)

    async def _process(self, record: KafkaRecord, origin: Origin) -> Outcome:
        try:
            envelope: Envelope[Any] = decode(record)
        except DecodeError as error:
            await self._dlq.send(record, origin=origin, stage="decode", reason=error.reason, detail=error.detail)
            return Outcome.DEAD_LETTERED

        handler = self._handlers.get(envelope.type)
        if handler is None:
            return Outcome.IGNORED
        if self._processed.has_processed(envelope.id):
            logger.info("duplicate event skipped", extra={"event_id": envelope.id, "event_type": envelope.type})
            return Outcome.DUPLICATE

        position = (origin.topic, origin.partition, origin.offset)
        with consumer_span(
            f"{origin.topic} process",
            traceparent=envelope.traceparent,
            attributes={"messaging.consumer.group.name": self.group_id, "cloudevents.event_id": envelope.id},
        ):
            try:
                await handler(envelope)
            except Rejected as rejection:
                self._attempts.pop(position, None)
                await self._dlq.send(
                    record, origin=origin, stage=rejection.stage, reason=rejection.reason, detail=rejection.detail
                )
                return Outcome.DEAD_LETTERED
            except Exception as error:
                attempts = self._attempts.get(position, 0) + 1
                if attempts < self._max_attempts:
                    self._attempts[position] = attempts
                    logger.warning(
                        "handler failed, message will be redelivered",
                        extra={"event_id": envelope.id, "attempt": attempts, "error": repr(error)},
                    )
                    raise
                self._attempts.pop(position, None)
                await self._dlq.send(
                    record,
                    origin=origin,
                    stage="handle",
                    reason="handler_failed",
                    detail=f"failed {attempts} times; last error: {error!r}",
                )
                return Outcome.DEAD_LETTERED
        self._attempts.pop(position, None)
        self._processed.mark_processed(envelope.id)
        return Outcome.HANDLED


def subscribe(
    broker: KafkaBroker,
    consumer: EventConsumer,
    *topics: str,
    on_outcome: Callable[[Outcome], None] | None = None,
    max_records: int = 500,
    **subscriber_options: Any,
) -> Any:
    """Attach ``consumer`` to ``broker`` for ``topics``; offsets are committed after processing.

    Messages arrive in batches of up to ``max_records`` and the offsets of a batch are committed
    once, after every message in it was processed: one commit per message would cap a consumer
    at a few hundred messages a second. If processing fails part-way, the batch is redelivered
    from its first message and the already-applied events are skipped as duplicates.
    """
    options: dict[str, Any] = {
        "auto_offset_reset": "earliest",
        "ack_policy": AckPolicy.NACK_ON_ERROR,
        "batch": True,
        "max_records": max_records,
        "batch_timeout_ms": 200,
    }
    options.update(subscriber_options)
    subscriber = broker.subscriber(*topics, group_id=consumer.group_id, **options)

    @subscriber
    async def on_messages(message: KafkaMessage) -> None:
        raw = message.raw_message
        for item in raw if isinstance(raw, tuple) else (raw,):
            record = KafkaRecord(key=item.key, value=item.value or b"", headers=tuple(item.headers or ()))
            outcome = await consumer.process(record, Origin(item.topic, item.partition, item.offset, consumer.group_id))
            if on_outcome is not None:
                on_outcome(outcome)

    return subscriber
