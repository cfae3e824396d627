"""Pure parts of the bus helpers: DLQ copies, the processed-events store, consumer orchestration."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

import pytest

from llmops_events import ContentMode, Envelope, KafkaRecord, encode
from llmops_events.v1 import RecordSubmitted, TrainingStarted
from llmops_messaging import (
    Delivery,
    EventConsumer,
    Origin,
    Outcome,
    ProcessedEvents,
    Rejected,
    dead_letter,
    without_error_headers,
)

ORIGIN = Origin(topic="llmops.records.raw.v1", partition=2, offset=41, consumer_group="ingestion")


def test_dead_letter_keeps_original_bytes_and_adds_reason() -> None:
    original = KafkaRecord(key=b"k", value=b"\xff raw", headers=(("ce_id", b"1"), ("x-binary", b"\x00\x01")))

    letter = dead_letter(original, origin=ORIGIN, stage="decode", reason="invalid_json", detail="bad")

    assert (letter.key, letter.value) == (b"k", b"\xff raw")
    assert letter.header("x-binary") == b"\x00\x01"
    assert letter.header("error.stage") == b"decode"
    assert letter.header("error.reason") == b"invalid_json"
    assert letter.header("error.offset") == b"41"
    assert without_error_headers(letter) == original


def test_processed_events_are_remembered_across_reopen(tmp_path: Path) -> None:
    store = ProcessedEvents(tmp_path / "state.db", consumer="ingestion")
    assert store.mark_processed("e-1") is True
    assert store.mark_processed("e-1") is False
    store.close()

    reopened = ProcessedEvents(tmp_path / "state.db", consumer="ingestion")
    assert reopened.has_processed("e-1")
    assert not ProcessedEvents(tmp_path / "state.db", consumer="other").has_processed("e-1")


def test_transaction_rolls_back_effect_and_mark_together(tmp_path: Path) -> None:
    store = ProcessedEvents(tmp_path / "state.db", consumer="c")
    store.connection.execute("CREATE TABLE effects (id TEXT)")
    with pytest.raises(RuntimeError), store.transaction() as connection:
        connection.execute("INSERT INTO effects VALUES ('x')")
        store.mark_processed("e-1")
        raise RuntimeError("crash before commit")
    assert store.connection.execute("SELECT count(*) FROM effects").fetchone() == (0,)
    assert not store.has_processed("e-1")


class RecordingDeadLetterQueue:
    """Fake DLQ for unit tests: remembers what would have been sent (the real one is tested on Kafka)."""

    def __init__(self) -> None:
        self.sent: list[dict[str, Any]] = []

    async def send(self, record: KafkaRecord, *, origin: Origin, stage: str, reason: str, detail: str) -> None:
        self.sent.append({"record": record, "stage": stage, "reason": reason, "detail": detail})


def _consumer(handler: Any, dlq: RecordingDeadLetterQueue, max_attempts: int = 3) -> EventConsumer:
    return EventConsumer(
        group_id="g",
        handlers={RecordSubmitted: handler},
        dlq=dlq,  # type: ignore[arg-type]
        processed=ProcessedEvents(":memory:", consumer="g"),
        max_attempts=max_attempts,
    )


def _submitted() -> KafkaRecord:
    return encode(Envelope.wrap(RecordSubmitted(tenant="a", source="b", text="c"), source="/t"), ContentMode.STRUCTURED)


async def test_consumer_applies_once_and_skips_redelivery() -> None:
    seen: list[str] = []

    async def handle(envelope: Envelope[Any]) -> None:
        seen.append(envelope.id)

    dlq = RecordingDeadLetterQueue()
    consumer = _consumer(handle, dlq)
    record = _submitted()
    assert await consumer.process(record, ORIGIN) is Outcome.HANDLED
    assert await consumer.process(record, ORIGIN) is Outcome.DUPLICATE
    assert len(seen) == 1 and dlq.sent == []


async def test_consumer_ignores_types_it_does_not_handle_and_dead_letters_garbage() -> None:
    async def handle(envelope: Envelope[Any]) -> None:
        raise AssertionError("not called")

    dlq = RecordingDeadLetterQueue()
    consumer = _consumer(handle, dlq)
    other = encode(
        Envelope.wrap(
            TrainingStarted(model_name="m", request_id="r", model_version=1, dataset_id="d", worker="w"), source="/t"
        )
    )
    assert await consumer.process(other, ORIGIN) is Outcome.IGNORED
    assert await consumer.process(KafkaRecord(None, b"{oops"), ORIGIN) is Outcome.DEAD_LETTERED
    assert dlq.sent[0]["reason"] == "invalid_json" and dlq.sent[0]["stage"] == "decode"


async def test_rejection_goes_to_dlq_at_once_and_errors_only_after_bounded_retries() -> None:
    async def reject(envelope: Envelope[Any]) -> None:
        raise Rejected("unknown_label", "label 'x' is not in the label set")

    dlq = RecordingDeadLetterQueue()
    assert await _consumer(reject, dlq).process(_submitted(), ORIGIN) is Outcome.DEAD_LETTERED
    assert dlq.sent[0]["reason"] == "unknown_label"

    async def crash(envelope: Envelope[Any]) -> None:
        raise ConnectionError("feature store down")

    dlq = RecordingDeadLetterQueue()
    consumer = _consumer(crash, dlq, max_attempts=3)
    record = _submitted()
    for _ in range(2):
        with pytest.raises(ConnectionError):
            await consumer.process(record, ORIGIN)
    assert await consumer.process(record, ORIGIN) is Outcome.DEAD_LETTERED
    assert dlq.sent[0]["reason"] == "handler_failed"
    assert "3 times" in dlq.sent[0]["detail"]


def test_trace_context_flows_from_span_to_envelope_and_back() -> None:
    from opentelemetry import trace

    from llmops_messaging.tracing import configure_tracing, consumer_span, current_traceparent

    configure_tracing("tests")
    with trace.get_tracer("tests").start_as_current_span("produce"):
        traceparent = current_traceparent()
    assert traceparent is not None
    envelope = Envelope.wrap(RecordSubmitted(tenant="a", source="b", text="c"), source="/t", traceparent=traceparent)
    with consumer_span("consume", traceparent=envelope.traceparent) as span:
        assert format(span.get_span_context().trace_id, "032x") == traceparent.split("-")[1]


async def test_handler_can_ask_where_its_message_came_from() -> None:
    from llmops_messaging import current_origin

    seen: list[Origin] = []

    async def handle(envelope: Envelope[Any]) -> None:
        seen.append(current_origin())

    await _consumer(handle, RecordingDeadLetterQueue()).process(_submitted(), ORIGIN)
    assert seen == [ORIGIN]
    with pytest.raises(RuntimeError, match="no message"):
        current_origin()


# --- batch handlers --------------------------------------------------------------------------


def _origin(offset: int) -> Origin:
    return Origin(topic="llmops.records.raw.v1", partition=0, offset=offset, consumer_group="g")


def _batch_consumer(
    batch_handler: Any, dlq: RecordingDeadLetterQueue, *, handlers: Any = None, max_attempts: int = 3
) -> EventConsumer:
    return EventConsumer(
        group_id="g",
        handlers=handlers or {},
        batch_handlers={RecordSubmitted: batch_handler},
        dlq=dlq,  # type: ignore[arg-type]
        processed=ProcessedEvents(":memory:", consumer="g"),
        max_attempts=max_attempts,
    )


def _records(count: int) -> list[tuple[KafkaRecord, Origin]]:
    return [
        (
            encode(Envelope.wrap(RecordSubmitted(tenant="a", source="b", text=f"text {i}"), source="/t")),
            _origin(i),
        )
        for i in range(count)
    ]


async def test_batch_handler_gets_the_batch_in_one_call_and_redelivery_is_skipped() -> None:
    calls: list[list[Delivery]] = []

    async def handle(deliveries: Sequence[Delivery]) -> list[Rejected | None]:
        calls.append(list(deliveries))
        return [None] * len(deliveries)

    consumer = _batch_consumer(handle, RecordingDeadLetterQueue())
    batch = _records(4)
    assert await consumer.process_batch(batch) == [Outcome.HANDLED] * 4
    assert len(calls) == 1
    assert [d.origin.offset for d in calls[0]] == [0, 1, 2, 3]
    assert [d.envelope.data.text for d in calls[0]] == [f"text {i}" for i in range(4)]
    # Redelivered (a crash before the offset commit): nothing is applied twice.
    assert await consumer.process_batch(batch) == [Outcome.DUPLICATE] * 4
    assert len(calls) == 1


async def test_a_rejected_record_does_not_reject_its_batch() -> None:
    async def handle(deliveries: Sequence[Delivery]) -> list[Rejected | None]:
        return [Rejected("empty_text", "nothing there") if d.origin.offset == 1 else None for d in deliveries]

    dlq = RecordingDeadLetterQueue()
    consumer = _batch_consumer(handle, dlq)
    outcomes = await consumer.process_batch(_records(3))
    assert outcomes == [Outcome.HANDLED, Outcome.DEAD_LETTERED, Outcome.HANDLED]
    assert [sent["reason"] for sent in dlq.sent] == ["empty_text"]


async def test_a_batch_handler_crash_isolates_the_failing_record() -> None:
    async def handle(deliveries: Sequence[Delivery]) -> list[Rejected | None]:
        if any(d.origin.offset == 2 for d in deliveries):
            raise ValueError("poison")
        return [None] * len(deliveries)

    dlq = RecordingDeadLetterQueue()
    consumer = _batch_consumer(handle, dlq, max_attempts=2)
    batch = _records(4)
    with pytest.raises(ValueError):  # first attempt: the batch is redelivered
        await consumer.process_batch(batch)
    outcomes = await consumer.process_batch(batch)
    assert outcomes[:2] == [Outcome.DUPLICATE, Outcome.DUPLICATE]  # applied before the crash
    assert outcomes[2:] == [Outcome.DEAD_LETTERED, Outcome.HANDLED]
    assert dlq.sent[0]["reason"] == "handler_failed" and "2 times" in dlq.sent[0]["detail"]


async def test_a_mixed_batch_keeps_order_and_per_event_handlers() -> None:
    order: list[str] = []

    async def handle_batch(deliveries: Sequence[Delivery]) -> list[Rejected | None]:
        order.extend(d.envelope.data.text for d in deliveries)
        return [None] * len(deliveries)

    async def handle_started(envelope: Envelope[Any]) -> None:
        order.append("started")

    dlq = RecordingDeadLetterQueue()
    consumer = _batch_consumer(handle_batch, dlq, handlers={TrainingStarted: handle_started})
    records = _records(3)
    started = encode(
        Envelope.wrap(
            TrainingStarted(model_name="m", request_id="r", model_version=1, dataset_id="d", worker="w"), source="/t"
        )
    )
    batch = [
        records[0],
        (KafkaRecord(None, b"{oops"), _origin(10)),
        records[1],
        (started, _origin(11)),
        records[2],
        records[2],  # the same event twice in one batch
    ]
    outcomes = await consumer.process_batch(batch)
    assert outcomes == [
        Outcome.HANDLED,
        Outcome.DEAD_LETTERED,
        Outcome.HANDLED,
        Outcome.HANDLED,
        Outcome.HANDLED,
        Outcome.DUPLICATE,
    ]
    assert order == ["text 0", "text 1", "started", "text 2"]
    assert dlq.sent[0]["reason"] == "invalid_json"


async def test_per_event_consumers_process_batches_one_by_one() -> None:
    seen: list[str] = []

    async def handle(envelope: Envelope[Any]) -> None:
        seen.append(envelope.data.text)

    consumer = _consumer(handle, RecordingDeadLetterQueue())
    assert await consumer.process_batch(_records(2)) == [Outcome.HANDLED, Outcome.HANDLED]
    assert seen == ["text 0", "text 1"]
