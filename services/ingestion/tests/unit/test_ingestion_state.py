"""The service's SQLite state: batch storage de-duplicates like one record at a time."""

from __future__ import annotations

from datetime import UTC, datetime

from llmops_ingestion.adapters.state import CuratedRow, IngestionState, StoreOutcome
from llmops_ingestion.domain.snapshot import Position
from llmops_messaging import ProcessedEvents


def _row(record_id: str, tenant: str, key: str, offset: int) -> CuratedRow:
    return CuratedRow(
        record_id=record_id,
        tenant=tenant,
        dedup_key=key,
        labelled=True,
        position=Position("raw", 0, offset),
        feature_row={"record_id": record_id},
    )


def test_a_batch_is_deduplicated_within_itself_and_against_the_store() -> None:
    processed = ProcessedEvents(":memory:", consumer="ingestion")
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
    assert [row["record_id"] for _, row in state.outbox(10)] == ["a/1", "b/2", "a/3"]
    members = state.labelled_members(up_to_seq=state.max_seq())
    assert [(m.record_id, m.position.offset) for m in members] == [("a/1", 0), ("b/2", 3), ("a/3", 4)]
