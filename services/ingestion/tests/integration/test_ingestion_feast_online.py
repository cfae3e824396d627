"""The fast online-store writer leaves exactly the rows Feast's own push leaves (real Feast, no broker)."""

from __future__ import annotations

import sqlite3
from datetime import UTC, datetime
from pathlib import Path

import pytest

from llmops_ingestion.adapters.feast_repo import FEATURE_VIEW
from llmops_ingestion.adapters.feast_store import FeastCuratedStore, SqliteOnlineWriter
from llmops_ingestion.domain.curation import curate
from llmops_ingestion.handlers import feature_row
from llmops_privacy.redaction import Redactor

pytestmark = pytest.mark.integration


def _rows(redactor: Redactor) -> list[dict[str, object]]:
    now = datetime(2026, 11, 28, 12, 30, 15, 123456, tzinfo=UTC)
    texts = ["Where is my card?", "Mail me at jane@example.com, call +44 20 7946 0958", "Où est ma carte ? ½ ²"]
    rows = []
    for index, text in enumerate(texts):
        curated = curate(
            tenant="acme",
            source="crm",
            text=text,
            label="card_arrival" if index else None,
            record_id=f"r-{index}",
            metadata={"channel": "chat"},
            occurred_at=now if index == 1 else None,
            redact=redactor.redact,
            detect_language=lambda text: "en",
        )
        rows.append(feature_row(curated, now))
    return rows


def _table(path: Path) -> list[tuple[object, ...]]:
    with sqlite3.connect(path) as connection:
        return connection.execute(f"SELECT * FROM llmops_{FEATURE_VIEW} ORDER BY entity_key, feature_name").fetchall()


def test_fast_online_writer_matches_feasts_own_write(tmp_path: Path, redactor: Redactor) -> None:
    from feast.data_source import PushMode

    from llmops_ingestion.adapters.feast_repo import PUSH_SOURCE
    from llmops_ingestion.adapters.feast_store import to_frame

    rows = _rows(redactor)
    by_feast = FeastCuratedStore(tmp_path / "feast")
    by_feast.open()
    by_feast._require_open().push(PUSH_SOURCE, to_frame(rows), to=PushMode.ONLINE)
    ours = FeastCuratedStore(tmp_path / "ours")
    ours.open()
    assert ours._online is not None
    ours.push(rows)
    expected = _table(tmp_path / "feast" / "data" / "online_store.db")
    assert len(expected) == len(rows) * 16
    assert _table(tmp_path / "ours" / "data" / "online_store.db") == expected
    # And Feast reads what the writer wrote.
    online = ours.online([str(row["record_id"]) for row in rows])
    assert online["text"] == [row["text"] for row in rows]
    assert online["pii_email"] == [row["pii_email"] for row in rows]
    # Pushing again (the outbox is at-least-once) upserts, it does not add rows.
    ours.push(rows)
    assert _table(tmp_path / "ours" / "data" / "online_store.db") == expected


def test_unknown_table_layout_falls_back_to_feast(tmp_path: Path) -> None:
    path = tmp_path / "online.db"
    with sqlite3.connect(path) as connection:
        connection.execute("CREATE TABLE t (entity_key BLOB, feature_name TEXT, value BLOB)")
    assert SqliteOnlineWriter.open(path, table="t") is None


def test_rows_read_back_from_the_offline_store_can_be_pushed_again(tmp_path: Path, redactor: Redactor) -> None:
    import pandas as pd

    store = FeastCuratedStore(tmp_path / "feast")
    store.open()
    rows = _rows(redactor)
    store.push(rows)
    before = _table(tmp_path / "feast" / "data" / "online_store.db")
    again = pd.read_parquet(store.offline_path).to_dict("records")  # timestamps as pandas Timestamps
    store.push(again)
    assert _table(tmp_path / "feast" / "data" / "online_store.db") == before
