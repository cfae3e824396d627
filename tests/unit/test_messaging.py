"""Pure parts of the bus helpers: DLQ copies, the processed-events store, consumer orchestration."""

from __future__ import annotations

import asyncio
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
        retry=_fast_retry(),
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
        retry=_fast_retry(),
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


# --- a message that cannot be decoded never halts its partition (issue 20) --------------------


def _fast_retry(**overrides: Any) -> Any:
    """A retry policy of milliseconds, for tests."""
    from llmops_messaging import RetryPolicy

    options: dict[str, Any] = {"max_attempts": 100, "base_delay_s": 0.01, "max_delay_s": 0.05, "budget_s": 5.0}
    return RetryPolicy(**{**options, **overrides})


def _bomb() -> KafkaRecord:
    return KafkaRecord(b"bomb", b'{"a":' * 5000 + b"1" + b"}" * 5000)


@pytest.mark.parametrize("batched", [True, False], ids=["batch handler", "per-event handler"])
async def test_a_message_the_decoder_chokes_on_is_dead_lettered_alone(monkeypatch, batched: bool) -> None:
    """Whatever the decoder raises (here a RecursionError it did not expect), that message goes to
    the DLQ as ``undecodable`` with the exception's type, and the messages around it are applied."""
    import llmops_messaging.consumer as consumer_module

    real_decode = consumer_module.decode

    def fragile_decode(record: KafkaRecord) -> Any:
        if record.key == b"bomb":
            raise RecursionError("maximum recursion depth exceeded while decoding a JSON object")
        return real_decode(record)

    monkeypatch.setattr(consumer_module, "decode", fragile_decode)
    applied: list[str] = []

    async def handle_batch(deliveries: Sequence[Delivery]) -> list[Rejected | None]:
        applied.extend(d.envelope.data.text for d in deliveries)
        return [None] * len(deliveries)

    async def handle(envelope: Envelope[Any]) -> None:
        applied.append(envelope.data.text)

    dlq = RecordingDeadLetterQueue()
    consumer = _batch_consumer(handle_batch, dlq) if batched else _consumer(handle, dlq)
    records = _records(3)
    batch = [records[0], (_bomb(), _origin(10)), (KafkaRecord(None, b"{oops"), _origin(11)), records[1], records[2]]
    outcomes = await consumer.process_batch(batch)
    assert outcomes == [Outcome.HANDLED, Outcome.DEAD_LETTERED, Outcome.DEAD_LETTERED, Outcome.HANDLED, Outcome.HANDLED]
    assert applied == ["text 0", "text 1", "text 2"]
    assert [(sent["stage"], sent["reason"]) for sent in dlq.sent] == [
        ("decode", "undecodable"),
        ("decode", "invalid_json"),
    ]
    assert "RecursionError" in dlq.sent[0]["detail"]


async def test_a_json_bomb_is_dead_lettered_as_invalid_json() -> None:
    async def handle_batch(deliveries: Sequence[Delivery]) -> list[Rejected | None]:
        return [None] * len(deliveries)

    dlq = RecordingDeadLetterQueue()
    outcomes = await _batch_consumer(handle_batch, dlq).process_batch([(_bomb(), _origin(0)), *_records(1)])
    assert outcomes == [Outcome.DEAD_LETTERED, Outcome.HANDLED]
    assert dlq.sent[0]["reason"] == "invalid_json"


