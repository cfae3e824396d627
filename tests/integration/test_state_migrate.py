"""``llmops state migrate`` (#18): a service's SQLite state, written by the service's own store code,
copied into a real PostgreSQL (the session's ``postgres_url``, a fresh database per test), where the
service's PostgreSQL store goes on from it. Run twice, it copies nothing twice; it refuses a target
holding other state under the same keys, and a missing or foreign source file."""

from __future__ import annotations

import sqlite3
import uuid
from datetime import UTC, datetime
from pathlib import Path

import pytest
from typer.testing import CliRunner, Result

from llmops_cli.__main__ import app
from llmops_ingestion.adapters.state import CuratedRow, Erasure, IngestionState, postgres_state_twin
from llmops_ingestion.domain.feedback import PreferencePair, ServedRequest
from llmops_ingestion.domain.snapshot import Position
from llmops_messaging import PostgresProcessedEvents, ProcessedEvents
from llmops_monitoring.adapters.policy_state import PolicyStateStore, PostgresPolicyStateStore
from llmops_monitoring.domain.policy import PolicyState
from llmops_storage.state_store import PostgresSql, StateStoreSettings
from tests.postgres_server import fresh_database

pytestmark = pytest.mark.integration

NOW = datetime(2026, 11, 20, 12, 0, tzinfo=UTC)


@pytest.fixture
def store_settings(postgres_url: str) -> StateStoreSettings:
    return StateStoreSettings(url=fresh_database(postgres_url, f"migrate_{uuid.uuid4().hex[:12]}"))


def _migrate(settings: StateStoreSettings, service: str, sqlite: Path) -> Result:
    return CliRunner().invoke(
        app,
        ["state", "migrate", "--service", service, "--sqlite", str(sqlite)],
        env={"LLMOPS_STATE_STORE_URL": settings.url},
    )


def _row(number: int, tenant: str = "acme") -> CuratedRow:
    return CuratedRow(
        record_id=f"{tenant}/{number}",
        tenant=tenant,
        dedup_key=f"key-{number}",
        labelled=number % 2 == 1,
        position=Position("llmops.records.raw.v1", number % 6, number),
        feature_row={"record_id": f"{tenant}/{number}", "text": f"text {number}"},
    )


def _ingestion_sqlite(path: Path) -> None:
    """Ingestion's state as the service writes it: curated records (one erased), a snapshot, the
    feedback join, a preference pair, processed events and an unfinished attempt."""
    processed = ProcessedEvents(path, consumer="ingestion")
    state = IngestionState(processed)
    with processed.transaction() as connection:
        IngestionState.store_curated_many(connection, [_row(n) for n in range(1, 6)], ingested_at=NOW)
        processed.mark_processed_many([f"event-{n}" for n in range(1, 6)])
    state.mark_pushed([1, 2])
    with processed.transaction() as connection:
        erasure = Erasure("erasure-1", "acme", ("acme/2",), "dpo@acme", "request", NOW)
        IngestionState.erase(connection, erasure, erased_at=NOW)
        IngestionState.remember_request(
            connection, ServedRequest("request-1", "acme", "hello", "banking", 3, "card_lost"), received_at=NOW
        )
        pair = PreferencePair("pair-1", "acme", '[{"role": "user", "content": "hi"}]', "yes", "no", "rating", "k")
        IngestionState.store_pairs(connection, [pair], position=Position("feedback", 0, 7), created_at=NOW)
    state.record_snapshot(dataset_id="records-1", max_seq=state.max_seq(), created_at=NOW, event_json="{}")
    processed.start_attempts([("llmops.records.raw.v1", 0, 99, "fingerprint")])
    processed.close()


def _rows(settings: StateStoreSettings, table: str, key: str) -> list[tuple[object, ...]]:
    sql = PostgresSql(settings)
    try:
        return [tuple(row) for row in sql.execute(f"SELECT * FROM {table} ORDER BY {key}").fetchall()]
    finally:
        sql.close()


