"""Writing a snapshot folder (one Parquet file per split + ``manifest.json``) to the artifact store."""

from __future__ import annotations

import json
import tempfile
from pathlib import Path
from typing import Any

from llmops_ingestion.domain.snapshot import SnapshotManifest, Split
from llmops_storage import ArtifactStore

MANIFEST_FILE = "manifest.json"


def snapshot_path(dataset_id: str) -> str:
    return f"datasets/{dataset_id}"


def split_files() -> dict[str, str]:
    return {split.value: f"{split.value}.parquet" for split in Split}


def publish_snapshot(store: ArtifactStore, *, frame: Any, manifest: SnapshotManifest) -> tuple[str, str]:
    """Write the split files and manifest locally, then publish the folder atomically.

    Returns the folder URI and the manifest URI. ``frame`` has a ``split`` column.
    """
    with tempfile.TemporaryDirectory(prefix="snapshot-") as staging:
        folder = Path(staging)
        for split, file_name in manifest.files.items():
            part = frame[frame["split"] == split].sort_values("record_id").reset_index(drop=True)
            part.to_parquet(folder / file_name, index=False)
        (folder / MANIFEST_FILE).write_text(json.dumps(manifest.model_dump(mode="json"), indent=2, sort_keys=True))
        uri = store.publish_folder(folder, snapshot_path(manifest.dataset_id))
    return uri, store.uri(f"{snapshot_path(manifest.dataset_id)}/{MANIFEST_FILE}")