async def test_a_redelivered_batch_dead_letters_nothing_twice(tmp_path: Path) -> None:
    """The DLQ copy is sent before the batch's offsets are committed; when the batch comes again
    (a later message failed, the process crashed), what is already on the DLQ is skipped."""
    store = {"up": False}
    applied: list[str] = []

    async def handle_batch(deliveries: Sequence[Delivery]) -> list[Rejected | None]:
        if not store["up"]:
            raise ConnectionError("store down")
        applied.extend(d.envelope.data.text for d in deliveries)
        return [None] * len(deliveries)

    dlq = RecordingDeadLetterQueue()
    processed = ProcessedEvents(tmp_path / "state.db", consumer="g")
    consumer = EventConsumer(
        group_id="g",
        handlers={},
        batch_handlers={RecordSubmitted: handle_batch},
        dlq=dlq,  # type: ignore[arg-type]
        processed=processed,
        retry=_fast_retry(),
    )
    records = _records(2)
    batch = [(KafkaRecord(b"bad-1", b"{oops"), _origin(0)), records[0], (_bomb(), _origin(2)), records[1]]
    with pytest.raises(ConnectionError):
        await consumer.process_batch(batch)
    assert len(dlq.sent) == 2  # both bad messages were dead-lettered before the handler failed
    store["up"] = True
    assert await consumer.process_batch(batch) == [
        Outcome.DUPLICATE,  # on the DLQ already: skipped
        Outcome.HANDLED,
        Outcome.DUPLICATE,
        Outcome.HANDLED,
    ]
    # A crash before the commit: a new process reads the batch again from the same store.
    restarted = EventConsumer(
        group_id="g",
        handlers={},
        batch_handlers={RecordSubmitted: handle_batch},
        dlq=dlq,  # type: ignore[arg-type]
        processed=ProcessedEvents(tmp_path / "state.db", consumer="g"),
        retry=_fast_retry(),
    )
    assert await restarted.process_batch(batch) == [Outcome.DUPLICATE] * 4
    assert [sent["record"].key for sent in dlq.sent] == [b"bad-1", b"bomb"]
    assert applied == ["text 0", "text 1"]
    # Another message at a dead-lettered position (the topic was recreated) is not skipped.
    other = (KafkaRecord(b"bad-2", b"{other"), _origin(0))
    assert await restarted.process_batch([other]) == [Outcome.DEAD_LETTERED]


async def test_a_per_event_handler_failing_for_good_is_dead_lettered_once(tmp_path: Path) -> None:
    async def crash(envelope: Envelope[Any]) -> None:
        raise ConnectionError("down for good")

    dlq = RecordingDeadLetterQueue()
    processed = ProcessedEvents(tmp_path / "state.db", consumer="g")
    consumer = EventConsumer(
        group_id="g", handlers={RecordSubmitted: crash}, dlq=dlq, processed=processed, retry=_fast_retry(max_attempts=2)
    )  # type: ignore[arg-type]
    record = _submitted()
    with pytest.raises(ConnectionError):
        await consumer.process(record, ORIGIN)
    assert await consumer.process(record, ORIGIN) is Outcome.DEAD_LETTERED
    # Redelivered before the offset was committed: not retried, not dead-lettered again.
    assert await consumer.process(record, ORIGIN) is Outcome.DUPLICATE
    assert len(dlq.sent) == 1


# --- redelivery with backoff and jitter (issue 13) ----------------------------------------------


async def _until_settled(consumer: EventConsumer, batch: list[tuple[KafkaRecord, Origin]]) -> list[Outcome]:
    """What Kafka does for the subscriber: deliver the batch again until processing returns."""
    for _ in range(1000):
        try:
            return await consumer.process_batch(batch)
        except ConnectionError:
            continue
    raise AssertionError("never settled")


class FlakyStore:
    """An artifact store that is down for ``outage_s`` from its first use, then up again."""

    def __init__(self, outage_s: float) -> None:
        self.outage_s = outage_s
        self.down_since: float | None = None
        self.calls = 0
        self.written: list[str] = []

    def write(self, text: str) -> None:
        import time

        self.calls += 1
        now = time.monotonic()
        if self.down_since is None:
            self.down_since = now
        if now - self.down_since < self.outage_s:
            raise ConnectionError("artifact store unavailable")
        self.written.append(text)


@pytest.mark.parametrize("batched", [True, False], ids=["batch handler", "per-event handler"])
async def test_an_outage_longer_than_immediate_retries_sends_nothing_to_the_dlq(batched: bool) -> None:
    import time

    store = FlakyStore(outage_s=0.5)

    async def handle_batch(deliveries: Sequence[Delivery]) -> list[Rejected | None]:
        for delivery in deliveries:
            store.write(delivery.envelope.data.text)
        return [None] * len(deliveries)

    async def handle(envelope: Envelope[Any]) -> None:
        store.write(envelope.data.text)

    dlq = RecordingDeadLetterQueue()
    # 5 attempts, as before, but spaced out: immediate redelivery would have spent them in
    # microseconds and dead-lettered a good message.
    retry = _fast_retry(max_attempts=5, base_delay_s=0.05, max_delay_s=1.0, budget_s=5.0, jitter=0.0)
    options: dict[str, Any] = {"group_id": "g", "dlq": dlq, "processed": ProcessedEvents(":memory:", consumer="g")}
    if batched:
        consumer = EventConsumer(handlers={}, batch_handlers={RecordSubmitted: handle_batch}, retry=retry, **options)
    else:
        consumer = EventConsumer(handlers={RecordSubmitted: handle}, retry=retry, **options)
    started = time.monotonic()
    outcomes = await _until_settled(consumer, _records(3))
    assert time.monotonic() - started >= 0.5
    assert outcomes == [Outcome.HANDLED] * 3
    assert dlq.sent == []
    assert store.written == ["text 0", "text 1", "text 2"]  # each effect once, in order


