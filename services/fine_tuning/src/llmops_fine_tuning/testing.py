"""Test and benchmark helpers: write a dataset snapshot in the ingestion service's format."""

from __future__ import annotations

import hashlib
import json
import tempfile
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from llmops_fine_tuning.adapters.datasets import MANIFEST_FILE, dataset_path
from llmops_storage import ArtifactStore


def write_snapshot(store: ArtifactStore, frame: Any, *, dataset_id: str, created_at: datetime | None = None) -> str:
    """Publish ``frame`` (columns ``text``, ``label``, ``split``; ``record_id`` added when missing)
    as the snapshot ``datasets/<dataset_id>/``: one Parquet file per split and ``manifest.json``."""
    frame = frame.copy()
    if "record_id" not in frame.columns:
        frame["record_id"] = [f"r-{i:06d}" for i in range(len(frame))]
    rows = frame.sort_values("record_id")[["record_id", "text", "label", "split"]].astype(str).values.tolist()
    content_hash = "sha256:" + hashlib.sha256(json.dumps(rows, ensure_ascii=False).encode()).hexdigest()
    created = created_at or datetime.now(UTC)
    files = {str(split): f"{split}.parquet" for split in sorted(frame["split"].unique())}
    manifest: dict[str, Any] = {
        "dataset_id": dataset_id,
        "created_at": created.isoformat(),
        "row_count": len(frame),
        "content_hash": content_hash,
        "label_counts": {str(k): int(v) for k, v in sorted(frame["label"].value_counts().items())},
        "split_counts": {str(k): int(v) for k, v in sorted(frame["split"].value_counts().items())},
        "files": files,
    }
    with tempfile.TemporaryDirectory(prefix="snapshot-") as staging:
        folder = Path(staging)
        for split, file_name in files.items():
            part = frame[frame["split"] == split].sort_values("record_id").reset_index(drop=True)
            part.to_parquet(folder / file_name, index=False)
        (folder / MANIFEST_FILE).write_text(json.dumps(manifest, indent=2, sort_keys=True))
        return store.publish_folder(folder, dataset_path(dataset_id))
