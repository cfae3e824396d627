"""The artifact store over fsspec."""

from llmops_storage.artifacts import COMPLETE_MARKER, ArtifactStore, open_store
from llmops_storage.paths import PathOutsideRoot, inside

__all__ = ["COMPLETE_MARKER", "ArtifactStore", "PathOutsideRoot", "inside", "open_store"]
