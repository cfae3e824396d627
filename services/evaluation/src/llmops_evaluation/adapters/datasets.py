"""The labelled examples an evaluation runs on: the snapshot's test split, plus an optional golden set."""

from __future__ import annotations

from pathlib import Path

import pandas as pd

from llmops_evaluation.domain.ports import TestSet
from llmops_evaluation.errors import EvaluationRejected, ModelUnavailable
from llmops_models.kinds.causal_lm.conversations import INSTRUCTIONS_CONTENT, snapshot_content
from llmops_models.snapshots import SnapshotReader
from llmops_storage import ArtifactStore

SLICE_COLUMNS = ("tenant", "source")


def load_test_set(
    store: ArtifactStore, dataset_id: str, *, max_examples: int, seed: int, golden_csv: Path | None = None
) -> TestSet:
    """The test split of ``datasets/<dataset_id>/`` (seeded sample above ``max_examples``) and the golden set."""
    snapshots = SnapshotReader(store)
    if not snapshots.is_complete(dataset_id):
        raise ModelUnavailable("dataset_missing", f"snapshot {dataset_id!r} does not exist")
    if snapshot_content(snapshots.manifest(dataset_id)) == INSTRUCTIONS_CONTENT:
        raise EvaluationRejected(
            "dataset_content_mismatch",
            f"snapshot {dataset_id} holds conversations; a classifier is evaluated on labelled texts",
        )
    frame = snapshots.frame(dataset_id)
    test = frame[(frame["split"] == "test") & frame["label"].notna()]
    sort_key = "record_id" if "record_id" in test.columns else "text"
    test = test.sort_values(sort_key, kind="stable")
    if len(test) > max_examples:
        test = test.sample(n=max_examples, random_state=seed).sort_values(sort_key, kind="stable")
    origin = f"test split of {dataset_id}"
    if golden_csv is not None and golden_csv.exists():
        golden = pd.read_csv(golden_csv).assign(source="golden")
        test = pd.concat([test, golden], ignore_index=True)
        origin += f" + golden set {golden_csv.name}"
    slices = {
        column: test[column].fillna("unknown").astype(str).tolist()
        for column in SLICE_COLUMNS
        if column in test.columns
    }
    return TestSet(
        texts=test["text"].astype(str).tolist(), labels=test["label"].astype(str).tolist(), slices=slices, origin=origin
    )
