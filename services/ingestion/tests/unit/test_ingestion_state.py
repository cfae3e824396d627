"""The service's state (SQLite, and the shared PostgreSQL store): batch storage de-duplicates like
one record at a time."""

from __future__ import annotations

import threading
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from llmops_ingestion.adapters.state import CuratedRow, IngestionState, StoreOutcome
from llmops_ingestion.domain.feedback import PreferencePair, ServedGeneration
from llmops_ingestion.domain.instructions import Turn
from llmops_ingestion.domain.snapshot import Position
from llmops_messaging import ProcessedEvents

OpenProcessed = Callable[[], ProcessedEvents]
"""The ``open_processed`` fixture (conftest.py): SQLite, then PostgreSQL."""


def _row(record_id: str, tenant: str, key: str, offset: int) -> CuratedRow:
    return CuratedRow(
        record_id=record_id,
        tenant=tenant,
        dedup_key=key,
        labelled=True,
        position=Position("raw", 0, offset),
        feature_row={"record_id": record_id},
    )


def test_a_batch_is_deduplicated_within_itself_and_against_the_store(open_processed: OpenProcessed) -> None:
    processed = open_processed()
    state = IngestionState(processed)
    now = datetime.now(UTC)
    with processed.transaction() as connection:
        first = IngestionState.store_curated_many(connection, [_row("a/1", "a", "k1", 0)], ingested_at=now)
    assert first == [StoreOutcome.ACCEPTED]
    batch = [
        _row("a/1", "a", "k9", 1),  # id stored before
        _row("a/2", "a", "k1", 2),  # text stored before (same tenant)
        _row("b/2", "b", "k1", 3),  # same text, other tenant: accepted
        _row("a/3", "a", "k3", 4),
        _row("a/3", "a", "k4", 5),  # id earlier in the batch
        _row("a/4", "a", "k3", 6),  # text earlier in the batch
    ]
    with processed.transaction() as connection:
        outcomes = IngestionState.store_curated_many(connection, batch, ingested_at=now)
    assert outcomes == [
        StoreOutcome.DUPLICATE_RECORD_ID,
        StoreOutcome.DUPLICATE_TEXT,
        StoreOutcome.ACCEPTED,
        StoreOutcome.ACCEPTED,
        StoreOutcome.DUPLICATE_RECORD_ID,
        StoreOutcome.DUPLICATE_TEXT,
    ]
    assert [entry.row["record_id"] for entry in state.outbox(10)] == ["a/1", "b/2", "a/3"]
    members = state.labelled_members(up_to_seq=state.max_seq())
    assert [(m.record_id, m.position.offset) for m in members] == [("a/1", 0), ("b/2", 3), ("a/3", 4)]


