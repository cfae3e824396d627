"""Dataset snapshots: when to cut one, how rows split, what the content hash covers, the manifest."""

from __future__ import annotations

import hashlib
import json
from collections import Counter
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from enum import StrEnum
from typing import Any

from pydantic import BaseModel, ConfigDict, Field

from llmops_events.v1 import DatasetContent, OffsetRange
from llmops_models.snapshots import PREFERENCE_COLUMNS, preference_file_name


class Split(StrEnum):
    TRAIN = "train"
    VALIDATION = "validation"
    TEST = "test"


@dataclass(frozen=True, slots=True)
class SplitRatios:
    """Shares of train and validation in percent; test gets the rest."""

    train: int = 80
    validation: int = 10

    def __post_init__(self) -> None:
        if self.train < 0 or self.validation < 0 or self.train + self.validation > 100:
            raise ValueError("train and validation percentages must be >= 0 and add up to at most 100")


def split_of(record_id: str, ratios: SplitRatios = SplitRatios()) -> Split:
    """The split a record belongs to, from a hash of its id.

    Deterministic and independent of the other rows: a record stays in the same split in every
    later snapshot, so a test row never leaks into a later training set.
    """
    bucket = int.from_bytes(hashlib.sha256(record_id.encode()).digest()[:8], "big") % 100
    if bucket < ratios.train:
        return Split.TRAIN
    if bucket < ratios.train + ratios.validation:
        return Split.VALIDATION
    return Split.TEST


def should_snapshot(*, labelled_since_last: int, every_n_labelled: int) -> bool:
    """The count policy: a new snapshot once ``every_n_labelled`` new labelled records arrived
    (0 disables it; on-demand snapshots are always possible)."""
    return every_n_labelled > 0 and labelled_since_last >= every_n_labelled


# The columns hashed, in this order; anything else in a row (timestamps of the store) is not
# part of the dataset's content.
CONTENT_COLUMNS: tuple[str, ...] = ("record_id", "tenant", "source", "text", "label", "split")
# An instruction example's row: ``text`` is the last user turn, ``label`` the reference answer.
INSTRUCTION_CONTENT_COLUMNS: tuple[str, ...] = (*CONTENT_COLUMNS, "messages_json", "output_format_json")


def content_columns(content: DatasetContent) -> tuple[str, ...]:
    """The columns a snapshot of the series holds and hashes."""
    return INSTRUCTION_CONTENT_COLUMNS if content is DatasetContent.INSTRUCTIONS else CONTENT_COLUMNS


def content_hash(
    rows: Iterable[Mapping[str, Any]],
    columns: Sequence[str] = CONTENT_COLUMNS,
    *,
    preferences: Iterable[Mapping[str, Any]] = (),
) -> str:
    """``sha256:`` over the rows' content ``columns``, rows ordered by ``record_id``, then (when
    there are any) a ``preferences`` line and the preference pairs' ``PREFERENCE_COLUMNS``, ordered
    by ``pair_id``.

    Each row is canonical JSON (sorted keys, no whitespace, UTF-8) followed by a newline, so
    the hash is reproducible from the Parquet files with any JSON library; a snapshot without
    pairs hashes as it did before pairs existed.
    """
    digest = hashlib.sha256()
    for row in sorted(rows, key=lambda row: str(row["record_id"])):
        _hash_row(digest, {column: row.get(column) for column in columns})
    pairs = sorted(preferences, key=lambda pair: str(pair["pair_id"]))
    if pairs:
        digest.update(b"preferences\n")
        for pair in pairs:
            _hash_row(digest, {column: pair.get(column) for column in PREFERENCE_COLUMNS})
    return f"sha256:{digest.hexdigest()}"


def _hash_row(digest: Any, canonical: Mapping[str, Any]) -> None:
    digest.update(json.dumps(canonical, sort_keys=True, separators=(",", ":"), ensure_ascii=False).encode())
    digest.update(b"\n")


@dataclass(frozen=True, slots=True)
class Position:
    """Where a record was read: topic, partition, offset."""

    topic: str
    partition: int
    offset: int