async def test_a_message_that_always_fails_is_dead_lettered_after_the_bounded_budget() -> None:
    import time

    async def handle(envelope: Envelope[Any]) -> None:
        raise ConnectionError("down for good")

    dlq = RecordingDeadLetterQueue()
    consumer = EventConsumer(
        group_id="g",
        handlers={RecordSubmitted: handle},
        dlq=dlq,  # type: ignore[arg-type]
        processed=ProcessedEvents(":memory:", consumer="g"),
        retry=_fast_retry(max_attempts=1000, base_delay_s=0.01, max_delay_s=0.05, budget_s=0.3),
    )
    started = time.monotonic()
    outcomes = await _until_settled(consumer, _records(2))
    elapsed = time.monotonic() - started
    # (the last delivery skips the first message: it went to the DLQ in an earlier one)
    assert outcomes == [Outcome.DUPLICATE, Outcome.DEAD_LETTERED]
    assert 0.6 <= elapsed < 3  # each message had its whole budget, and no more
    assert [sent["reason"] for sent in dlq.sent] == ["handler_failed", "handler_failed"]
    assert "ConnectionError('down for good')" in dlq.sent[0]["detail"]


def test_backoff_is_exponential_with_full_jitter_and_capped() -> None:
    import random

    from llmops_messaging import RetryPolicy

    policy = RetryPolicy(max_attempts=20, base_delay_s=0.5, max_delay_s=30.0, jitter=1.0, budget_s=120.0)
    rng = random.Random(7)
    for attempt, cap in [(1, 0.5), (2, 1.0), (3, 2.0), (6, 16.0), (7, 30.0), (50, 30.0), (5000, 30.0)]:
        delays = [policy.backoff(attempt, rng) for _ in range(500)]
        assert all(0 <= delay <= cap for delay in delays)
        assert min(delays) < cap * 0.05 and max(delays) > cap * 0.95  # full jitter: anywhere in [0, cap]
    no_jitter = policy.model_copy(update={"jitter": 0.0})
    assert [no_jitter.backoff(n) for n in (1, 2, 3)] == [0.5, 1.0, 2.0]
    # The last wait is cut to what is left of the budget, so a retry happens at its very end.
    assert no_jitter.delay(7, elapsed_s=110.0) == 10.0
    assert policy.exhausted(attempts=20, elapsed_s=1.0) and policy.exhausted(attempts=2, elapsed_s=120.0)
    assert not policy.exhausted(attempts=19, elapsed_s=119.0)


def test_the_default_policy_rides_out_a_minute_long_outage() -> None:
    from llmops_messaging import RetryPolicy

    policy = RetryPolicy()
    assert policy.budget_s >= 60 + policy.max_delay_s
    # Even with every jittered wait at its longest, the attempts last longer than the budget:
    # it is time, not the count of attempts, that ends the retries of a message during an outage.
    # The expected (full jitter: half the cap) wait grows past the budget within max_attempts.
    expected = sum(min(policy.max_delay_s, policy.base_delay_s * 2**n) / 2 for n in range(policy.max_attempts - 1))
    assert expected > policy.budget_s
    # A wait never holds a partition near max.poll.interval.ms (aiokafka's default: 300 s).
    assert policy.max_delay_s <= 120


# --- health: a consumer that makes no progress is reported ---------------------------------------


class BrokenDeadLetterQueue(RecordingDeadLetterQueue):
    """A DLQ that cannot be written while ``down``: every delivery with a bad message fails."""

    def __init__(self) -> None:
        super().__init__()
        self.down = True

    async def send(self, record: KafkaRecord, *, origin: Origin, stage: str, reason: str, detail: str) -> None:
        if self.down:
            raise ConnectionError("DLQ topic unavailable")
        await super().send(record, origin=origin, stage=stage, reason=reason, detail=detail)


