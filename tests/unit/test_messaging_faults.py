"""The consumer facing a full disk (issue 20, item 11) and its fault-injection point for the chaos tests
(issue 20: a service SIGKILLed between a handler's effect and the offset commit).

A full disk is an infrastructure condition, not a verdict on a message: whether the handler or the
consumer's own state database cannot write, no attempt is counted, nothing is dead-lettered, the
consumer reports itself stalled with the reason ``disk_full`` while it lasts, and the same batch is
delivered again until it goes through; then the stall clears. The tiny real filesystem version is
``tests/integration/test_disk_full.py``."""

from __future__ import annotations

import errno
import os
import sqlite3
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import psycopg
import pytest

from llmops_events import Envelope, KafkaRecord, encode
from llmops_events.v1 import RecordSubmitted
from llmops_messaging import Delivery, EventConsumer, Origin, Outcome, ProcessedEvents, Rejected, RetryPolicy
from llmops_messaging.faults import FAULT_INJECT_ENV, FaultInjection, FaultPoint, infrastructure_fault, is_disk_full
from llmops_messaging.idempotency import AttemptKey, RunRange
from llmops_storage.state_store import StateStoreUnavailable

TOPIC = "llmops.records.raw.v1"
SUBMITTED = RecordSubmitted.event_type


class RecordingDeadLetterQueue:
    def __init__(self) -> None:
        self.sent: list[dict[str, Any]] = []

    async def send(self, record: KafkaRecord, *, origin: Origin, stage: str, reason: str, detail: str) -> None:
        self.sent.append({"record": record, "offset": origin.offset, "stage": stage, "reason": reason})


def _enospc() -> OSError:
    return OSError(errno.ENOSPC, os.strerror(errno.ENOSPC), "/var/llmops/state/ingestion.db-wal")


def _sqlite_full() -> sqlite3.OperationalError:
    return sqlite3.OperationalError("database or disk is full")


def _records(count: int, *, first: int = 0) -> list[tuple[KafkaRecord, Origin]]:
    return [
        (
            encode(Envelope.wrap(RecordSubmitted(tenant="a", source="b", text=f"text {i}"), source="/t")),
            Origin(TOPIC, 0, i, "g"),
        )
        for i in range(first, first + count)
    ]


def _retry(**overrides: Any) -> RetryPolicy:
    options: dict[str, Any] = {"max_attempts": 2, "base_delay_s": 0.001, "max_delay_s": 0.005, "budget_s": 60.0}
    return RetryPolicy(**{**options, **overrides})


class FullDiskState(ProcessedEvents):
    """The consumer's SQLite state on a disk that is full while ``full``: every write raises what
    SQLite raises then; reads work."""

    full = False
    spare_attempts = False
    """Let the attempts through (SQLite may find room in a page it has) while the rest fails."""

    def _refuse(self) -> None:
        if self.full:
            raise _sqlite_full()

    def start_attempts(self, keys: Sequence[AttemptKey]) -> list[int]:
        if not self.spare_attempts:
            self._refuse()
        return super().start_attempts(keys)

    def undo_attempts(self, keys: Sequence[AttemptKey]) -> None:
        self._refuse()
        super().undo_attempts(keys)

    def finish(self, event_ids: Sequence[str], keys: Sequence[AttemptKey] = (), runs: Sequence[RunRange] = ()) -> None:
        self._refuse()
        super().finish(event_ids, keys, runs)

    def mark_dead_lettered(self, topic: str, partition: int, offset: int, *, fingerprint: str, reason: str) -> None:
        self._refuse()
        super().mark_dead_lettered(topic, partition, offset, fingerprint=fingerprint, reason=reason)

    def start_runs(self, runs: Sequence[RunRange]) -> None:
        self._refuse()
        super().start_runs(runs)

    def end_runs(self, runs: Sequence[RunRange]) -> None:
        self._refuse()
        super().end_runs(runs)


async def _deliver_until_it_succeeds(
    consumer: EventConsumer, batch: list[tuple[KafkaRecord, Origin]], *, on_failure: Any = None, limit: int = 50
) -> tuple[list[Outcome], int]:
    """What Kafka does for the subscriber: deliver the batch again until ``deliver`` returns; returns
    the outcomes and the failed deliveries."""
    for failures in range(limit):
        try:
            return await consumer.deliver(batch), failures
        except Exception as error:
            assert infrastructure_fault(error) is not None, repr(error)  # nothing else may fail a delivery
            if on_failure is not None:
                on_failure(failures + 1)
    raise AssertionError("the delivery never succeeded")


# --- what a full disk looks like ----------------------------------------------------------------


