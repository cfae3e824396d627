"""Reading training data from dataset snapshots (the kernel's ``SnapshotReader``), the
``DatasetReader`` port."""

from __future__ import annotations

from datetime import datetime
from typing import Any

import pandas as pd

from llmops_fine_tuning.domain.ports import LabelledTexts, TrainingData
from llmops_fine_tuning.domain.validation import TRAIN, VALIDATION, DatasetSummary
from llmops_models import ArtifactMissing, is_valid_name
from llmops_models.snapshots import SnapshotReader
from llmops_storage import ArtifactStore


class ArtifactDatasetReader:
    """``DatasetReader`` over the artifact store; keeps the last snapshot read in memory."""

    def __init__(self, store: ArtifactStore) -> None:
        self._snapshots = SnapshotReader(store)

    def latest_dataset_id(self) -> str | None:
        return self._snapshots.latest_dataset_id()

    def latest(self) -> tuple[str, datetime] | None:
        """The newest complete snapshot: its id and creation time."""
        return self._snapshots.latest()

    def manifest(self, dataset_id: str) -> dict[str, Any]:
        return self._snapshots.manifest(dataset_id)

    def _frame(self, dataset_id: str) -> pd.DataFrame | None:
        if not is_valid_name(dataset_id):
            return None
        try:
            return self._snapshots.labelled(dataset_id)
        except ArtifactMissing:
            return None

    def summary(self, dataset_id: str) -> DatasetSummary | None:
        frame = self._frame(dataset_id)
        if frame is None:
            return None
        counts: dict[str, dict[str, int]] = {}
        for (split, label), count in frame.groupby(["split", "label"]).size().items():
            counts.setdefault(str(split), {})[str(label)] = int(count)
        manifest = self.manifest(dataset_id)
        return DatasetSummary(
            dataset_id=dataset_id,
            content_hash=str(manifest.get("content_hash", "")),
            row_count=len(frame),
            counts=counts,
        )

    def load(self, dataset_id: str) -> TrainingData:
        frame = self._frame(dataset_id)
        if frame is None:
            raise FileNotFoundError(dataset_id)
        summary = self.summary(dataset_id)
        assert summary is not None

        def split(name: str) -> LabelledTexts:
            part = frame[frame["split"] == name]
            return LabelledTexts(texts=part["text"].tolist(), labels=part["label"].tolist())

        return TrainingData(train=split(TRAIN), validation=split(VALIDATION), labels=summary.labels())
