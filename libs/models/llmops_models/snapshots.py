"""Dataset snapshots: ``datasets/<dataset_id>/``, one Parquet file per split and ``manifest.json``.

The ingestion service writes them (``publish_snapshot``); fine-tuning, evaluation, monitoring and
deployment read them (``SnapshotReader``). Rows carry at least ``record_id``, ``text``, ``label``
and ``split`` (``train``/``validation``/``test``); the manifest has ``created_at``, ``row_count``,
``content_hash``, ``label_counts``, ``split_counts`` and ``files`` (split → file name).

Snapshots come in series by ``content`` (the manifest's field; absent means ``records``):
``records`` (classifier data: ``text`` and ``label``) and ``instructions`` (one chat per row: ``text``
is the last user turn, ``label`` the reference answer, ``messages_json`` every turn as a JSON array
of ``{"role", "content"}``, ``output_format_json`` the declared answer format or ``""``). The two
are never mixed in one snapshot.

"Latest snapshot" means the complete folder of a series whose manifest has the newest
``created_at``: reading the store rather than the datasets topic keeps readers stateless, and a
snapshot event seen before its folder is complete can never be picked.
"""

from __future__ import annotations

import hashlib
import io
import json
import logging
import posixpath
import tempfile
from collections.abc import Mapping
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pandas as pd

from llmops_models.layout import DATASETS_PREFIX, MANIFEST_FILE, dataset_file, dataset_path, is_valid_name
from llmops_models.registry import ArtifactMissing
from llmops_storage import ArtifactStore

logger = logging.getLogger(__name__)

SPLITS = ("train", "validation", "test")
REQUIRED_COLUMNS = ("text", "label", "split")

# The series a snapshot belongs to (``llmops_events.v1.DatasetContent``'s values).
RECORDS = "records"
INSTRUCTIONS = "instructions"
CONTENTS = (RECORDS, INSTRUCTIONS)
INSTRUCTION_COLUMNS = ("messages_json", "output_format_json")
"""The columns an ``instructions`` snapshot has beyond those of ``records``."""


def content_of(manifest: Mapping[str, Any]) -> str:
    """The series of a snapshot, from its manifest (snapshots from before series are ``records``)."""
    return str(manifest.get("content") or RECORDS)


def split_file_name(split: str) -> str:
    return f"{split}.parquet"


def publish_snapshot(store: ArtifactStore, frame: pd.DataFrame, manifest: Mapping[str, Any]) -> tuple[str, str]:
    """Write one Parquet file per split (rows sorted by ``record_id``) and the manifest, then publish
    the folder atomically. ``manifest`` names ``dataset_id`` and ``files`` (split → file name).
    Returns the folder URI and the manifest URI."""
    dataset_id = str(manifest["dataset_id"])
    with tempfile.TemporaryDirectory(prefix="snapshot-") as staging:
        folder = Path(staging)
        for split, file_name in dict(manifest["files"]).items():
            part = frame[frame["split"] == split].sort_values("record_id").reset_index(drop=True)
            part.to_parquet(folder / file_name, index=False)
        (folder / MANIFEST_FILE).write_text(json.dumps(dict(manifest), indent=2, sort_keys=True, default=str))
        uri = store.publish_folder(folder, dataset_path(dataset_id))
    return uri, store.uri(dataset_file(dataset_id, MANIFEST_FILE))