def test_a_full_disk_is_told_from_other_errors() -> None:
    assert is_disk_full(_enospc())
    assert is_disk_full(OSError(errno.EDQUOT, "quota"))
    assert is_disk_full(_sqlite_full())
    try:
        try:
            raise _enospc()
        except OSError as error:
            raise RuntimeError("writing the snapshot failed") from error
    except RuntimeError as wrapped:
        assert is_disk_full(wrapped)  # the cause counts
    assert is_disk_full(ExceptionGroup("several", [ValueError("x"), _sqlite_full()]))
    assert is_disk_full(psycopg.errors.DiskFull("could not extend file"))  # the shared PostgreSQL store
    assert not is_disk_full(psycopg.errors.LockNotAvailable("lock timeout"))
    assert not is_disk_full(OSError(errno.EACCES, "denied"))
    assert not is_disk_full(sqlite3.OperationalError("database is locked"))
    assert not is_disk_full(ConnectionError("down"))
    assert infrastructure_fault(ConnectionError("down")) is None  # a plain connection error is the handler's
    down = StateStoreUnavailable("the connection broke")
    assert infrastructure_fault(down) == "state_store_unavailable" and not is_disk_full(down)
    assert infrastructure_fault(RuntimeError("handler")) is None


# --- a handler that meets an infrastructure fault --------------------------------------------------


def _state_store_down() -> StateStoreUnavailable:
    try:
        raise OSError("connection refused")
    except OSError as cause:  # as the stores raise it: the driver's error as the cause
        error = StateStoreUnavailable("the state store could not be reached: connection refused")
        error.__cause__ = cause
        return error


@pytest.mark.parametrize(
    ("batched", "fault", "reason", "said"),
    [
        (False, _enospc, "disk_full", "No space left on device"),
        (True, _sqlite_full, "disk_full", "database or disk is full"),
        (False, _state_store_down, "state_store_unavailable", "the state store could not be reached"),
    ],
    ids=["full disk, per-event handler", "full disk, batch handler", "state store unreachable"],
)
async def test_a_handler_meeting_an_infrastructure_fault_is_retried_until_it_is_gone_never_dead_lettered(
    batched: bool, fault: Any, reason: str, said: str
) -> None:
    """The handler fails six times, three times the policy's attempts, for a reason that is not the
    message's (a full disk, the shared state store down): no DLQ, the effect once, stalled with the
    fault as the reason from the first failure until the delivery that succeeds."""
    failures_left = [6]
    effects: list[str] = []

    def write(text: str) -> None:
        if failures_left[0] > 0:
            failures_left[0] -= 1
            raise fault()
        effects.append(text)

    async def handle(envelope: Envelope[Any]) -> None:
        write(envelope.data.text)

    async def handle_batch(deliveries: Sequence[Delivery]) -> list[Rejected | None]:
        for delivery in deliveries:
            write(delivery.envelope.data.text)
        return [None] * len(deliveries)

    dlq = RecordingDeadLetterQueue()
    consumer = EventConsumer(
        group_id="g",
        handlers={} if batched else {RecordSubmitted: handle},
        batch_handlers={RecordSubmitted: handle_batch} if batched else None,
        dlq=dlq,  # type: ignore[arg-type]
        processed=ProcessedEvents(":memory:", consumer="g"),
        retry=_retry(max_attempts=2),
        stall_after_failures=3,
        faults=None,
    )
    health_during: list[Any] = []
    outcomes, failed = await _deliver_until_it_succeeds(
        consumer, _records(1), on_failure=lambda _: health_during.append(consumer.health())
    )

    assert failed == 6 and outcomes == [Outcome.HANDLED]
    assert dlq.sent == []
    assert effects == ["text 0"]
    assert all(not health.healthy and health.reason == reason for health in health_during)
    assert f"stalled ({reason}" in health_during[0].detail and said in health_during[0].detail
    assert consumer.health().healthy and consumer.health().reason == ""