async def test_a_consumer_whose_deliveries_keep_failing_reports_a_stall() -> None:
    async def handle(envelope: Envelope[Any]) -> None:
        pass

    dlq = BrokenDeadLetterQueue()
    consumer = EventConsumer(
        group_id="g",
        handlers={RecordSubmitted: handle},
        dlq=dlq,  # type: ignore[arg-type]
        processed=ProcessedEvents(":memory:", consumer="g"),
        retry=_fast_retry(),
        stall_after_failures=3,
    )
    batch = [(KafkaRecord(None, b"{oops"), _origin(7)), *_records(1)]
    assert consumer.health().healthy
    for failures in range(1, 4):
        with pytest.raises(ConnectionError):
            await consumer.deliver(batch)
        assert consumer.progress.consecutive_failures == failures
    health = consumer.health()
    assert not health.healthy
    assert "3 failed deliveries in a row" in health.detail
    assert "llmops.records.raw.v1[0]@7" in health.detail and "DLQ topic unavailable" in health.detail

    dlq.down = False
    seen: list[Outcome] = []
    assert await consumer.deliver(batch, seen.append) == [Outcome.DEAD_LETTERED, Outcome.HANDLED]
    assert seen == [Outcome.DEAD_LETTERED, Outcome.HANDLED]
    assert consumer.health().healthy and consumer.progress.consecutive_failures == 0


async def test_a_message_retried_by_the_policy_is_not_a_stall() -> None:
    async def crash(envelope: Envelope[Any]) -> None:
        raise ConnectionError("store down")

    consumer = EventConsumer(
        group_id="g",
        handlers={RecordSubmitted: crash},
        dlq=RecordingDeadLetterQueue(),  # type: ignore[arg-type]
        processed=ProcessedEvents(":memory:", consumer="g"),
        retry=_fast_retry(),
        stall_after_failures=2,
    )
    for _ in range(5):
        with pytest.raises(ConnectionError):
            await consumer.deliver(_records(1))
    health = consumer.health()
    assert health.healthy, health.detail
    assert "retrying llmops.records.raw.v1[0]@0 (attempt 5)" in health.detail


def test_progress_health_and_the_metric_that_status_reads() -> None:
    from prometheus_client import CollectorRegistry, generate_latest

    from llmops_messaging import ConsumerHealthCollector, stall_reasons
    from llmops_messaging.health import ConsumerProgress

    now = [100.0]
    progress = ConsumerProgress("ingestion", stall_after_failures=2, clock=lambda: now[0])
    progress.delivered(10)
    progress.failed(_origin(5), RuntimeError("boom"))
    assert progress.health().healthy
    now[0] += 42
    progress.failed(_origin(5), RuntimeError("boom"))
    stalled = progress.health()
    assert not stalled.healthy
    assert stalled.detail == (
        "consumer group ingestion stalled: 2 failed deliveries in a row at llmops.records.raw.v1[0]@5,"
        " no progress for 42s; last error: RuntimeError('boom')"
    )

    class Fake:
        def __init__(self, group_id: str, progress: ConsumerProgress) -> None:
            self.group_id = group_id
            self.progress = progress

        def health(self) -> Any:
            return self.progress.health()

    registry = CollectorRegistry()
    registry.register(
        ConsumerHealthCollector(lambda: [Fake("ingestion", progress), Fake("other", ConsumerProgress("other"))])
    )
    page = generate_latest(registry).decode()
    assert "llmops_consumer_failed_deliveries" in page
    assert stall_reasons(page) == [stalled.detail]
    progress.delivered(1)
    assert stall_reasons(generate_latest(registry).decode()) == []
    assert stall_reasons("not a metrics page {") == []


# --- a message that kills or hangs its process is bounded too (issue 20) ------------------------


class Crash(BaseException):
    """What a dying process looks like to the code around the handler: nothing catches it."""


async def _until_done(
    consumer: EventConsumer, batch: list[tuple[KafkaRecord, Origin]], tries: int = 50
) -> list[Outcome]:
    """Deliver ``batch`` again until processing returns (any failure is a redelivery), boundedly."""
    for _ in range(tries):
        try:
            return await consumer.process_batch(batch)
        except Exception:
            continue
    raise AssertionError(f"not settled after {tries} deliveries")


async def test_a_handler_that_hangs_is_dead_lettered_after_its_attempts_and_the_next_message_is_handled() -> None:
    handled: list[str] = []
    calls = {"text 0": 0}

    async def handle(envelope: Envelope[Any]) -> None:
        if envelope.data.text == "text 0":
            calls["text 0"] += 1
            await asyncio.Event().wait()  # never returns
        handled.append(envelope.data.text)

    dlq = RecordingDeadLetterQueue()
    consumer = EventConsumer(
        group_id="g",
        handlers={RecordSubmitted: handle},
        dlq=dlq,  # type: ignore[arg-type]
        processed=ProcessedEvents(":memory:", consumer="g"),
        retry=_fast_retry(max_attempts=3, handler_timeout_s=0.05),
    )
    outcomes = await asyncio.wait_for(_until_done(consumer, _records(2)), timeout=10)
    assert outcomes == [Outcome.DEAD_LETTERED, Outcome.HANDLED]
    assert calls["text 0"] == 3 and handled == ["text 1"]
    assert [sent["reason"] for sent in dlq.sent] == ["handler_failed"]
    assert "did not finish within 0.05s" in dlq.sent[0]["detail"]