def test_a_database_from_before_instruction_examples_is_all_records() -> None:
    processed = ProcessedEvents(":memory:", consumer="ingestion")
    connection = processed.connection
    # The two tables as they were, with a record and a snapshot of it.
    connection.executescript(
        """
        CREATE TABLE curated (seq INTEGER PRIMARY KEY AUTOINCREMENT, record_id TEXT NOT NULL UNIQUE,
            tenant TEXT NOT NULL, dedup_key TEXT NOT NULL, labelled INTEGER NOT NULL, topic TEXT NOT NULL,
            partition INTEGER NOT NULL, "offset" INTEGER NOT NULL, ingested_at TEXT NOT NULL, outbox TEXT,
            UNIQUE (tenant, dedup_key));
        CREATE TABLE snapshots (dataset_id TEXT PRIMARY KEY, max_seq INTEGER NOT NULL, created_at TEXT NOT NULL,
            event_json TEXT NOT NULL, published INTEGER NOT NULL DEFAULT 0, cause TEXT);
        INSERT INTO curated VALUES (1, 'a/1', 'a', 'k1', 1, 'raw', 0, 0, '2026-11-01', NULL);
        INSERT INTO curated VALUES (2, 'a/2', 'a', 'k2', 1, 'raw', 0, 1, '2026-11-01', NULL);
        INSERT INTO snapshots VALUES ('records-1', 1, '2026-11-01', '{}', 1, NULL);
        """
    )
    state = IngestionState(processed)
    assert state.labelled_since_last_snapshot("records") == 1
    assert state.labelled_since_last_snapshot("instructions") == 0
    assert state.last_snapshot("records") == "{}" and state.last_snapshot("instructions") is None
    now = datetime.now(UTC)
    with processed.transaction() as connection:
        row = CuratedRow("a/3", "a", "k3", True, Position("raw", 0, 2), {"record_id": "a/3"}, content="instructions")
        IngestionState.store_curated_many(connection, [row], ingested_at=now)
    assert [m.record_id for m in state.labelled_members(up_to_seq=state.max_seq(), content="instructions")] == ["a/3"]
    assert [m.record_id for m in state.labelled_members(up_to_seq=state.max_seq())] == ["a/1", "a/2"]
    assert [(entry.content, entry.row["record_id"]) for entry in state.outbox(10)] == [("instructions", "a/3")]
    # Preference pairs came later still: none is covered by the old snapshot, each counts as new.
    assert state.max_pair_seq() == 0
    with processed.transaction() as connection:
        new = IngestionState.store_pairs(connection, [_pair("a/ratings-1"), _pair("a/ratings-1")], **_made())
    assert [pair.pair_id for pair in new] == ["a/ratings-1"]
    assert state.labelled_since_last_snapshot("instructions") == 2  # the example and the pair
    assert state.labelled_since_last_snapshot("records") == 1
    state.record_snapshot(
        dataset_id="i-1",
        max_seq=state.max_seq(),
        created_at=now,
        event_json="{}",
        content="instructions",
        max_pair_seq=state.max_pair_seq(),
    )
    assert state.labelled_since_last_snapshot("instructions") == 0


def _pair(pair_id: str) -> PreferencePair:
    return PreferencePair(pair_id, "a", '[{"role":"user","content":"q"}]', "good", "bad", "ratings", "a/prompt-x")


def _made() -> dict[str, Any]:
    return {"position": Position("feedback", 0, 7), "created_at": datetime.now(UTC)}


def test_a_generation_keeps_the_first_feedback_and_is_forgotten_after_the_retention(
    open_processed: OpenProcessed,
) -> None:
    processed = open_processed()
    state = IngestionState(processed)
    generation = ServedGeneration("r-1", "a", "bot", 1, (Turn("user", "q"),), "answer")
    now = datetime.now(UTC)
    with processed.transaction() as connection:
        IngestionState.remember_generation(connection, generation, received_at=now)
        IngestionState.remember_generation(
            connection, generation.with_feedback(rating=2, corrected_answer=None), received_at=now
        )
        IngestionState.remember_generation(
            connection, generation.with_feedback(rating=5, corrected_answer="better"), received_at=now
        )
    assert state.served_generation("r-1") == generation.with_feedback(rating=2, corrected_answer="better")
    assert state.rated_generations(tenant="a", prompt_key=generation.prompt_key, exclude="r-0", limit=4) == [
        generation.with_feedback(rating=2, corrected_answer="better")
    ]
    assert state.rated_generations(tenant="a", prompt_key=generation.prompt_key, exclude="r-1", limit=4) == []
    state.prune_flywheel(older_than=timedelta(days=1), now=now + timedelta(days=2))
    assert state.served_generation("r-1") is None


