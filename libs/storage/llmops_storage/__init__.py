"""The artifact store over fsspec."""

from llmops_storage.artifacts import COMPLETE_MARKER, ArtifactStore, open_store

__all__ = ["COMPLETE_MARKER", "ArtifactStore", "open_store"]
