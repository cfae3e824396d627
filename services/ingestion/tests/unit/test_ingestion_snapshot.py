from collections import Counter
from datetime import UTC, datetime

import pytest

from llmops_events.v1 import DatasetContent, OffsetRange
from llmops_ingestion.domain.snapshot import (
    Position,
    Split,
    SplitRatios,
    build_manifest,
    content_hash,
    dataset_id_for,
    lineage_ranges,
    should_snapshot,
    split_of,
)


def test_split_is_deterministic_and_roughly_80_10_10() -> None:
    ids = [f"acme/r-{i}" for i in range(10_000)]
    splits = Counter(split_of(i) for i in ids)
    assert [split_of(i) for i in ids[:100]] == [split_of(i) for i in ids[:100]]
    assert 7700 < splits[Split.TRAIN] < 8300
    assert 800 < splits[Split.VALIDATION] < 1200
    assert 800 < splits[Split.TEST] < 1200


def test_split_ratios_are_checked() -> None:
    with pytest.raises(ValueError):
        SplitRatios(train=95, validation=10)
    assert {split_of(f"r{i}", SplitRatios(train=100, validation=0)) for i in range(50)} == {Split.TRAIN}


def test_policy() -> None:
    assert should_snapshot(labelled_since_last=100, every_n_labelled=100)
    assert not should_snapshot(labelled_since_last=99, every_n_labelled=100)
    assert not should_snapshot(labelled_since_last=10**6, every_n_labelled=0)


def test_content_hash_ignores_row_order_and_extra_columns_but_not_content() -> None:
    rows: list[dict[str, object]] = [
        {"record_id": "b", "tenant": "t", "source": "s", "text": "x", "label": "l", "split": "train"},
        {"record_id": "a", "tenant": "t", "source": "s", "text": "y", "label": "m", "split": "test", "extra": 1},
    ]
    assert content_hash(rows) == content_hash(list(reversed(rows)))
    assert content_hash(rows).startswith("sha256:")
    changed = [{**rows[0], "label": "other"}, rows[1]]
    assert content_hash(changed) != content_hash(rows)


def test_lineage_is_one_range_per_partition() -> None:
    positions = [Position("raw", 0, 5), Position("raw", 0, 2), Position("raw", 1, 7), Position("fb", 0, 0)]
    assert lineage_ranges(positions) == [
        OffsetRange(topic="fb", partition=0, start=0, end=1),
        OffsetRange(topic="raw", partition=0, start=2, end=6),
        OffsetRange(topic="raw", partition=1, start=7, end=8),
    ]


def test_manifest_counts_and_id() -> None:
    now = datetime(2026, 11, 28, 10, 15, tzinfo=UTC)
    rows = [
        {
            "record_id": f"r{i}",
            "tenant": "t",
            "source": "s",
            "text": str(i),
            "label": "a" if i % 3 else "b",
            "split": split_of(f"r{i}").value,
        }
        for i in range(30)
    ]
    manifest = build_manifest(
        dataset_id="d",
        rows=rows,
        lineage=[],
        files={"train": "train.parquet"},
        feature_view="curated_records",
        as_of=now,
        created_at=now,
    )
    assert manifest.row_count == 30
    assert manifest.label_counts == {"a": 20, "b": 10}
    assert sum(manifest.split_counts.values()) == 30 and set(manifest.split_counts) == {"train", "validation", "test"}
    dataset_id = dataset_id_for(name="records", created_at=now, content_hash="sha256:abcdef0123")
    assert dataset_id == "records-20261128T101500Z-abcdef"


def test_preference_pairs_are_counted_per_split_and_hashed_after_the_rows() -> None:
    now = datetime(2026, 12, 1, 5, 0, tzinfo=UTC)
    rows = [{"record_id": "t/feedback-1", "label": "Open the app.", "split": "train"}]
    pairs = [
        {"pair_id": pair_id, "messages_json": "[]", "chosen": "a", "rejected": "b", "source": "ratings", "split": split}
        for pair_id, split in [("t/ratings-2", "test"), ("t/ratings-1", "train"), ("t/correction-1", "train")]
    ]
    options = {
        "dataset_id": "d",
        "rows": rows,
        "lineage": [],
        "files": {},
        "feature_view": "curated_instructions",
        "as_of": now,
        "created_at": now,
        "content": DatasetContent.INSTRUCTIONS,
    }
    manifest = build_manifest(**options, preferences=pairs)  # type: ignore[arg-type]
    assert manifest.preference_counts == {"test": 1, "train": 2}
    assert manifest.preference_files == {"test": "preferences-test.parquet", "train": "preferences-train.parquet"}
    assert manifest.content_hash == content_hash(rows, manifest.content_columns, preferences=list(reversed(pairs)))
    without = build_manifest(**options)  # type: ignore[arg-type]
    assert without.preference_files is None and without.preference_counts is None
    assert without.content_hash == content_hash(rows, without.content_columns) != manifest.content_hash
    with pytest.raises(ValueError, match="instructions"):
        build_manifest(**{**options, "content": DatasetContent.RECORDS}, preferences=pairs)  # type: ignore[arg-type]