@pytest.mark.parametrize("spare_attempts", [False, True], ids=["nothing written", "attempts written"])
async def test_the_consumers_own_state_on_a_full_disk_stalls_it_and_floods_nothing(spare_attempts: bool) -> None:
    """The state database is full: a message that cannot be decoded, and one the handler rejects
    (when its attempt can still be written), reach the DLQ once however often the batch comes again
    (their marks are kept in memory until they can be written); the good message after them is
    applied once when there is space again, and the consumer is stalled meanwhile."""
    applied: list[str] = []

    async def handle(envelope: Envelope[Any]) -> None:
        if envelope.data.text == "text 1":
            raise Rejected("unknown_label", "not in the label set")
        applied.append(envelope.data.text)

    state = FullDiskState(":memory:", consumer="g")
    state.spare_attempts = spare_attempts
    dlq = RecordingDeadLetterQueue()
    consumer = EventConsumer(
        group_id="g",
        handlers={RecordSubmitted: handle},
        dlq=dlq,  # type: ignore[arg-type]
        processed=state,
        retry=_retry(max_attempts=1),
        faults=None,
    )
    batch = [(KafkaRecord(None, b"{not json"), Origin(TOPIC, 0, 0, "g")), *_records(2, first=1)]
    state.full = True
    for _ in range(5):
        with pytest.raises(sqlite3.OperationalError):
            await consumer.deliver(batch)
        health = consumer.health()
        assert not health.healthy and health.reason == "disk_full"
    expected = [(0, "invalid_json"), (1, "unknown_label")] if spare_attempts else [(0, "invalid_json")]
    assert [(sent["offset"], sent["reason"]) for sent in dlq.sent] == expected
    # Applied on each delivery when its attempt could be written, never recorded (at-least-once: the
    # handlers are idempotent), not at all when it could not.
    assert applied == (["text 2"] * 5 if spare_attempts else [])

    state.full = False
    outcomes = await consumer.deliver(batch)
    rejected = Outcome.DUPLICATE if spare_attempts else Outcome.DEAD_LETTERED  # (dead-lettered only now)
    assert outcomes == [Outcome.DUPLICATE, rejected, Outcome.HANDLED]
    assert [(sent["offset"], sent["reason"]) for sent in dlq.sent] == [(0, "invalid_json"), (1, "unknown_label")]
    assert applied[-1] == "text 2" and consumer.health().healthy
    # The marks reached the database: a later redelivery skips both without the memory.
    assert state.dead_lettered_between(TOPIC, 0, 0, 1).keys() == {0, 1}


async def test_an_effect_whose_mark_a_full_disk_refused_does_not_use_up_the_attempts() -> None:
    """The handler's effect is durable but recording the event fails (disk full) again and again:
    the message is applied again on each redelivery (at-least-once; handlers are idempotent), and
    those attempts do not count, so it is never dead-lettered as ``attempts_exhausted``."""
    runs: list[str] = []
    state = FullDiskState(":memory:", consumer="g")

    async def handle(envelope: Envelope[Any]) -> None:
        runs.append(envelope.id)
        state.full = len(runs) <= 4  # the disk fills up as the effect is written, for four deliveries

    dlq = RecordingDeadLetterQueue()
    consumer = EventConsumer(
        group_id="g",
        handlers={RecordSubmitted: handle},
        dlq=dlq,  # type: ignore[arg-type]
        processed=state,
        retry=_retry(max_attempts=2),
        faults=None,
    )

    def space_again(_: int) -> None:
        state.full = False  # the next delivery's attempt can be recorded; the effect fills it again

    batch = _records(1)
    outcomes, failed = await _deliver_until_it_succeeds(consumer, batch, on_failure=space_again)
    assert failed == 4 and outcomes == [Outcome.HANDLED]
    assert dlq.sent == [] and len(runs) == 5 and len(set(runs)) == 1
    assert state.has_processed(runs[0])
    assert await consumer.deliver(batch) == [Outcome.DUPLICATE]


def test_a_transaction_that_fills_the_database_leaves_no_transaction_open(tmp_path: Path) -> None:
    """SQLITE_FULL inside ``transaction()`` (here from ``max_page_count``, as from a full disk): rolled
    back, and the next transaction works once there is room."""
    store = ProcessedEvents(tmp_path / "state.db", consumer="g")
    store.connection.execute("CREATE TABLE filler (blob BLOB)")
    (pages,) = store.connection.execute("PRAGMA page_count").fetchone()
    store.connection.execute(f"PRAGMA max_page_count = {pages + 2}")
    with pytest.raises(sqlite3.OperationalError) as full, store.transaction() as connection:
        connection.execute("INSERT INTO filler VALUES (zeroblob(100000))")
    assert is_disk_full(full.value)
    assert not store.connection.in_transaction
    store.connection.execute("PRAGMA max_page_count = 1000000")
    with store.transaction():
        store.mark_processed("e-1")
    assert store.has_processed("e-1")


# --- the fault-injection point of the chaos tests ---------------------------------------------------


def test_fault_injection_is_off_unless_set_and_a_bad_value_fails_the_start() -> None:
    assert FaultInjection.from_env({}) is None
    assert FaultInjection.from_env({FAULT_INJECT_ENV: "  "}) is None
    parsed = FaultInjection.from_env({FAULT_INJECT_ENV: f"kill_after_effect:{SUBMITTED}:3"})
    assert parsed is not None and (parsed.point, parsed.event_type, parsed.nth) == (
        FaultPoint.KILL_AFTER_EFFECT,
        SUBMITTED,
        3,
    )
    for bad in (
        "kill_after_effect",
        f"explode:{SUBMITTED}:1",
        f"kill_after_effect:{SUBMITTED}:0",
        "kill_before_commit::1",
    ):
        with pytest.raises(ValueError, match=FAULT_INJECT_ENV):
            FaultInjection.parse(bad)


