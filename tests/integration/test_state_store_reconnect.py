"""The shared PostgreSQL state store survives a server restart (#18): on a real ``postgres`` of its
own (the session's is shared by other tests), stopped and started between and during writes. A
broken connection fails the operation in progress with ``StateStoreUnavailable`` and is replaced on
the next one; a transaction cut off before its ``COMMIT`` leaves nothing; the consumer's retry
applies every event exactly once."""

from __future__ import annotations

import shutil
import tempfile
import time
import uuid
from collections.abc import Iterator, Sequence
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest

from llmops_events import Envelope, KafkaRecord, encode
from llmops_events.v1 import RecordSubmitted
from llmops_ingestion.adapters.state import CuratedRow, IngestionState
from llmops_ingestion.domain.snapshot import Position
from llmops_messaging import Delivery, EventConsumer, Origin, Outcome, PostgresProcessedEvents, Rejected, RetryPolicy
from llmops_monitoring.adapters.policy_state import PostgresPolicyStateStore
from llmops_monitoring.domain.policy import PolicyState
from llmops_storage.state_store import PostgresSql, StateStoreSettings, StateStoreUnavailable
from tests.postgres_server import PostgresCluster, fresh_database, postgres_bin_dir, postgres_cluster

pytestmark = pytest.mark.integration


@pytest.fixture(scope="module")
def cluster() -> Iterator[PostgresCluster]:
    if postgres_bin_dir() is None:
        pytest.skip("PostgreSQL server binaries not found under /usr/lib/postgresql (apt-get install postgresql)")
    folder = Path(tempfile.mkdtemp(prefix="llmops-postgres-restart-"))
    try:
        with postgres_cluster(folder) as started:
            yield started
    finally:
        shutil.rmtree(folder, ignore_errors=True)


@pytest.fixture
def settings(cluster: PostgresCluster) -> StateStoreSettings:
    url = fresh_database(cluster.url, f"restart_{uuid.uuid4().hex[:12]}")
    return StateStoreSettings(url=url, connect_timeout_s=5, connect_attempts=2, connect_retry_delay_s=0.2)


def _row(number: int) -> CuratedRow:
    return CuratedRow(
        record_id=f"r/{number}",
        tenant="t",
        dedup_key=f"k{number}",
        labelled=True,
        position=Position("raw", 0, number),
        feature_row={"record_id": f"r/{number}"},
    )


def _write(processed: PostgresProcessedEvents, number: int) -> None:
    """One handler's effect and its processed-event mark, in one transaction."""
    with processed.transaction() as connection:
        IngestionState.store_curated_many(connection, [_row(number)], ingested_at=datetime.now(UTC))
        processed.mark_processed_many([f"event-{number}"])


def test_a_write_after_a_restart_goes_through_and_everything_is_there_once(
    cluster: PostgresCluster, settings: StateStoreSettings
) -> None:
    processed = PostgresProcessedEvents(settings, consumer="ingestion")
    state = IngestionState(processed)
    _write(processed, 1)
    cluster.restart()
    # The connection sat idle while the server restarted: the transaction finds it broken at BEGIN,
    # before anything of the write ran, and begins again on a new one.
    _write(processed, 2)
    assert [entry.row["record_id"] for entry in state.outbox(10)] == ["r/1", "r/2"]
    assert processed.processed_among(["event-1", "event-2"]) == {"event-1", "event-2"}

    cluster.restart()
    # A statement outside a transaction may have run when the connection broke: it fails, clearly,
    # and the next operation has a new connection.
    with pytest.raises(StateStoreUnavailable, match="may or may not have been applied"):
        processed.has_processed("event-1")
    assert processed.has_processed("event-1")
    assert state.max_seq() == 2
    processed.close()


def test_a_transaction_cut_off_before_its_commit_leaves_nothing(
    cluster: PostgresCluster, settings: StateStoreSettings
) -> None:
    processed = PostgresProcessedEvents(settings, consumer="ingestion")
    state = IngestionState(processed)
    try:
        with (
            pytest.raises(StateStoreUnavailable, match="may or may not have committed"),
            processed.transaction() as connection,
        ):
            IngestionState.store_curated_many(connection, [_row(1)], ingested_at=datetime.now(UTC))
            processed.mark_processed_many(["event-1"])
            cluster.stop()  # the server ends the session: the COMMIT finds the connection gone
    finally:
        cluster.start()
    assert state.max_seq() == 0
    assert processed.processed_among(["event-1"]) == set()
    _write(processed, 1)  # the retry applies it, once
    assert [entry.row["record_id"] for entry in state.outbox(10)] == ["r/1"]
    processed.close()


