"""The version registry: ``models/<model_name>/<version>/`` folders in the artifact store.

Versions are 1, 2, 3... per model name, never reused; only complete (published) folders count, so
a crash mid-publish never exposes half a version.
"""

from __future__ import annotations

from collections.abc import Iterable
from pathlib import Path
from typing import Any

from llmops_models.layout import MODELS_PREFIX, is_valid_name, manifest_path, model_path
from llmops_models.manifest import ManifestMismatch, verify_folder
from llmops_storage import ArtifactStore


class ArtifactMissing(FileNotFoundError):
    """No complete artifact at a path (never published, or still being written)."""


def next_version(published: Iterable[str]) -> int:
    """One more than the highest published version folder name; names that are not integers
    (staging folders of a crashed write, stray files) do not count."""
    versions = [int(name) for name in published if name.isdigit()]
    return max(versions, default=0) + 1


class ModelRegistry:
    """Model versions over the artifact store."""

    def __init__(self, store: ArtifactStore) -> None:
        self.store = store

    def model_names(self) -> list[str]:
        return [name for name in self.store.list(MODELS_PREFIX) if is_valid_name(name)]

    def published_versions(self, model_name: str) -> list[int]:
        return sorted(
            int(name)
            for name in self.store.list(model_path(model_name))
            if name.isdigit() and int(name) > 0 and self.store.is_complete(model_path(model_name, int(name)))
        )

    def is_published(self, model_name: str, version: int) -> bool:
        return self.store.is_complete(model_path(model_name, version))

    def next_version(self, model_name: str) -> int:
        return next_version(str(version) for version in self.published_versions(model_name))

    def manifest(self, model_name: str, version: int) -> dict[str, Any]:
        path = manifest_path(model_name, version)
        if not self.store.exists(path):
            raise ArtifactMissing(f"{self.store.uri(path)} does not exist")
        return dict(self.store.read_json(path))

    def find_by_request(self, model_name: str, request_id: str) -> dict[str, Any] | None:
        """The manifest of the version trained for ``request_id``, if one was published."""
        for version in reversed(self.published_versions(model_name)):
            manifest = self.manifest(model_name, version)
            if manifest.get("request_id") == request_id:
                return manifest
        return None

    def publish(self, model_name: str, version: int, folder: Path) -> str:
        """Publish a finished local folder (manifest included) as ``version``; ``FileExistsError``
        when that number is taken."""
        return self.store.publish_folder(folder, model_path(model_name, version))

    def uri(self, model_name: str, version: int) -> str:
        return self.store.uri(model_path(model_name, version))

    def download_verified(self, model_name: str, version: int, folder: Path) -> dict[str, Any]:
        """Download a version into ``folder`` and check every file against its manifest; returns
        the manifest. ``ArtifactMissing`` or ``ManifestMismatch`` when it cannot be trusted."""
        path = model_path(model_name, version)
        if not self.store.is_complete(path):
            raise ArtifactMissing(f"{self.store.uri(path)} does not exist or was never completely written")
        self.store.download_folder(path, folder)
        try:
            return verify_folder(folder)
        except ManifestMismatch as error:
            raise ManifestMismatch(f"{self.store.uri(path)}: {error.detail}", files=error.files) from error