def write_snapshot(
    store: ArtifactStore,
    frame: pd.DataFrame,
    *,
    dataset_id: str,
    created_at: datetime | None = None,
    content: str = RECORDS,
) -> str:
    """Publish ``frame`` (columns ``text``, ``label``, ``split``; ``record_id`` added when missing;
    for ``content="instructions"`` also ``messages_json`` and ``output_format_json``) as a snapshot
    of the ``content`` series with a manifest computed from it: for tests, benchmarks and imports of
    existing data sets (the ingestion service cuts snapshots from the bus with its own manifest)."""
    if content not in CONTENTS:
        raise ValueError(f"content must be one of {CONTENTS}, not {content!r}")
    frame = frame.copy()
    if "record_id" not in frame.columns:
        frame["record_id"] = [f"r-{i:06d}" for i in range(len(frame))]
    columns = ["record_id", "text", "label", "split"]
    if content == INSTRUCTIONS:
        columns += list(INSTRUCTION_COLUMNS)
    rows = frame.sort_values("record_id")[columns].astype(str).values.tolist()
    manifest: dict[str, Any] = {
        "dataset_id": dataset_id,
        "content": content,
        "created_at": (created_at or datetime.now(UTC)).isoformat(),
        "row_count": len(frame),
        "content_hash": "sha256:" + hashlib.sha256(json.dumps(rows, ensure_ascii=False).encode()).hexdigest(),
        "label_counts": {str(k): int(v) for k, v in sorted(frame["label"].value_counts().items())},
        "split_counts": {str(k): int(v) for k, v in sorted(frame["split"].value_counts().items())},
        "files": {str(split): split_file_name(str(split)) for split in sorted(frame["split"].unique())},
    }
    return publish_snapshot(store, frame, manifest)[0]


class SnapshotReader:
    """Reads snapshots from the artifact store; keeps the last one read in memory."""

    def __init__(self, store: ArtifactStore) -> None:
        self.store = store
        self._cached: tuple[str, pd.DataFrame] | None = None

    def is_complete(self, dataset_id: str) -> bool:
        return is_valid_name(dataset_id) and self.store.is_complete(dataset_path(dataset_id))

    def latest(self, content: str = RECORDS) -> tuple[str, datetime] | None:
        """The newest complete snapshot of the ``content`` series: its id and creation time."""
        newest: tuple[datetime, str] | None = None
        for name in self.store.list(DATASETS_PREFIX):
            if not self.is_complete(name):
                continue
            try:
                manifest = self.manifest(name)
                if content_of(manifest) != content:
                    continue
                created = datetime.fromisoformat(str(manifest["created_at"]))
            except (OSError, KeyError, ValueError) as error:
                logger.warning(
                    "snapshot without a readable manifest skipped", extra={"dataset_id": name, "error": repr(error)}
                )
                continue
            if newest is None or (created, name) > newest:
                newest = (created, name)
        return (newest[1], newest[0]) if newest else None

    def latest_dataset_id(self, content: str = RECORDS) -> str | None:
        latest = self.latest(content)
        return latest[0] if latest else None

    def manifest(self, dataset_id: str) -> dict[str, Any]:
        return dict(self.store.read_json(dataset_file(dataset_id, MANIFEST_FILE)))

    def frame(self, dataset_id: str) -> pd.DataFrame:
        """Every row of the snapshot in a stable order (split, then record id), whatever order the
        files are listed in: determinism starts here. ``ArtifactMissing`` when it does not exist."""
        if self._cached is not None and self._cached[0] == dataset_id:
            return self._cached[1]
        if not self.is_complete(dataset_id):
            raise ArtifactMissing(f"snapshot {dataset_id!r} does not exist or was never completely written")
        path = dataset_path(dataset_id)
        files = [name for name in self.store.list(path) if name.endswith(".parquet")]
        frames = [pd.read_parquet(io.BytesIO(self.store.read_bytes(posixpath.join(path, name)))) for name in files]
        frame = pd.concat(frames, ignore_index=True) if frames else pd.DataFrame(columns=list(REQUIRED_COLUMNS))
        missing = [column for column in REQUIRED_COLUMNS if column not in frame.columns]
        if missing:
            raise ValueError(f"snapshot {dataset_id} lacks column(s) {missing}")
        order = ["split", "record_id"] if "record_id" in frame.columns else ["split", "text", "label"]
        frame = frame.sort_values(order, kind="stable").reset_index(drop=True)
        self._cached = (dataset_id, frame)
        return frame

    def labelled(self, dataset_id: str, split: str | None = None) -> pd.DataFrame:
        """Rows with a text and a label (of one split, when named), ``text`` and ``label`` as str."""
        frame = self.frame(dataset_id).dropna(subset=["text", "label"])
        if split is not None:
            frame = frame[frame["split"] == split]
        return frame.assign(text=frame["text"].astype(str), label=frame["label"].astype(str))