def test_two_replicas_storing_overlapping_records_at_once_store_each_exactly_once(
    open_processed: OpenProcessed,
) -> None:
    """Two replicas (two connections to one store) store overlapping batches at the same moment:
    the same record ids, and other ids with the same texts. Every record id and every text of a
    tenant is stored once, each replica's verdicts agree with what was stored, and every event is
    marked applied once."""
    replicas = [open_processed(), open_processed()]
    states = [IngestionState(processed) for processed in replicas]
    now = datetime.now(UTC)
    count = 300
    batches = [
        # replica 0: ids a/0.. with texts k0..; replica 1: the same ids backwards, and for every
        # third record another id with the same text
        [_row(f"a/{i}", "a", f"k{i}", i) for i in range(count)],
        [_row(f"a/{i}" if i % 3 else f"a/other-{i}", "a", f"k{i}", i) for i in reversed(range(count))],
    ]
    barrier = threading.Barrier(2)
    outcomes: list[list[StoreOutcome]] = [[], []]

    def replica(index: int) -> None:
        processed, rows = replicas[index], batches[index]
        barrier.wait()
        for start in range(0, len(rows), 25):  # batches as the consumer delivers them
            chunk = rows[start : start + 25]
            with processed.transaction() as connection:
                outcomes[index] += IngestionState.store_curated_many(connection, chunk, ingested_at=now)
                processed.mark_processed_many([f"event-{row.record_id}" for row in chunk])

    with ThreadPoolExecutor(2) as pool:
        list(pool.map(replica, range(2)))

    stored = states[0].labelled_members(up_to_seq=states[1].max_seq())
    ids = [member.record_id for member in stored]
    assert len(ids) == len(set(ids)) == count  # one per text: k0..k299 each once
    assert sum(outcome is StoreOutcome.ACCEPTED for batch in outcomes for outcome in batch) == count
    accepted = {
        row.record_id
        for rows, verdicts in zip(batches, outcomes, strict=True)
        for row, verdict in zip(rows, verdicts, strict=True)
        if verdict is StoreOutcome.ACCEPTED
    }
    assert accepted == set(ids)
    assert len(states[1].outbox(2 * count)) == count
    events = {f"event-{row.record_id}" for batch in batches for row in batch}
    assert replicas[1].processed_among(sorted(events)) == events


def test_the_consumers_bookkeeping_works_on_the_store(open_processed: OpenProcessed) -> None:
    """What the consumer keeps beside the state (attempts, runs, dead-lettered positions, applied
    events, pruning) in the same store, and a failed transaction rolls the effect and the mark back."""
    processed = open_processed()
    state = IngestionState(processed)
    key = ("raw", 2, 3_000_000_000, "fp")  # an offset beyond 32 bits
    assert processed.start_attempts([key, key]) == [0, 1]
    failed = processed.record_failure(key, at=1_764_000_000.125, error="boom")
    assert (failed.count, failed.first_failed_at, failed.last_error) == (2, 1_764_000_000.125, "boom")
    assert processed.start_attempts([("raw", 2, 3_000_000_000, "other")]) == [0]  # another message there
    processed.undo_attempts([("raw", 2, 3_000_000_000, "other")])
    assert processed.attempts_between("raw", 2, 0, 4_000_000_000) == {3_000_000_000: (0, "other")}
    processed.mark_dead_lettered("raw", 2, 7, fingerprint="a", reason="r")
    processed.mark_dead_lettered("raw", 2, 7, fingerprint="b", reason="again")
    assert processed.dead_lettered_between("raw", 2, 0, 10) == {7: "b"}
    processed.start_runs([("raw", 2, 10, 20)])
    processed.start_runs([("raw", 2, 10, 25)])
    assert processed.run_started_within("raw", 2, 24, 30)
    processed.finish(["e-1", "e-1"], keys=[key], runs=[("raw", 2, 0, 30)])
    assert not processed.run_started_within("raw", 2, 0, 30)
    assert processed.attempts(key) is None and processed.has_processed("e-1")
    assert processed.mark_processed("e-2") is True and processed.mark_processed("e-2") is False
    with pytest.raises(RuntimeError), processed.transaction() as connection:
        IngestionState.store_curated_many(connection, [_row("a/1", "a", "k1", 0)], ingested_at=datetime.now(UTC))
        processed.mark_processed_many(["e-3"])
        raise RuntimeError("crash before the commit")
    assert state.max_seq() == 0 and not processed.has_processed("e-3")
    processed.retention_s = 0.0
    assert processed.prune() >= 3  # the applied events and the dead-lettered position
    assert not processed.has_processed("e-1") and processed.dead_lettered_between("raw", 2, 0, 10) == {}
