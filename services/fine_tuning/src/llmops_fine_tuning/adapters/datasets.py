"""Reading training data from dataset snapshots (the kernel's ``SnapshotReader``), the
``DatasetReader`` port: labelled texts for a classifier, conversations from an instructions
snapshot (manifest ``content: "instructions"``) for a causal LM."""

from __future__ import annotations

import logging
from datetime import datetime
from typing import Any

import pandas as pd

from llmops_fine_tuning.domain.ports import Conversations, InstructionData, LabelledTexts, TrainingData
from llmops_fine_tuning.domain.validation import TRAIN, VALIDATION, DatasetSummary
from llmops_models import ArtifactMissing, is_valid_name
from llmops_models.kinds.causal_lm.conversations import (
    INSTRUCTIONS_CONTENT,
    MESSAGES_COLUMN,
    RECORDS_CONTENT,
    InvalidConversation,
    parse_messages,
    snapshot_content,
)
from llmops_models.kinds.causal_lm.preferences import PreferencePair, parse_pairs
from llmops_models.snapshots import SnapshotReader
from llmops_storage import ArtifactStore

logger = logging.getLogger(__name__)


class ArtifactDatasetReader:
    """``DatasetReader`` over the artifact store; keeps the last snapshot read in memory."""

    def __init__(self, store: ArtifactStore) -> None:
        self._snapshots = SnapshotReader(store)
        self._conversations: tuple[str, dict[str, list[list[dict[str, str]]]], int] | None = None

    def latest(self, content: str = RECORDS_CONTENT) -> tuple[str, datetime] | None:
        """The newest complete snapshot of the ``content`` series: its id and creation time. A
        classifier never picks an instructions snapshot as "the latest", nor a causal LM a records one."""
        return self._snapshots.latest(content)

    def latest_dataset_id(self, content: str = RECORDS_CONTENT) -> str | None:
        latest = self.latest(content)
        return latest[0] if latest else None

    def manifest(self, dataset_id: str) -> dict[str, Any]:
        return self._snapshots.manifest(dataset_id)

    def _frame(self, dataset_id: str) -> pd.DataFrame | None:
        if not is_valid_name(dataset_id):
            return None
        try:
            return self._snapshots.labelled(dataset_id)
        except ArtifactMissing:
            return None

    def _instructions(self, dataset_id: str) -> tuple[dict[str, list[list[dict[str, str]]]], int] | None:
        """Conversations per split, and the number of rows whose ``messages_json`` cannot be read."""
        if self._conversations is not None and self._conversations[0] == dataset_id:
            return self._conversations[1], self._conversations[2]
        if not is_valid_name(dataset_id):
            return None
        try:
            frame = self._snapshots.frame(dataset_id)
        except ArtifactMissing:
            return None
        if MESSAGES_COLUMN not in frame.columns:
            raise ValueError(f"instructions snapshot {dataset_id} lacks the {MESSAGES_COLUMN} column")
        splits: dict[str, list[list[dict[str, str]]]] = {}
        invalid: list[str] = []
        for split, value, record_id in zip(
            frame["split"].astype(str), frame[MESSAGES_COLUMN], frame.get("record_id", frame.index), strict=True
        ):
            try:
                splits.setdefault(split, []).append(parse_messages(value))
            except InvalidConversation as error:
                invalid.append(f"{record_id}: {error}")
        if invalid:
            logger.warning(
                "rows with unreadable conversations left out",
                extra={"dataset_id": dataset_id, "rows": len(invalid), "first": invalid[:3]},
            )
        self._conversations = (dataset_id, splits, len(invalid))
        return splits, len(invalid)

    def _preferences(self, dataset_id: str) -> tuple[dict[str, list[PreferencePair]], int]:
        """The snapshot's preference pairs per split (none for a snapshot without them), and how
        many rows were left out (``parse_pairs`` says why)."""
        frame = self._snapshots.preferences(dataset_id)
        splits: dict[str, list[PreferencePair]] = {}
        invalid_count = 0
        for split, rows in frame.groupby("split", sort=True):
            pairs, invalid = parse_pairs(rows.to_dict("records"))
            splits[str(split)] = pairs
            invalid_count += len(invalid)
            if invalid:
                logger.warning(
                    "preference pairs left out",
                    extra={"dataset_id": dataset_id, "split": split, "pairs": len(invalid), "first": invalid[:3]},
                )
        return splits, invalid_count

    def summary(self, dataset_id: str) -> DatasetSummary | None:
        if not self._snapshots.is_complete(dataset_id):
            return None
        manifest = self.manifest(dataset_id)
        if snapshot_content(manifest) == INSTRUCTIONS_CONTENT:
            read = self._instructions(dataset_id)
            if read is None:
                return None
            splits, invalid = read
            return DatasetSummary(
                dataset_id=dataset_id,
                content_hash=str(manifest.get("content_hash", "")),
                row_count=sum(len(rows) for rows in splits.values()),
                counts={},
                content=INSTRUCTIONS_CONTENT,
                split_rows={split: len(rows) for split, rows in splits.items()},
                invalid_rows=invalid,
            )
        frame = self._frame(dataset_id)
        if frame is None:
            return None
        counts: dict[str, dict[str, int]] = {}
        for (split, label), count in frame.groupby(["split", "label"]).size().items():
            counts.setdefault(str(split), {})[str(label)] = int(count)
        return DatasetSummary(
            dataset_id=dataset_id,
            content_hash=str(manifest.get("content_hash", "")),
            row_count=len(frame),
            counts=counts,
        )

    def load(self, dataset_id: str) -> TrainingData | InstructionData:
        summary = self.summary(dataset_id)
        if summary is None:
            raise FileNotFoundError(dataset_id)
        if summary.content == INSTRUCTIONS_CONTENT:
            read = self._instructions(dataset_id)
            assert read is not None
            splits, invalid = read
            pairs, invalid_pairs = self._preferences(dataset_id)
            return InstructionData(
                train=Conversations(splits.get(TRAIN, [])),
                validation=Conversations(splits.get(VALIDATION, [])),
                invalid_rows=invalid,
                preferences_train=pairs.get(TRAIN, []),
                preferences_validation=pairs.get(VALIDATION, []),
                invalid_pairs=invalid_pairs,
            )
        frame = self._frame(dataset_id)
        assert frame is not None

        def split(name: str) -> LabelledTexts:
            part = frame[frame["split"] == name]
            return LabelledTexts(texts=part["text"].tolist(), labels=part["label"].tolist())

        return TrainingData(train=split(TRAIN), validation=split(VALIDATION), labels=summary.labels())