def lineage_ranges(positions: Iterable[Position]) -> list[OffsetRange]:
    """One half-open range per topic partition, from the first to the last offset used.

    A range may also cover offsets whose messages were rejected or duplicates; every row of the
    snapshot comes from inside one of the ranges.
    """
    bounds: dict[tuple[str, int], tuple[int, int]] = {}
    for position in positions:
        key = (position.topic, position.partition)
        low, high = bounds.get(key, (position.offset, position.offset))
        bounds[key] = (min(low, position.offset), max(high, position.offset))
    return [
        OffsetRange(topic=topic, partition=partition, start=low, end=high + 1)
        for (topic, partition), (low, high) in sorted(bounds.items())
    ]


def dataset_id_for(
    *, name: str, created_at: datetime, content_hash: str, content: DatasetContent = DatasetContent.RECORDS
) -> str:
    """``<name>-<UTC time>-<6 hex of the content hash>``, for instruction examples
    ``<name>-instructions-<UTC time>-<6 hex>``: sortable, readable, unique per content."""
    stamp = created_at.astimezone(UTC).strftime("%Y%m%dT%H%M%SZ")
    series = f"{name}-instructions" if content is DatasetContent.INSTRUCTIONS else name
    return f"{series}-{stamp}-{content_hash.removeprefix('sha256:')[:6]}"


class SnapshotManifest(BaseModel):
    """``manifest.json`` of a snapshot folder: what a trainer needs to trust the files."""

    model_config = ConfigDict(frozen=True)

    dataset_id: str
    content: DatasetContent = DatasetContent.RECORDS
    """The series: ``records`` (classifier data) or ``instructions`` (one chat per row)."""
    created_at: datetime
    row_count: int = Field(ge=0)
    content_hash: str
    content_columns: list[str] = Field(default_factory=lambda: list(CONTENT_COLUMNS))
    label_counts: dict[str, int]
    """Rows per label; empty for instruction examples, whose answers are free text."""
    split_counts: dict[str, int]
    files: dict[str, str]
    """Split name → Parquet file name, relative to the manifest."""
    preference_files: dict[str, str] | None = None
    """Split name → preference-pair Parquet file name (instructions snapshots with pairs only)."""
    preference_counts: dict[str, int] | None = None
    """Preference pairs per split (absent: none)."""
    lineage: list[OffsetRange]
    feature_view: str
    as_of: datetime
    """The point in time of the offline-store retrieval."""


def build_manifest(
    *,
    dataset_id: str,
    rows: Sequence[Mapping[str, Any]],
    lineage: list[OffsetRange],
    files: dict[str, str],
    feature_view: str,
    as_of: datetime,
    created_at: datetime,
    content: DatasetContent = DatasetContent.RECORDS,
    preferences: Sequence[Mapping[str, Any]] = (),
) -> SnapshotManifest:
    """The manifest of ``rows`` (each with ``record_id``, ``label`` and ``split``; instruction
    examples with ``messages_json`` and ``output_format_json`` too) and of the preference pairs
    (``PREFERENCE_COLUMNS``; instruction snapshots only)."""
    if preferences and content is not DatasetContent.INSTRUCTIONS:
        raise ValueError("preference pairs belong to an instructions snapshot")
    columns = content_columns(content)
    pair_counts = Counter(str(pair["split"]) for pair in preferences)
    labels = Counter(str(row["label"]) for row in rows) if content is DatasetContent.RECORDS else Counter()
    splits = Counter(str(row["split"]) for row in rows)
    return SnapshotManifest(
        dataset_id=dataset_id,
        content=content,
        created_at=created_at,
        row_count=len(rows),
        content_hash=content_hash(rows, columns, preferences=preferences),
        content_columns=list(columns),
        label_counts=dict(sorted(labels.items())),
        split_counts={split.value: splits.get(split.value, 0) for split in Split},
        files=files,
        preference_files={split: preference_file_name(split) for split in sorted(pair_counts)} or None,
        preference_counts=dict(sorted(pair_counts.items())) or None,
        lineage=lineage,
        feature_view=feature_view,
        as_of=as_of,
    )
