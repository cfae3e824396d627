"""The local Feast stores (real Feast, no broker): the direct online writer leaves exactly the rows
Feast's own push leaves, and the offline store appends Parquet parts and merges them."""

from __future__ import annotations

import sqlite3
from datetime import UTC, datetime
from pathlib import Path

import pandas as pd
import pytest
from feast_rows import curated_rows

from llmops_features import FEATURE_VIEW
from llmops_ingestion.adapters.feast_local import FANOUT, PartDirectory, record_table
from llmops_ingestion.adapters.feast_store import FeastCuratedStore
from llmops_privacy.redaction import Redactor

pytestmark = pytest.mark.integration


def _table(path: Path) -> list[tuple[object, ...]]:
    with sqlite3.connect(path) as connection:
        table = record_table("llmops", FEATURE_VIEW)
        return connection.execute(f'SELECT * FROM "{table}" ORDER BY entity_key').fetchall()


def test_fast_online_writer_matches_feasts_own_write(tmp_path: Path, redactor: Redactor) -> None:
    from feast.data_source import PushMode

    from llmops_features import PUSH_SOURCE
    from llmops_ingestion.adapters.feast_store import to_frame, with_descriptors
    from llmops_ingestion.adapters.language import language_detector

    rows = curated_rows(redactor)
    by_feast = FeastCuratedStore(tmp_path / "feast")
    by_feast.open()
    described = with_descriptors(rows, detect_languages=language_detector().many)
    by_feast._require_open().push(PUSH_SOURCE, to_frame(described), to=PushMode.ONLINE)
    ours = FeastCuratedStore(tmp_path / "ours")
    ours.open()
    ours.push(rows)
    expected = _table(tmp_path / "feast" / "data" / "online_store.db")
    assert len(expected) == len(rows)  # one row per record
    assert _table(tmp_path / "ours" / "data" / "online_store.db") == expected
    # And Feast reads what the writer wrote.
    online = ours.online([str(row["record_id"]) for row in rows])
    assert online["text"] == [row["text"] for row in rows]
    assert online["pii_email"] == [row["pii_email"] for row in rows]
    # Descriptors are added as the rows are written.
    assert online["language"] == [row["language"] for row in described] and online["language"][0] == "en"
    # Pushing again (the outbox is at-least-once) upserts, it does not add rows.
    ours.push(rows)
    assert _table(tmp_path / "ours" / "data" / "online_store.db") == expected


def test_rows_read_back_from_the_offline_store_can_be_pushed_again(tmp_path: Path, redactor: Redactor) -> None:
    import pandas as pd

    store = FeastCuratedStore(tmp_path / "feast")
    store.open()
    rows = curated_rows(redactor)
    store.push(rows)
    before = _table(tmp_path / "feast" / "data" / "online_store.db")
    again = pd.read_parquet(store.offline_path).to_dict("records")  # timestamps as pandas Timestamps
    assert len(again) == len(rows)
    store.push(again)
    assert _table(tmp_path / "feast" / "data" / "online_store.db") == before


def test_offline_pushes_append_parts_that_merge_by_tiers(tmp_path: Path, redactor: Redactor) -> None:
    store = FeastCuratedStore(tmp_path / "feast")
    store.open()
    parts = PartDirectory(store.offline_path)
    rows = curated_rows(redactor)
    assert len(parts.parts(0)) == 1  # the empty part written at open: Feast reads the schema from it
    for push in range(2 * FANOUT):  # rows repeat across pushes: the outbox is at-least-once
        store.push([rows[push % len(rows)]])
    # 2 * FANOUT + 1 parts were written at tier 0; each FANOUT of them became one at tier 1.
    assert (len(parts.parts(0)), len(parts.parts(1))) == (1, 2)
    frame = store.historical([str(row["record_id"]) for row in rows], as_of=datetime.now(UTC))
    assert frame["record_id"].tolist() == [row["record_id"] for row in rows]
    assert frame["text"].tolist() == [row["text"] for row in rows]


def test_a_file_offline_store_written_before_the_parts_is_kept(tmp_path: Path, redactor: Redactor) -> None:
    import pyarrow as pa
    import pyarrow.parquet as pq

    from llmops_features import offline_schema
    from llmops_ingestion.adapters.feast_store import LEGACY_OFFLINE_FILE, to_frame, with_descriptors

    rows = curated_rows(redactor)
    legacy = tmp_path / "feast" / "data" / LEGACY_OFFLINE_FILE
    legacy.parent.mkdir(parents=True)
    frame = to_frame(with_descriptors(rows, detect_languages=None))
    pq.write_table(pa.Table.from_pandas(frame, schema=offline_schema(), preserve_index=False), legacy)
    store = FeastCuratedStore(tmp_path / "feast")
    store.open()
    assert not legacy.exists()
    read = store.historical([str(row["record_id"]) for row in rows], as_of=datetime.now(UTC))
    assert read["text"].tolist() == [row["text"] for row in rows]


def test_a_part_with_other_columns_is_refused(tmp_path: Path) -> None:
    import pyarrow as pa

    from llmops_features import offline_schema

    parts = PartDirectory(tmp_path / "parts")
    parts.initialise(offline_schema())
    with pytest.raises(ValueError, match="expected"):
        parts.append(pa.table({"record_id": ["a"], "text": ["b"]}))
    assert len(parts.parts()) == 1  # nothing written


def test_erasure_removes_every_copy_online_and_offline(tmp_path: Path, redactor: Redactor) -> None:
    """An erased record leaves no row in any Parquet part (merged tiers and parts that repeat it
    included) nor online, and Feast's own reads no longer find it (issue 17, item 7)."""
    store = FeastCuratedStore(tmp_path / "feast")
    store.open()
    parts = PartDirectory(store.offline_path)
    rows = curated_rows(redactor)
    for push in range(FANOUT + 2):  # copies of each row in a merged part and in tier-0 parts
        store.push([rows[push % len(rows)]])
    assert parts.parts(1), "the test needs a merged part"
    doomed, kept = str(rows[1]["record_id"]), [str(rows[0]["record_id"]), str(rows[2]["record_id"])]
    removed = store.erase([doomed])
    assert removed == sum(1 for push in range(FANOUT + 2) if push % len(rows) == 1)
    offline = pd.concat([pd.read_parquet(part) for part in parts.parts()], ignore_index=True)
    assert doomed not in set(offline["record_id"]) and set(offline["record_id"]) == set(kept)
    online = store.online([doomed, *kept])
    assert online["text"] == [None, rows[0]["text"], rows[2]["text"]]
    frame = store.historical([doomed, *kept], as_of=datetime.now(UTC))
    assert frame.set_index("record_id")["text"].isna().to_dict() == {doomed: True, kept[0]: False, kept[1]: False}
    # A whole tenant: every row of it, whatever its id, offline and (by the ids found there) online.
    assert store.erase([], tenant="acme") == len(offline)
    assert pd.concat([pd.read_parquet(part) for part in parts.parts()]).empty
    assert store.online(kept)["text"] == [None, None]
    store.close()