def test_ingestions_state_moves_over_once_and_the_service_goes_on_from_it(
    store_settings: StateStoreSettings, tmp_path: Path
) -> None:
    source = tmp_path / "ingestion.db"
    _ingestion_sqlite(source)

    first = _migrate(store_settings, "ingestion", source)
    assert first.exit_code == 0, first.output
    lines = first.output.splitlines()
    # Progress: one line per table of the file, in the twin's order, with its rows.
    tables = postgres_state_twin().tables
    progress = [line.split()[0] for line in lines if line.split() and line.split()[0] in tables]
    assert progress == list(tables)
    assert any(line.startswith("curated ") and " 4 rows:" in line and " 4 copied" in line for line in lines)
    assert "done: " in first.output and "0 already there" in first.output

    # The service's PostgreSQL store finds everything the SQLite one had.
    processed = PostgresProcessedEvents(store_settings, consumer="ingestion")
    state = IngestionState(processed)
    assert [entry.row["record_id"] for entry in state.outbox(10)] == ["acme/3", "acme/4", "acme/5"]
    assert [member.record_id for member in state.labelled_members(up_to_seq=5)] == ["acme/1", "acme/3", "acme/5"]
    assert state.last_snapshot() is not None
    assert [record.record_id for record in state.erased_records("erasure-1")] == ["acme/2"]
    assert state.served_request("request-1") == ServedRequest("request-1", "acme", "hello", "banking", 3, "card_lost")
    assert [stored.pair.pair_id for stored in state.pairs(up_to_seq=state.max_pair_seq())] == ["pair-1"]
    assert processed.processed_among([f"event-{n}" for n in range(1, 7)]) == {f"event-{n}" for n in range(1, 6)}
    attempts = processed.attempts(("llmops.records.raw.v1", 0, 99, "fingerprint"))
    assert attempts is not None and attempts.count == 1
    # New rows continue the sequence after the migrated ones (a snapshot covers seq <= 5).
    with processed.transaction() as connection:
        IngestionState.store_curated_many(connection, [_row(6)], ingested_at=NOW)
    assert state.max_seq() == 6
    curated = _rows(store_settings, "curated", "seq")
    processed.close()

    second = _migrate(store_settings, "ingestion", source)
    assert second.exit_code == 0, second.output
    assert "done: 0 rows copied" in second.output
    assert _rows(store_settings, "curated", "seq") == curated  # nothing twice, the new row kept


def test_a_target_with_other_state_under_the_same_keys_is_refused_and_nothing_is_copied(
    store_settings: StateStoreSettings, tmp_path: Path
) -> None:
    source = tmp_path / "ingestion.db"
    _ingestion_sqlite(source)
    # The service already ran on PostgreSQL: seq 1 is another record there.
    processed = PostgresProcessedEvents(store_settings, consumer="ingestion")
    IngestionState(processed)
    with processed.transaction() as connection:
        IngestionState.store_curated_many(connection, [_row(1, tenant="other")], ingested_at=NOW)
    processed.close()

    result = _migrate(store_settings, "ingestion", source)
    assert result.exit_code == 1
    assert "table curated: PostgreSQL already holds different rows under the same keys" in result.output
    assert "seq=1" in result.output
    assert _rows(store_settings, "processed_events", "event_id") == []  # the tables before it: rolled back
    assert [row[1] for row in _rows(store_settings, "curated", "seq")] == ["other/1"]


def test_a_missing_or_foreign_source_is_refused(store_settings: StateStoreSettings, tmp_path: Path) -> None:
    missing = tmp_path / "var" / "state" / "ingestion.db"
    result = _migrate(store_settings, "ingestion", missing)
    assert result.exit_code == 1 and "no such file" in result.output
    assert not missing.exists()  # never created by looking

    foreign = tmp_path / "other.db"
    sqlite3.connect(foreign).execute("CREATE TABLE notes (id INTEGER PRIMARY KEY)").connection.commit()
    result = _migrate(store_settings, "ingestion", foreign)
    assert result.exit_code == 1 and "holds none of the ingestion service's tables" in result.output

    not_sqlite = tmp_path / "notes.txt"
    not_sqlite.write_text("not a database\n" * 100)
    result = _migrate(store_settings, "monitoring", not_sqlite)
    assert result.exit_code == 1 and "not a SQLite database" in result.output

    result = CliRunner().invoke(
        app,
        ["state", "migrate", "--service", "ingestion", "--sqlite", str(foreign)],
        env={"LLMOPS_STATE_STORE_URL": ""},
    )
    assert result.exit_code == 1 and "set LLMOPS_STATE_STORE_URL" in result.output


def test_monitorings_policy_memory_moves_over_with_its_epoch(
    store_settings: StateStoreSettings, tmp_path: Path
) -> None:
    source = tmp_path / "monitoring.db"
    processed = ProcessedEvents(source, consumer="monitoring")
    local = PolicyStateStore(processed.connection)
    saved = PolicyState(consecutive_breaches=2, request_times=(1000.5, 2000.25), requests=3)
    local.save("banking", saved)
    request_id = local.request_event_id("banking", 3, "training_requested")
    processed.mark_processed("event-1")
    processed.close()

    result = _migrate(store_settings, "monitoring", source)
    assert result.exit_code == 0, result.output
    assert "left in SQLite" in result.output and "processed_events" in result.output

    shared = PostgresPolicyStateStore(store_settings)
    assert shared.load("banking") == saved
    # The same epoch: a request decided again after the move has the ids it had, a duplicate downstream.
    assert shared.request_event_id("banking", 3, "training_requested") == request_id
    shared.close()
    again = _migrate(store_settings, "monitoring", source)
    assert again.exit_code == 0 and "done: 0 rows copied, 2 already there" in again.output