def test_a_consumer_reads_the_fault_once_when_it_is_built(monkeypatch: pytest.MonkeyPatch) -> None:
    async def handle(envelope: Envelope[Any]) -> None:
        pass

    def build() -> EventConsumer:
        return EventConsumer(
            group_id="g",
            handlers={RecordSubmitted: handle},
            dlq=RecordingDeadLetterQueue(),  # type: ignore[arg-type]
            processed=ProcessedEvents(":memory:", consumer="g"),
        )

    monkeypatch.delenv(FAULT_INJECT_ENV, raising=False)
    assert build()._faults is None
    monkeypatch.setenv(FAULT_INJECT_ENV, f"kill_before_commit:{SUBMITTED}:2")
    consumer = build()
    assert consumer._faults is not None and consumer._faults.point is FaultPoint.KILL_BEFORE_COMMIT
    monkeypatch.setenv(FAULT_INJECT_ENV, "nonsense")
    with pytest.raises(ValueError):
        build()


class Killed(BaseException):
    """What the process's death looks like here: nothing after the kill runs."""


@pytest.mark.parametrize("batched", [False, True], ids=["per-event handler", "batch handler"])
async def test_kill_after_effect_fires_after_the_nth_effect_before_the_event_is_recorded(batched: bool) -> None:
    effects: list[str] = []
    state = ProcessedEvents(":memory:", consumer="g")
    seen_at_kill: dict[str, Any] = {}

    async def handle(envelope: Envelope[Any]) -> None:
        effects.append(envelope.id)

    async def handle_batch(deliveries: Sequence[Delivery]) -> list[Rejected | None]:
        effects.extend(delivery.envelope.id for delivery in deliveries)
        return [None] * len(deliveries)

    def kill(reason: str) -> None:
        seen_at_kill.update(reason=reason, effects=list(effects), recorded=state.processed_among(effects))
        raise Killed(reason)

    consumer = EventConsumer(
        group_id="g",
        handlers={} if batched else {RecordSubmitted: handle},
        batch_handlers={RecordSubmitted: handle_batch} if batched else None,
        dlq=RecordingDeadLetterQueue(),  # type: ignore[arg-type]
        processed=state,
        retry=_retry(),
        faults=FaultInjection(FaultPoint.KILL_AFTER_EFFECT, SUBMITTED, 2, kill=kill),
    )
    if batched:
        assert await consumer.deliver(_records(1)) == [Outcome.HANDLED]
        with pytest.raises(Killed):
            await consumer.deliver(_records(3, first=1))
        assert len(seen_at_kill["effects"]) == 4  # the run of three was applied in one call
        assert seen_at_kill["recorded"] == {seen_at_kill["effects"][0]}  # the run is not recorded yet
    else:
        with pytest.raises(Killed):
            await consumer.deliver(_records(3))
        assert len(seen_at_kill["effects"]) == 2  # the second event's effect is done …
        assert seen_at_kill["recorded"] == {seen_at_kill["effects"][0]}  # … and it is not recorded yet
    assert seen_at_kill["reason"] == f"kill_after_effect on {SUBMITTED} #2"


async def test_kill_before_commit_fires_once_the_delivery_is_recorded() -> None:
    state = ProcessedEvents(":memory:", consumer="g")
    kills: list[str] = []
    recorded_at_kill: list[int] = []

    async def handle(envelope: Envelope[Any]) -> None:
        pass

    def kill(reason: str) -> None:
        kills.append(reason)
        recorded_at_kill.append(state.connection.execute("SELECT count(*) FROM processed_events").fetchone()[0])

    consumer = EventConsumer(
        group_id="g",
        handlers={RecordSubmitted: handle},
        dlq=RecordingDeadLetterQueue(),  # type: ignore[arg-type]
        processed=state,
        retry=_retry(),
        faults=FaultInjection(FaultPoint.KILL_BEFORE_COMMIT, SUBMITTED, 2, kill=kill),
    )
    await consumer.deliver(_records(1))
    assert kills == []
    await consumer.deliver(_records(3, first=1))
    assert kills == [f"kill_before_commit after {SUBMITTED} #2"] and recorded_at_kill == [4]
    await consumer.deliver(_records(1, first=4))
    assert len(kills) == 1  # once