async def test_a_hanging_batch_handler_is_timed_out_and_its_record_isolated() -> None:
    async def handle_batch(deliveries: Sequence[Delivery]) -> list[Rejected | None]:
        if any(d.origin.offset == 1 for d in deliveries):
            await asyncio.Event().wait()
        return [None] * len(deliveries)

    dlq = RecordingDeadLetterQueue()
    consumer = EventConsumer(
        group_id="g",
        handlers={},
        batch_handlers={RecordSubmitted: handle_batch},
        dlq=dlq,  # type: ignore[arg-type]
        processed=ProcessedEvents(":memory:", consumer="g"),
        retry=_fast_retry(max_attempts=2, handler_timeout_s=0.05),
    )
    outcomes = await asyncio.wait_for(_until_done(consumer, _records(3)), timeout=10)
    assert outcomes[1:] == [Outcome.DEAD_LETTERED, Outcome.HANDLED]
    assert [sent["reason"] for sent in dlq.sent] == ["handler_failed"]


def _crash_consumer(handler: Any, dlq: RecordingDeadLetterQueue, db: Path, *, batched: bool = False) -> EventConsumer:
    """A consumer as a freshly started process builds it: a new object on the same SQLite file."""
    options: dict[str, Any] = {
        "group_id": "g",
        "dlq": dlq,
        "processed": ProcessedEvents(db, consumer="g"),
        "retry": _fast_retry(max_attempts=3),
    }
    if batched:
        return EventConsumer(handlers={}, batch_handlers={RecordSubmitted: handler}, **options)
    return EventConsumer(handlers={RecordSubmitted: handler}, **options)


@pytest.mark.parametrize("death", [Crash, KeyboardInterrupt, SystemExit], ids=lambda kind: kind.__name__)
async def test_attempts_that_kill_the_process_are_counted_across_restarts(tmp_path: Path, death: type) -> None:
    """The attempt is written before the handler runs: a process that dies in it (out of memory,
    killed) has still used one, and once they are spent the message goes to the DLQ unhandled."""
    calls: list[str] = []

    async def handle(envelope: Envelope[Any]) -> None:
        calls.append(envelope.id)
        if len(calls) <= 3:  # (a fourth run would be the bug; it must not end the test session)
            raise death("the process dies here")

    dlq = RecordingDeadLetterQueue()
    record = _submitted()
    for _ in range(3):
        with pytest.raises(death):
            await _crash_consumer(handle, dlq, tmp_path / "state.db").process(record, ORIGIN)
    restarted = _crash_consumer(handle, dlq, tmp_path / "state.db")
    assert await restarted.process(record, ORIGIN) is Outcome.DEAD_LETTERED
    assert len(calls) == 3  # not run a fourth time
    assert [sent["reason"] for sent in dlq.sent] == ["attempts_exhausted"]
    assert "3 attempts" in dlq.sent[0]["detail"]
    assert await restarted.process(record, ORIGIN) is Outcome.DUPLICATE  # redelivered: skipped


async def test_failures_and_crashes_share_one_persisted_count(tmp_path: Path) -> None:
    """In-memory counting restarted at zero with each process; the count lives in SQLite now."""
    script = iter([ConnectionError("down"), Crash("killed"), ConnectionError("down again")])

    async def handle(envelope: Envelope[Any]) -> None:
        raise next(script)

    dlq = RecordingDeadLetterQueue()
    record = _submitted()
    with pytest.raises(ConnectionError):
        await _crash_consumer(handle, dlq, tmp_path / "state.db").process(record, ORIGIN)
    with pytest.raises(Crash):
        await _crash_consumer(handle, dlq, tmp_path / "state.db").process(record, ORIGIN)
    outcome = await _crash_consumer(handle, dlq, tmp_path / "state.db").process(record, ORIGIN)
    assert outcome is Outcome.DEAD_LETTERED
    assert dlq.sent[0]["reason"] == "handler_failed" and "failed 3 times" in dlq.sent[0]["detail"]


