"""Reading dataset snapshots from the artifact store.

A snapshot is the folder ``datasets/<dataset_id>/`` that the ingestion service publishes atomically
(``_COMPLETE`` marker): one or more Parquet files with at least ``record_id``, ``text``, ``label``
and ``split`` (``train``/``validation``/``test``) columns, and ``manifest.json`` (``created_at``,
``row_count``, ``content_hash``, ``label_counts``, ``split_counts``).

"Latest snapshot" means the complete folder whose manifest has the newest ``created_at``. Reading
the store rather than the datasets topic keeps the trainer stateless: a new replica knows the
latest snapshot without replaying a topic, and a snapshot event seen before its folder is complete
can never be picked.
"""

from __future__ import annotations

import io
import logging
import posixpath
from datetime import datetime
from typing import Any

import pandas as pd

from llmops_fine_tuning.domain.ports import LabelledTexts, TrainingData
from llmops_fine_tuning.domain.validation import TRAIN, VALIDATION, DatasetSummary
from llmops_storage import ArtifactStore

logger = logging.getLogger(__name__)

DATASETS_PREFIX = "datasets"
MANIFEST_FILE = "manifest.json"
REQUIRED_COLUMNS = ("text", "label", "split")


def dataset_path(dataset_id: str) -> str:
    return f"{DATASETS_PREFIX}/{dataset_id}"


class ArtifactDatasetReader:
    """``DatasetReader`` over the artifact store; keeps the last snapshot read in memory."""

    def __init__(self, store: ArtifactStore) -> None:
        self._store = store
        self._cached: tuple[str, pd.DataFrame] | None = None

    def latest_dataset_id(self) -> str | None:
        latest = self.latest()
        return latest[0] if latest else None

    def latest(self) -> tuple[str, datetime] | None:
        """The newest complete snapshot: its id and creation time."""
        newest: tuple[datetime, str] | None = None
        for name in self._store.list(DATASETS_PREFIX):
            path = dataset_path(name)
            if name.startswith(".") or not self._store.is_complete(path):
                continue
            try:
                created = datetime.fromisoformat(str(self._store.read_json(f"{path}/{MANIFEST_FILE}")["created_at"]))
            except (OSError, KeyError, ValueError) as error:
                logger.warning(
                    "snapshot without a readable manifest skipped", extra={"dataset_id": name, "error": repr(error)}
                )
                continue
            if newest is None or (created, name) > newest:
                newest = (created, name)
        return (newest[1], newest[0]) if newest else None

    def manifest(self, dataset_id: str) -> dict[str, Any]:
        return dict(self._store.read_json(f"{dataset_path(dataset_id)}/{MANIFEST_FILE}"))

    def _frame(self, dataset_id: str) -> pd.DataFrame | None:
        if self._cached is not None and self._cached[0] == dataset_id:
            return self._cached[1]
        path = dataset_path(dataset_id)
        if "/" in dataset_id or dataset_id.startswith(".") or not self._store.is_complete(path):
            return None
        files = [name for name in self._store.list(path) if name.endswith(".parquet")]
        frames = [pd.read_parquet(io.BytesIO(self._store.read_bytes(posixpath.join(path, name)))) for name in files]
        frame = pd.concat(frames, ignore_index=True) if frames else pd.DataFrame(columns=list(REQUIRED_COLUMNS))
        missing = [column for column in REQUIRED_COLUMNS if column not in frame.columns]
        if missing:
            raise ValueError(f"snapshot {dataset_id} lacks column(s) {missing}")
        frame = frame.dropna(subset=["text", "label"])
        frame = frame.assign(text=frame["text"].astype(str), label=frame["label"].astype(str))
        # A stable row order, whatever order the files were listed in: determinism starts here.
        order = ["split", "record_id"] if "record_id" in frame.columns else ["split", "text", "label"]
        frame = frame.sort_values(order, kind="stable").reset_index(drop=True)
        self._cached = (dataset_id, frame)
        return frame

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