def test_a_store_that_stays_down_fails_within_its_bounds(
    cluster: PostgresCluster, settings: StateStoreSettings
) -> None:
    sql = PostgresSql(settings)
    cluster.stop()
    try:
        started = time.monotonic()
        with pytest.raises(StateStoreUnavailable):
            sql.execute("SELECT 1")  # the broken connection
        with pytest.raises(StateStoreUnavailable, match="unreachable after 2 attempt"):
            sql.execute("SELECT 1")  # no new one to be had: connect_attempts, then it gives up
        # Refused connections fail at once: the bound is the attempts and the delay between them.
        assert time.monotonic() - started < settings.connect_attempts * (
            settings.connect_timeout_s + settings.connect_retry_delay_s
        )
    finally:
        cluster.start()
    assert sql.execute("SELECT 1").fetchone() == (1,)
    sql.close()


def test_monitorings_policy_memory_survives_a_restart(cluster: PostgresCluster, settings: StateStoreSettings) -> None:
    store = PostgresPolicyStateStore(settings)
    store.save("banking", PolicyState(consecutive_breaches=1, request_times=(10.0,), requests=1))
    cluster.restart()
    saved = PolicyState(consecutive_breaches=2, request_times=(10.0, 20.0), requests=2)
    with pytest.raises(StateStoreUnavailable):  # an upsert outside a transaction: not retried silently
        store.save("banking", saved)
    store.save("banking", saved)  # the consumer's retry
    assert store.load("banking") == saved
    store.close()


class NoDeadLetters:
    """The consumer's DLQ in a test where nothing may be dead-lettered."""

    async def send(self, record: KafkaRecord, *, origin: Origin, stage: str, reason: str, detail: str) -> None:
        raise AssertionError(f"dead-lettered at offset {origin.offset}: {reason} {detail}")


async def test_the_consumers_retry_applies_each_event_once_across_restarts(
    cluster: PostgresCluster, settings: StateStoreSettings
) -> None:
    processed = PostgresProcessedEvents(settings, consumer="ingestion")
    state = IngestionState(processed)
    cut_off_once = [True]

    async def handle_batch(deliveries: Sequence[Delivery]) -> list[Rejected | None]:
        rows = [_row(delivery.origin.offset) for delivery in deliveries]
        with processed.transaction() as connection:
            IngestionState.store_curated_many(connection, rows, ingested_at=datetime.now(UTC))
            processed.mark_processed_many([delivery.envelope.id for delivery in deliveries])
            if len(rows) > 1 and rows[0].record_id == "r/3" and cut_off_once.pop():
                cluster.stop()  # the server goes away in the middle of the handler's transaction
        return [None] * len(deliveries)

    retry = RetryPolicy(max_attempts=20, base_delay_s=0.01, max_delay_s=0.1, budget_s=60.0)
    consumer = EventConsumer(
        group_id="ingestion",
        handlers={},
        batch_handlers={RecordSubmitted: handle_batch},
        dlq=NoDeadLetters(),  # type: ignore[arg-type]
        processed=processed,
        retry=retry,
    )

    records = [
        (
            encode(Envelope.wrap(RecordSubmitted(tenant="t", source="s", text=f"text {n}"), source="/t")),
            Origin("llmops.records.raw.v1", 0, n, "ingestion"),
        )
        for n in range(1, 6)
    ]

    async def deliver_until_settled(records: list[tuple[KafkaRecord, Origin]]) -> tuple[list[Outcome], int]:
        """What Kafka does for the subscriber: the batch again until it is processed."""
        failures = 0
        for _ in range(20):
            try:
                return await consumer.deliver(records), failures
            except StateStoreUnavailable:
                failures += 1
                if not _reachable(cluster):
                    cluster.start()
        raise AssertionError("never settled")

    first: dict[str, Any] = {}
    first["outcomes"], first["failures"] = await deliver_until_settled(records[:2])
    assert first == {"outcomes": [Outcome.HANDLED] * 2, "failures": 0}
    cluster.restart()  # between two deliveries
    outcomes, failures = await deliver_until_settled(records[2:])  # cut off once in its transaction
    assert outcomes == [Outcome.HANDLED] * 3
    assert failures >= 1
    redelivered, _ = await deliver_until_settled(records)  # all of it again: no second effect
    assert redelivered == [Outcome.DUPLICATE] * 5
    assert [entry.row["record_id"] for entry in state.outbox(10)] == [f"r/{n}" for n in range(1, 6)]
    processed.close()


def _reachable(cluster: PostgresCluster) -> bool:
    import psycopg

    try:
        psycopg.connect(cluster.url, connect_timeout=2).close()
    except psycopg.OperationalError:
        return False
    return True