async def test_a_batch_that_kills_the_process_is_retried_one_record_at_a_time(tmp_path: Path) -> None:
    """A run of records crashed: nobody knows which one did it, so after the restart they are applied
    one by one; the poison record uses up its attempts alone and the others are applied once."""
    applied: list[str] = []

    async def handle_batch(deliveries: Sequence[Delivery]) -> list[Rejected | None]:
        if any(d.origin.offset == 2 for d in deliveries):
            raise Crash("out of memory")
        applied.extend(d.envelope.data.text for d in deliveries)
        return [None] * len(deliveries)

    dlq = RecordingDeadLetterQueue()
    batch = _records(5)
    outcomes: list[Outcome] | None = None
    for _ in range(10):  # each pass is a new process reading the same batch again
        try:
            outcomes = await _crash_consumer(handle_batch, dlq, tmp_path / "state.db", batched=True).process_batch(
                batch
            )
            break
        except Crash:
            continue
    assert outcomes == [Outcome.DUPLICATE, Outcome.DUPLICATE, Outcome.DEAD_LETTERED, Outcome.HANDLED, Outcome.HANDLED]
    assert applied == ["text 0", "text 1", "text 3", "text 4"]
    assert [sent["reason"] for sent in dlq.sent] == ["attempts_exhausted"]


async def test_a_batch_failure_alone_uses_no_attempt_of_its_good_records(tmp_path: Path) -> None:
    """A run that raised (the process lives) is split at once; its records' attempts are not spent."""

    async def handle_batch(deliveries: Sequence[Delivery]) -> list[Rejected | None]:
        if len(deliveries) > 1:
            raise ValueError("one of these is bad")
        return [None] * len(deliveries)

    dlq = RecordingDeadLetterQueue()
    consumer = EventConsumer(
        group_id="g",
        handlers={},
        batch_handlers={RecordSubmitted: handle_batch},
        dlq=dlq,  # type: ignore[arg-type]
        processed=ProcessedEvents(tmp_path / "state.db", consumer="g"),
        retry=_fast_retry(max_attempts=1),
    )
    assert await consumer.process_batch(_records(3)) == [Outcome.HANDLED] * 3
    assert dlq.sent == []


async def test_a_stop_while_a_handler_runs_is_not_an_attempt(tmp_path: Path) -> None:
    started = asyncio.Event()
    block = {"on": True}

    async def handle(envelope: Envelope[Any]) -> None:
        started.set()
        if block["on"]:
            await asyncio.Event().wait()

    dlq = RecordingDeadLetterQueue()
    consumer = EventConsumer(
        group_id="g",
        handlers={RecordSubmitted: handle},
        dlq=dlq,  # type: ignore[arg-type]
        processed=ProcessedEvents(tmp_path / "state.db", consumer="g"),
        retry=_fast_retry(max_attempts=1),
    )
    record = _submitted()
    task = asyncio.create_task(consumer.process(record, ORIGIN))
    await started.wait()
    task.cancel()  # the service stops: the broker cancels the delivery
    with pytest.raises(asyncio.CancelledError):
        await task
    block["on"] = False
    assert await consumer.process(record, ORIGIN) is Outcome.HANDLED
    assert dlq.sent == []


class _FakeBroker:
    def __init__(self) -> None:
        self.options: dict[str, Any] = {}

    def subscriber(self, *topics: str, **options: Any) -> Any:
        self.options = options
        return lambda function: function


def test_the_handler_time_limit_and_the_poll_interval_fit_together() -> None:
    from llmops_messaging import subscribe

    async def handle(envelope: Envelope[Any]) -> None:
        pass

    retry = _fast_retry(handler_timeout_s=600.0, max_delay_s=30.0)
    # Default: the poll interval leaves room for the longest handler and one backoff.
    broker = _FakeBroker()
    consumer = EventConsumer(
        group_id="g",
        handlers={RecordSubmitted: handle},
        dlq=RecordingDeadLetterQueue(),  # type: ignore[arg-type]
        processed=ProcessedEvents(":memory:", consumer="g"),
        retry=retry,
    )
    subscribe(broker, consumer, "t")  # type: ignore[arg-type]
    assert consumer.handler_timeout_s == 600.0
    assert broker.options["max_poll_interval_ms"] >= (600 + 30) * 1000
    # A service whose deliveries may take an hour (fine-tuning) raises the poll interval: its
    # handlers get the time that allows, not the default limit.
    long = EventConsumer(
        group_id="g",
        handlers={RecordSubmitted: handle},
        dlq=RecordingDeadLetterQueue(),  # type: ignore[arg-type]
        processed=ProcessedEvents(":memory:", consumer="g"),
        retry=retry,
    )
    subscribe(broker, long, "t", max_poll_interval_ms=3_600_000)  # type: ignore[arg-type]
    assert 3000 < long.handler_timeout_s < 3600 - 30
    assert broker.options["max_poll_interval_ms"] == 3_600_000
    # An explicit limit per consumer wins, and the poll interval follows it.
    explicit = EventConsumer(
        group_id="g",
        handlers={RecordSubmitted: handle},
        dlq=RecordingDeadLetterQueue(),  # type: ignore[arg-type]
        processed=ProcessedEvents(":memory:", consumer="g"),
        retry=retry,
        handler_timeout_s=7200.0,
    )
    subscribe(broker, explicit, "t")  # type: ignore[arg-type]
    assert explicit.handler_timeout_s == 7200.0
    assert broker.options["max_poll_interval_ms"] >= (7200 + 30) * 1000


