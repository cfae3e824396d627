"""Publishing a snapshot (one Parquet file per split + ``manifest.json``) through the model kernel."""

from __future__ import annotations

from typing import Any

from llmops_ingestion.domain.snapshot import SnapshotManifest, Split
from llmops_models import snapshots
from llmops_storage import ArtifactStore


def split_files() -> dict[str, str]:
    return {split.value: snapshots.split_file_name(split.value) for split in Split}


def publish_snapshot(
    store: ArtifactStore, *, frame: Any, manifest: SnapshotManifest, preferences: Any = None
) -> tuple[str, str]:
    """Publish the folder atomically; returns the folder URI and the manifest URI.
    ``frame`` has a ``split`` column; ``preferences`` (a DataFrame of ``PREFERENCE_COLUMNS``) the
    preference pairs the manifest lists. A manifest without pairs has no preference fields."""
    document = manifest.model_dump(mode="json")
    for field in ("preference_files", "preference_counts"):
        if document.get(field) is None:
            document.pop(field, None)
    return snapshots.publish_snapshot(store, frame, document, preferences=preferences)
