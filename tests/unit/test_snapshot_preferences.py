"""Preference pairs in an ``instructions`` snapshot: written per split, read back apart from rows."""

from __future__ import annotations

import json
from pathlib import Path

import pandas as pd
import pytest

from llmops_models.snapshots import (
    INSTRUCTIONS,
    PREFERENCE_COLUMNS,
    SnapshotReader,
    preference_file_name,
    write_snapshot,
)
from llmops_storage import ArtifactStore


def _instructions() -> pd.DataFrame:
    turns = [{"role": "user", "content": "capital of France?"}, {"role": "assistant", "content": "Paris"}]
    return pd.DataFrame(
        {
            "record_id": ["r1", "r2"],
            "text": ["capital of France?", "capital of Spain?"],
            "label": ["Paris", "Madrid"],
            "split": ["train", "test"],
            "messages_json": [json.dumps(turns), json.dumps(turns)],
            "output_format_json": ["", ""],
        }
    )


def _pairs() -> pd.DataFrame:
    prompt = json.dumps([{"role": "user", "content": "capital of France?"}])
    return pd.DataFrame(
        {
            "pair_id": ["p2", "p1", "p3"],
            "messages_json": [prompt, prompt, prompt],
            "chosen": ["Paris", "Paris.", "It is Paris"],
            "rejected": ["Lyon", "Nice", "Marseille"],
            "source": ["ratings", "correction", "correction"],
            "split": ["train", "train", "validation"],
        }
    )


def test_preference_pairs_round_trip_per_split_and_are_never_rows(tmp_path: Path) -> None:
    store = ArtifactStore(str(tmp_path))
    write_snapshot(store, _instructions(), dataset_id="with-pairs", content=INSTRUCTIONS, preferences=_pairs())
    reader = SnapshotReader(store)
    manifest = reader.manifest("with-pairs")
    assert manifest["preference_files"] == {
        "train": preference_file_name("train"),
        "validation": preference_file_name("validation"),
    }
    assert manifest["preference_counts"] == {"train": 2, "validation": 1}
    assert reader.frame("with-pairs")["record_id"].tolist() == ["r2", "r1"]  # test, then train: rows only
    pairs = reader.preferences("with-pairs")
    assert list(pairs.columns) == list(PREFERENCE_COLUMNS)
    assert pairs["pair_id"].tolist() == ["p1", "p2", "p3"]
    assert reader.preferences("with-pairs", "validation")["chosen"].tolist() == ["It is Paris"]


def test_a_snapshot_without_pairs_reads_as_an_empty_frame_and_hashes_as_before(tmp_path: Path) -> None:
    store = ArtifactStore(str(tmp_path))
    write_snapshot(store, _instructions(), dataset_id="plain", content=INSTRUCTIONS)
    write_snapshot(
        store, _instructions(), dataset_id="empty-pairs", content=INSTRUCTIONS, preferences=_pairs().iloc[:0]
    )
    write_snapshot(store, _instructions(), dataset_id="with-pairs", content=INSTRUCTIONS, preferences=_pairs())
    reader = SnapshotReader(store)
    plain = reader.manifest("plain")
    assert "preference_files" not in plain and "preference_counts" not in plain
    empty = reader.preferences("plain")
    assert empty.empty and list(empty.columns) == list(PREFERENCE_COLUMNS)
    assert reader.manifest("empty-pairs")["content_hash"] == plain["content_hash"]
    assert reader.manifest("with-pairs")["content_hash"] != plain["content_hash"]


def test_pairs_are_refused_outside_instructions_or_with_unknown_columns(tmp_path: Path) -> None:
    store = ArtifactStore(str(tmp_path))
    records = _instructions()[["record_id", "text", "label", "split"]]
    with pytest.raises(ValueError, match="instructions"):
        write_snapshot(store, records, dataset_id="records", preferences=_pairs())
    with pytest.raises(ValueError, match="chosen"):
        write_snapshot(
            store, _instructions(), dataset_id="x", content=INSTRUCTIONS, preferences=_pairs().drop(columns="chosen")
        )
    with pytest.raises(ValueError, match="source"):
        write_snapshot(
            store, _instructions(), dataset_id="y", content=INSTRUCTIONS, preferences=_pairs().assign(source="vibes")
        )