# --- processed_events does not grow forever (issue 20) --------------------------------------------


def test_state_older_than_the_retention_window_is_pruned(tmp_path: Path) -> None:
    from datetime import UTC, datetime, timedelta

    now = [datetime(2026, 11, 1, tzinfo=UTC)]
    store = ProcessedEvents(
        tmp_path / "state.db", consumer="g", retention_s=3600, prune_interval_s=600, clock=lambda: now[0]
    )
    other = ProcessedEvents(tmp_path / "state.db", consumer="other", retention_s=3600, clock=lambda: now[0])
    store.mark_processed("old")
    other.mark_processed("old")
    store.mark_dead_lettered("t", 0, 1, fingerprint="f", reason="invalid_json")
    store.start_attempts([("t", 0, 2, "f")])
    now[0] += timedelta(minutes=40)
    store.mark_processed("recent")
    store.start_attempts([("t", 0, 3, "f")])
    now[0] += timedelta(minutes=30)  # "old" and its neighbours are 70 minutes old, the others 30

    assert store.prune() == 3
    assert not store.has_processed("old") and store.has_processed("recent")
    assert other.has_processed("old")  # another consumer group's rows are its own business
    assert store.dead_lettered_between("t", 0, 0, 10) == {}
    assert set(store.attempts_between("t", 0, 0, 10)) == {3}

    # Periodically: at most once per interval, from the consumer's deliveries.
    now[0] += timedelta(hours=2)
    assert store.maybe_prune() == 2  # a first call prunes at once
    store.mark_processed("newer")
    now[0] += timedelta(hours=2)
    assert store.maybe_prune() == 1
    store.mark_processed("newest")
    now[0] += timedelta(minutes=5)
    assert store.maybe_prune() is None  # within the interval of the last prune: not run
    assert store.has_processed("newest")


async def test_the_consumer_prunes_as_it_delivers(tmp_path: Path) -> None:
    from datetime import UTC, datetime, timedelta

    now = [datetime(2026, 11, 1, tzinfo=UTC)]
    processed = ProcessedEvents(tmp_path / "state.db", consumer="g", retention_s=60, clock=lambda: now[0])

    async def handle(envelope: Envelope[Any]) -> None:
        pass

    consumer = EventConsumer(
        group_id="g",
        handlers={RecordSubmitted: handle},
        dlq=RecordingDeadLetterQueue(),  # type: ignore[arg-type]
        processed=processed,
        retry=_fast_retry(),
    )
    first = _records(1)
    await consumer.deliver(first)
    now[0] += timedelta(hours=1)
    await consumer.deliver([(record, _origin(1)) for record, _ in _records(1)])
    count = processed.connection.execute("SELECT count(*) FROM processed_events").fetchone()[0]
    assert count == 1


def test_the_default_retention_outlives_every_redelivery() -> None:
    """A message can be read again as long as Kafka keeps it: a stream's retention, plus up to one
    segment (Kafka deletes whole segments; ``segment.ms`` is 7 days by default), e.g. when a group's
    committed offsets expired and it starts again from the earliest offset."""
    from llmops_events.topics import TOPICS
    from llmops_messaging.idempotency import KAFKA_DEFAULT_SEGMENT_S, ProcessedEventsSettings

    settings = ProcessedEventsSettings()
    longest_s = max(
        int(spec.config["retention.ms"]) / 1000
        for spec in TOPICS
        if spec.config.get("cleanup.policy") == "delete"
        and int(spec.config.get("retention.ms", "0")) > 0
        and spec.name != "llmops.records.dlq.v1"  # nobody consumes the DLQ; a replay sends new messages
    )
    assert settings.retention_s > longest_s + KAFKA_DEFAULT_SEGMENT_S
    assert settings.prune_interval_s < settings.retention_s


