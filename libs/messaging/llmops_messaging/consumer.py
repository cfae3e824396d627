"""From a Kafka message to a handler's effect: decode, de-duplicate, handle, or dead-letter.

The orchestration (``EventConsumer.process``) knows nothing of FastStream, so it is tested
without a broker; ``subscribe`` attaches it to a FastStream broker as a subscriber whose
offsets are committed only after ``process`` returns, i.e. after the effect is durable.
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable, Mapping, Sequence
from contextvars import ContextVar
from dataclasses import dataclass
from enum import StrEnum
from typing import Any

from faststream import AckPolicy
from faststream.kafka import KafkaBroker
from faststream.kafka.annotations import KafkaMessage

from llmops_events import DecodeError, Envelope, EventData, KafkaRecord, decode
from llmops_messaging.dlq import DeadLetterQueue, Origin
from llmops_messaging.idempotency import ProcessedEvents
from llmops_messaging.tracing import batch_consumer_span, consumer_span

logger = logging.getLogger(__name__)

Handler = Callable[[Envelope[Any]], Awaitable[None]]


@dataclass(frozen=True, slots=True)
class Delivery:
    """One decoded event of a batch and where it was read from."""

    envelope: Envelope[Any]
    origin: Origin


BatchHandler = Callable[[Sequence[Delivery]], Awaitable[Sequence["Rejected | None"]]]
"""Applies a run of events of one type at once; returns, per delivery and in order, None (applied)
or the ``Rejected`` verdict for that one event. Raising fails the whole run (see ``process_batch``)."""

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

    Event types with a *batch handler* are applied a run at a time by ``process_batch`` (one
    call, so the handler can write one transaction for hundreds of events); the others go
    through their per-event handler, in the order of the batch.
    """

    def __init__(
        self,
        *,
        group_id: str,
        handlers: Mapping[type[EventData], Handler],
        dlq: DeadLetterQueue,
        processed: ProcessedEvents,
        max_attempts: int = 5,
        batch_handlers: Mapping[type[EventData], BatchHandler] | None = None,
    ) -> None:
        self.group_id = group_id
        self._handlers = {model.event_type: handler for model, handler in handlers.items()}
        self._batch_handlers = {model.event_type: handler for model, handler in (batch_handlers or {}).items()}
        self._dlq = dlq
        self._processed = processed
        self._max_attempts = max_attempts
        self._attempts: dict[tuple[str, int, int], int] = {}

    @property
    def handles_batches(self) -> bool:
        return bool(self._batch_handlers)

    async def process(self, record: KafkaRecord, origin: Origin) -> Outcome:
        if self._batch_handlers:  # a batch of one, so batch-handled types are not ignored
            return (await self._process_batch([(record, origin)]))[0]
        return await self._process_one(record, origin)

    async def _process_one(self, record: KafkaRecord, origin: Origin) -> Outcome:
        token = _CURRENT_ORIGIN.set(origin)
        try:
            return await self._process(record, origin)
        finally:
            _CURRENT_ORIGIN.reset(token)

    async def process_batch(self, batch: Sequence[tuple[KafkaRecord, Origin]]) -> list[Outcome]:
        """Process a batch of messages in order; returns each message's outcome.

        Consecutive events of a type with a batch handler form a run that the handler applies in
        one call; runs and per-event messages keep their order. A handler's ``Rejected`` verdict
        dead-letters that event alone. If the batch handler raises, the run is retried one event
        at a time, so the event that fails is isolated: it is redelivered (the exception
        propagates, the batch's offsets are not committed) up to ``max_attempts`` times and then
        dead-lettered, while the events before it stay applied and are skipped on redelivery.
        """
        return await self._process_batch(batch)

    async def _process_batch(self, batch: Sequence[tuple[KafkaRecord, Origin]]) -> list[Outcome]:
        if not self._batch_handlers:
            return [await self._process_one(record, origin) for record, origin in batch]
        outcomes: list[Outcome | None] = [None] * len(batch)
        decoded: list[tuple[int, Envelope[Any]]] = []
        for index, (record, origin) in enumerate(batch):
            peeked = _peek_type(record) or ""
            if peeked in self._handlers and peeked not in self._batch_handlers:
                continue  # a per-event type: decoded (and de-duplicated) by _process in its turn
            try:
                decoded.append((index, decode(record)))
            except DecodeError as error:
                await self._dlq.send(record, origin=origin, stage="decode", reason=error.reason, detail=error.detail)
                outcomes[index] = Outcome.DEAD_LETTERED
        done = self._processed.processed_among([envelope.id for _, envelope in decoded])
        envelopes: dict[int, Envelope[Any]] = {}
        for index, envelope in decoded:
            if envelope.type not in self._batch_handlers:
                if envelope.type not in self._handlers:
                    outcomes[index] = Outcome.IGNORED
                continue
            if envelope.id in done:  # applied before, or earlier in this batch
                outcomes[index] = Outcome.DUPLICATE
                continue
            done.add(envelope.id)
            envelopes[index] = envelope

        run: list[int] = []
        for index, (record, origin) in enumerate(batch):
            if index in envelopes:
                if run and envelopes[run[0]].type != envelopes[index].type:
                    await self._apply_run(batch, run, envelopes, outcomes)
                    run = []
                run.append(index)
                continue
            if outcomes[index] is not None:
                continue
            if run:
                await self._apply_run(batch, run, envelopes, outcomes)
                run = []
            outcomes[index] = await self._process_one(record, origin)
        if run:
            await self._apply_run(batch, run, envelopes, outcomes)
        return [outcome if outcome is not None else Outcome.IGNORED for outcome in outcomes]

    async def _apply_run(
        self,
        batch: Sequence[tuple[KafkaRecord, Origin]],
        run: list[int],
        envelopes: Mapping[int, Envelope[Any]],
        outcomes: list[Outcome | None],
    ) -> None:
        handler = self._batch_handlers[envelopes[run[0]].type]
        deliveries = [Delivery(envelopes[index], batch[index][1]) for index in run]
        try:
            verdicts = await self._call_batch(handler, deliveries)
        except Exception as error:
            if len(run) > 1:
                logger.warning(
                    "batch handler failed; applying its events one at a time",
                    extra={"events": len(run), "error": repr(error)},
                )
                for index in run:
                    await self._apply_run(batch, [index], envelopes, outcomes)
                return
            index = run[0]
            record, origin = batch[index]
            position = (origin.topic, origin.partition, origin.offset)
            attempts = self._attempts.get(position, 0) + 1
            if attempts < self._max_attempts:
                self._attempts[position] = attempts
                logger.warning(
                    "handler failed, message will be redelivered",
                    extra={"event_id": envelopes[index].id, "attempt": attempts, "error": repr(error)},
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
            outcomes[index] = Outcome.DEAD_LETTERED
            return
        if len(verdicts) != len(run):
            raise RuntimeError(f"batch handler returned {len(verdicts)} verdicts for {len(run)} events")
        applied: list[str] = []
        for index, verdict in zip(run, verdicts, strict=True):
            record, origin = batch[index]
            self._attempts.pop((origin.topic, origin.partition, origin.offset), None)
            if verdict is None:
                applied.append(envelopes[index].id)
                outcomes[index] = Outcome.HANDLED
                continue
            await self._dlq.send(
                record, origin=origin, stage=verdict.stage, reason=verdict.reason, detail=verdict.detail
            )
            outcomes[index] = Outcome.DEAD_LETTERED
        # A handler whose effect lives in this database marks its events in its own transaction
        # (exactly-once in effect): only the events it left unmarked are marked here.
        marked = self._processed.processed_among(applied)
        unmarked = [event_id for event_id in applied if event_id not in marked]
        if unmarked:
            with self._processed.transaction():
                self._processed.mark_processed_many(unmarked)

    async def _call_batch(self, handler: BatchHandler, deliveries: list[Delivery]) -> Sequence[Rejected | None]:
        first = deliveries[0].origin
        with batch_consumer_span(
            f"{first.topic} process",
            traceparents=(delivery.envelope.traceparent for delivery in deliveries),
            attributes={
                "messaging.consumer.group.name": self.group_id,
                "messaging.batch.message_count": len(deliveries),
            },
        ):
            return await handler(deliveries)

    async def _process(self, record: KafkaRecord, origin: Origin) -> Outcome:
        try:
            envelope: Envelope[Any] = decode(record)
        except DecodeError as error:
            await self._dlq.send(record, origin=origin, stage="decode", reason=error.reason, detail=error.detail)
            return Outcome.DEAD_LETTERED

        handler = self._handlers.get(envelope.type)
        if handler is None or envelope.type in self._batch_handlers:
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
    max_records: int = 2000,
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
    if consumer.handles_batches:
        # The handler reads the raw records; FastStream's default decoder would also build a
        # message object and json.loads every body of the batch, ~15% of a busy consumer's time.
        options["decoder"] = _undecoded_bodies
    options.update(subscriber_options)
    subscriber = broker.subscriber(*topics, group_id=consumer.group_id, **options)

    @subscriber
    async def on_messages(message: KafkaMessage) -> None:
        raw = message.raw_message
        items = raw if isinstance(raw, tuple) else (raw,)
        if consumer.handles_batches:
            batch = [
                (
                    KafkaRecord(key=item.key, value=item.value or b"", headers=tuple(item.headers or ())),
                    Origin(item.topic, item.partition, item.offset, consumer.group_id),
                )
                for item in items
            ]
            for outcome in await consumer.process_batch(batch):
                if on_outcome is not None:
                    on_outcome(outcome)
            return
        for item in items:
            record = KafkaRecord(key=item.key, value=item.value or b"", headers=tuple(item.headers or ()))
            outcome = await consumer.process(record, Origin(item.topic, item.partition, item.offset, consumer.group_id))
            if on_outcome is not None:
                on_outcome(outcome)

    return subscriber


def _peek_type(record: KafkaRecord) -> str | None:
    """The event type of a binary-mode message from its ``ce_type`` header, without decoding;
    None for structured mode (the type is inside the value)."""
    value = record.header("ce_type")
    if value is None:
        return None
    try:
        return value.decode()
    except UnicodeDecodeError:
        return None


async def _undecoded_bodies(message: Any) -> Any:
    """A FastStream decoder that leaves the bodies as they came (the handler decodes them)."""
    return message.body
