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

A snapshot cut from the bus also says where each row was read: ``source_topic``,
``source_partition`` and ``source_offset`` (``POSITION_COLUMNS``; the manifest's ``lineage`` has the
ranges per partition). They are not part of the content hash: the same records read again from
other offsets make the same dataset.

An ``instructions`` snapshot may also hold **preference pairs** (from feedback on generations):
one Parquet file per split, ``preferences-<split>.parquet``, listed in the manifest under
``preference_files`` (split → file name) with ``preference_counts`` (split → pairs); both absent
means no pairs. Columns ``PREFERENCE_COLUMNS``: ``pair_id`` (derived from the request ids, so
feedback delivered twice yields one pair), ``messages_json`` (the redacted prompt: every turn up to
and including the last user turn), ``chosen`` and ``rejected`` (redacted answers), ``source``
(``correction``: the user's corrected answer over the model's thumbs-down answer; ``ratings``: the
higher-rated of two answers to the same prompt) and ``split``. Preference files are not rows:
``SnapshotReader.frame`` never returns them, ``SnapshotReader.preferences`` does.

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
import pyarrow.parquet as pq

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

POSITION_COLUMNS = ("source_topic", "source_partition", "source_offset")
"""Where a row's record was read from the bus (snapshots cut by ingestion)."""

PREFERENCE_COLUMNS = ("pair_id", "messages_json", "chosen", "rejected", "source", "split")
"""The columns of a preference file, in this order."""
PREFERENCE_FROM_CORRECTION = "correction"
"""A pair whose chosen answer is the user's correction of the model's thumbs-down answer."""
PREFERENCE_FROM_RATINGS = "ratings"
"""A pair of two rated answers to the same prompt, the higher rating chosen."""
PREFERENCE_SOURCES = (PREFERENCE_FROM_CORRECTION, PREFERENCE_FROM_RATINGS)
_PREFERENCE_FILE_PREFIX = "preferences-"


def content_of(manifest: Mapping[str, Any]) -> str:
    """The series of a snapshot, from its manifest (snapshots from before series are ``records``)."""
    return str(manifest.get("content") or RECORDS)


def split_file_name(split: str) -> str:
    return f"{split}.parquet"


def preference_file_name(split: str) -> str:
    return f"{_PREFERENCE_FILE_PREFIX}{split}.parquet"


def empty_preferences() -> pd.DataFrame:
    """A preference frame without pairs (every column a string column)."""
    return pd.DataFrame({column: pd.Series([], dtype=object) for column in PREFERENCE_COLUMNS})


def preference_manifest_fields(preferences: pd.DataFrame | None) -> dict[str, dict[str, Any]]:
    """``preference_files`` and ``preference_counts`` for a manifest, or nothing without pairs."""
    if preferences is None or preferences.empty:
        return {}
    counts = preferences["split"].astype(str).value_counts()
    splits = sorted(str(split) for split in counts.index)
    return {
        "preference_files": {split: preference_file_name(split) for split in splits},
        "preference_counts": {split: int(counts[split]) for split in splits},
    }