# --- derived event ids (issue 20) ------------------------------------------------------------------


def test_derived_ids_are_deterministic_uuids() -> None:
    import uuid

    from llmops_events import derived_id

    first = derived_id("e-1", "llmops.evaluation.completed.v1")
    assert first == derived_id("e-1", "llmops.evaluation.completed.v1")
    assert uuid.UUID(first).version == 5
    assert first != derived_id("e-2", "llmops.evaluation.completed.v1")
    assert first != derived_id("e-1", "llmops.training.started.v1")
    # The two parts cannot run into each other.
    assert derived_id("a/b", "c") != derived_id("a", "b/c")


async def test_a_published_event_can_carry_a_given_id_and_its_duplicate_is_skipped_downstream() -> None:
    from llmops_config import PlatformSettings
    from llmops_events import derived_id
    from llmops_messaging import EventPublisher

    sent: list[KafkaRecord] = []
    publisher = EventPublisher(PlatformSettings(), service="tests")

    async def publish_record(topic: str, record: KafkaRecord) -> None:
        sent.append(record)

    publisher.publish_record = publish_record  # type: ignore[method-assign]
    event_id = derived_id("input-1", RecordSubmitted.event_type)
    data = RecordSubmitted(tenant="a", source="b", text="c")
    for _ in range(2):  # the handler ran twice (a crash before its offset was committed)
        envelope = await publisher.publish(data, id=event_id, correlationid="c-1")
        assert envelope.id == event_id and envelope.correlationid == "c-1"
    applied: list[str] = []

    async def handle(envelope: Envelope[Any]) -> None:
        applied.append(envelope.id)

    consumer = _consumer(handle, RecordingDeadLetterQueue())
    outcomes = [await consumer.process(record, _origin(offset)) for offset, record in enumerate(sent)]
    assert outcomes == [Outcome.HANDLED, Outcome.DUPLICATE]
    assert applied == [event_id]


async def test_a_handler_knows_the_id_of_the_event_it_answers_but_its_background_tasks_do_not() -> None:
    """What a handler publishes deep in its call stack can derive its id from the input's
    (``current_event_id``); a task it starts may outlive it and answers no one event."""
    from llmops_messaging import current_event_id

    seen: dict[str, str | None] = {}
    spawned: list[asyncio.Task[None]] = []

    async def in_background() -> None:
        seen["background"] = current_event_id()

    async def handle(envelope: Envelope[Any]) -> None:
        seen["handler"] = current_event_id()
        seen["input"] = envelope.id
        seen["thread"] = await asyncio.to_thread(current_event_id)
        spawned.append(asyncio.create_task(in_background()))

    await _consumer(handle, RecordingDeadLetterQueue()).process(_submitted(), ORIGIN)
    await spawned[0]
    assert seen["handler"] == seen["input"]
    assert seen["background"] is None and seen["thread"] is None
    assert current_event_id() is None


async def test_a_crashed_run_redelivered_in_parts_stays_one_message_at_a_time_until_all_of_it_is_applied(
    tmp_path: Path,
) -> None:
    """After the restart the crashed run may come back in smaller batches: the part before the poison
    message is applied alone, and the poison one, in a later batch, is still applied alone."""
    applied: list[str] = []
    runs: list[int] = []

    async def handle_batch(deliveries: Sequence[Delivery]) -> list[Rejected | None]:
        runs.append(len(deliveries))
        if any(d.origin.offset == 4 for d in deliveries):
            raise Crash("out of memory")
        applied.extend(d.envelope.data.text for d in deliveries)
        return [None] * len(deliveries)

    dlq = RecordingDeadLetterQueue()
    batch = _records(6)
    with pytest.raises(Crash):
        await _crash_consumer(handle_batch, dlq, tmp_path / "state.db", batched=True).process_batch(batch)
    restarted = _crash_consumer(handle_batch, dlq, tmp_path / "state.db", batched=True)
    assert await restarted.process_batch(batch[:3]) == [Outcome.HANDLED] * 3
    runs.clear()
    with pytest.raises(Crash):
        await restarted.process_batch(batch[3:])
    assert runs == [1, 1]  # offsets 3 and 4 alone: the crashed run's marker still covers them
