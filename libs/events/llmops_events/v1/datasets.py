"""Immutable dataset snapshots cut from curated records or instruction examples."""

from __future__ import annotations

from datetime import datetime
from enum import StrEnum
from typing import ClassVar

from pydantic import BaseModel, ConfigDict, Field

from llmops_events import topics
from llmops_events.base import EventData
from llmops_events.names import DatasetId


class OffsetRange(BaseModel):
    """A half-open range ``[start, end)`` of offsets of one topic partition."""

    model_config = ConfigDict(frozen=True)

    topic: str
    partition: int = Field(ge=0)
    start: int = Field(ge=0)
    end: int = Field(ge=0)


class DatasetContent(StrEnum):
    """What a snapshot series holds; each series is cut, numbered and read on its own."""

    RECORDS = "records"
    """Classifier training data: ``text`` and ``label`` per row (``llmops.record.submitted.v1``)."""

    INSTRUCTIONS = "instructions"
    """Instruction-tuning data: one chat per row (``llmops.instruction.submitted.v1``)."""


class DatasetSnapshotted(EventData):
    """A dataset snapshot was written: files, counts, content hash and exact lineage."""

    event_type: ClassVar[str] = "llmops.dataset.snapshotted.v1"
    topic: ClassVar[str] = topics.DATASETS
    key_field: ClassVar[str] = "dataset_id"

    dataset_id: DatasetId
    """Unique, immutable id of the snapshot."""

    uri: str
    """Artifact-store URI of the snapshot folder (Parquet files and manifest)."""

    manifest_uri: str
    """URI of the snapshot's manifest (JSON)."""

    row_count: int = Field(ge=0)
    content_hash: str = Field(examples=["sha256:9f2c..."])
    """Hash over the snapshot's rows in a canonical order."""

    label_counts: dict[str, int] = Field(default_factory=dict)
    split_counts: dict[str, int] = Field(
        default_factory=dict, examples=[{"train": 800, "validation": 100, "test": 100}]
    )
    lineage: list[OffsetRange] = Field(default_factory=list)
    """The topic/partition/offset ranges whose records the snapshot contains."""

    created_at: datetime

    content: DatasetContent = DatasetContent.RECORDS
    """Which series the snapshot belongs to (its manifest's ``content``); absent in events from
    before instruction examples existed, which are all ``records``."""