def publish_snapshot(
    store: ArtifactStore,
    frame: pd.DataFrame,
    manifest: Mapping[str, Any],
    *,
    preferences: pd.DataFrame | None = None,
) -> tuple[str, str]:
    """Write one Parquet file per split (rows sorted by ``record_id``), one preference file per split
    the manifest's ``preference_files`` names (pairs sorted by ``pair_id``) and the manifest, then
    publish the folder atomically. ``manifest`` names ``dataset_id`` and ``files`` (split → file
    name). Returns the folder URI and the manifest URI."""
    dataset_id = str(manifest["dataset_id"])
    preference_files = dict(manifest.get("preference_files") or {})
    if preference_files and preferences is None:
        raise ValueError(f"snapshot {dataset_id} lists preference files but no preference pairs were given")
    with tempfile.TemporaryDirectory(prefix="snapshot-") as staging:
        folder = Path(staging)
        for split, file_name in dict(manifest["files"]).items():
            part = frame[frame["split"] == split].sort_values("record_id").reset_index(drop=True)
            part.to_parquet(folder / file_name, index=False)
        for split, file_name in preference_files.items():
            assert preferences is not None
            pairs = preferences[preferences["split"] == split].sort_values("pair_id").reset_index(drop=True)
            pairs[list(PREFERENCE_COLUMNS)].astype(str).to_parquet(folder / file_name, index=False)
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
    preferences: pd.DataFrame | None = None,
) -> str:
    """Publish ``frame`` (columns ``text``, ``label``, ``split``; ``record_id`` added when missing;
    for ``content="instructions"`` also ``messages_json`` and ``output_format_json``) as a snapshot
    of the ``content`` series with a manifest computed from it: for tests, benchmarks and imports of
    existing data sets (the ingestion service cuts snapshots from the bus with its own manifest).
    ``preferences`` (columns ``PREFERENCE_COLUMNS``; ``instructions`` only) adds preference pairs."""
    if content not in CONTENTS:
        raise ValueError(f"content must be one of {CONTENTS}, not {content!r}")
    if preferences is not None and not preferences.empty:
        if content != INSTRUCTIONS:
            raise ValueError("preference pairs belong to an instructions snapshot")
        missing = [column for column in PREFERENCE_COLUMNS if column not in preferences.columns]
        if missing:
            raise ValueError(f"preference pairs lack column(s) {missing}")
        unknown = sorted(set(preferences["source"].astype(str)) - set(PREFERENCE_SOURCES))
        if unknown:
            raise ValueError(f"preference source(s) {unknown} are not among {PREFERENCE_SOURCES}")
    frame = frame.copy()
    if "record_id" not in frame.columns:
        frame["record_id"] = [f"r-{i:06d}" for i in range(len(frame))]
    columns = ["record_id", "text", "label", "split"]
    if content == INSTRUCTIONS:
        columns += list(INSTRUCTION_COLUMNS)
    rows = frame.sort_values("record_id")[columns].astype(str).values.tolist()
    hashed: Any = rows
    pair_fields = preference_manifest_fields(preferences)
    if pair_fields:
        assert preferences is not None
        pairs = preferences.sort_values("pair_id")[list(PREFERENCE_COLUMNS)].astype(str).values.tolist()
        hashed = {"rows": rows, "preferences": pairs}  # rows alone hash as before pairs existed
    manifest: dict[str, Any] = {
        "dataset_id": dataset_id,
        "content": content,
        "created_at": (created_at or datetime.now(UTC)).isoformat(),
        "row_count": len(frame),
        "content_hash": "sha256:" + hashlib.sha256(json.dumps(hashed, ensure_ascii=False).encode()).hexdigest(),
        "label_counts": {str(k): int(v) for k, v in sorted(frame["label"].value_counts().items())},
        "split_counts": {str(k): int(v) for k, v in sorted(frame["split"].value_counts().items())},
        "files": {str(split): split_file_name(str(split)) for split in sorted(frame["split"].unique())},
        **pair_fields,
    }
    return publish_snapshot(store, frame, manifest, preferences=preferences if pair_fields else None)[0]


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

    def dataset_ids(self) -> list[str]:
        """Every complete snapshot, by id (sorted)."""
        return [name for name in self.store.list(DATASETS_PREFIX) if self.is_complete(name)]

    def record_ids(self, dataset_id: str) -> pd.DataFrame:
        """The snapshot's rows as ``record_id`` and ``tenant`` only (what an erasure looks for),
        without reading the text: ``tenant`` is ``<tenant>`` of the ``<tenant>/<id>`` record id
        where a snapshot (``write_snapshot``'s) has no tenant column. ``ArtifactMissing`` when it
        does not exist."""
        if not self.is_complete(dataset_id):
            raise ArtifactMissing(f"snapshot {dataset_id!r} does not exist or was never completely written")
        path = dataset_path(dataset_id)
        frames = []
        for name in self.store.list(path):
            if not name.endswith(".parquet") or name.startswith(_PREFERENCE_FILE_PREFIX):
                continue
            data = self.store.read_bytes(posixpath.join(path, name))
            columns = set(pq.read_schema(io.BytesIO(data)).names)
            if "record_id" not in columns:
                raise ValueError(f"snapshot {dataset_id} file {name} has no record_id column")
            part = pd.read_parquet(
                io.BytesIO(data), columns=["record_id", "tenant"] if "tenant" in columns else ["record_id"]
            )
            if "tenant" not in part.columns:
                part["tenant"] = part["record_id"].astype(str).str.partition("/")[0]
            frames.append(part[["record_id", "tenant"]].astype(str))
        if not frames:
            return pd.DataFrame({"record_id": pd.Series([], dtype=str), "tenant": pd.Series([], dtype=str)})
        return pd.concat(frames, ignore_index=True)

    def positions(self, dataset_id: str) -> pd.DataFrame:
        """``record_id`` and ``POSITION_COLUMNS`` of every row (empty when the snapshot was not cut
        from the bus). ``ArtifactMissing`` when it does not exist."""
        if not self.is_complete(dataset_id):
            raise ArtifactMissing(f"snapshot {dataset_id!r} does not exist or was never completely written")
        path = dataset_path(dataset_id)
        wanted = ["record_id", *POSITION_COLUMNS]
        frames = []
        for name in self.store.list(path):
            if not name.endswith(".parquet") or name.startswith(_PREFERENCE_FILE_PREFIX):
                continue
            data = self.store.read_bytes(posixpath.join(path, name))
            if set(wanted) <= set(pq.read_schema(io.BytesIO(data)).names):
                frames.append(pd.read_parquet(io.BytesIO(data), columns=wanted))
        if not frames:
            return pd.DataFrame({column: pd.Series([], dtype=object) for column in wanted})
        return pd.concat(frames, ignore_index=True)

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
        files = [
            name
            for name in self.store.list(path)
            if name.endswith(".parquet") and not name.startswith(_PREFERENCE_FILE_PREFIX)
        ]
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

    def preferences(self, dataset_id: str, split: str | None = None) -> pd.DataFrame:
        """The snapshot's preference pairs (of one split, when named), columns ``PREFERENCE_COLUMNS``
        as str, ordered by split then ``pair_id``; an empty frame with those columns when it has
        none. ``ArtifactMissing`` when the snapshot does not exist."""
        if not self.is_complete(dataset_id):
            raise ArtifactMissing(f"snapshot {dataset_id!r} does not exist or was never completely written")
        files = dict(self.manifest(dataset_id).get("preference_files") or {})
        path = dataset_path(dataset_id)
        frames = [
            pd.read_parquet(io.BytesIO(self.store.read_bytes(posixpath.join(path, str(name)))))
            for file_split, name in sorted(files.items())
            if split is None or file_split == split
        ]
        if not frames:
            return empty_preferences()
        frame = pd.concat(frames, ignore_index=True)
        missing = [column for column in PREFERENCE_COLUMNS if column not in frame.columns]
        if missing:
            raise ValueError(f"snapshot {dataset_id} preference pairs lack column(s) {missing}")
        frame = frame[list(PREFERENCE_COLUMNS)].astype(str)
        return frame.sort_values(["split", "pair_id"], kind="stable").reset_index(drop=True)
