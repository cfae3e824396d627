"""Model versions in the artifact store: ``models/<model_name>/<version>/``."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from llmops_fine_tuning.classifier import MANIFEST_FILE
from llmops_fine_tuning.domain.versions import next_version
from llmops_storage import ArtifactStore

MODELS_PREFIX = "models"


def model_path(model_name: str, version: int | None = None) -> str:
    return f"{MODELS_PREFIX}/{model_name}" + (f"/{version}" if version is not None else "")


class ArtifactModelRegistry:
    """``ModelRegistry`` over the artifact store. Only complete (published) folders count."""

    def __init__(self, store: ArtifactStore) -> None:
        self._store = store

    def published_versions(self, model_name: str) -> list[int]:
        return sorted(
            int(name)
            for name in self._store.list(model_path(model_name))
            if name.isdigit() and self._store.is_complete(model_path(model_name, int(name)))
        )

    def next_version(self, model_name: str) -> int:
        return next_version(str(version) for version in self.published_versions(model_name))

    def find_by_request(self, model_name: str, request_id: str) -> dict[str, Any] | None:
        for version in reversed(self.published_versions(model_name)):
            manifest = self._store.read_json(f"{model_path(model_name, version)}/{MANIFEST_FILE}")
            if manifest.get("request_id") == request_id:
                return dict(manifest)
        return None

    def publish(self, model_name: str, version: int, folder: Path) -> str:
        return self._store.publish_folder(folder, model_path(model_name, version))

    def uri(self, model_name: str, version: int) -> str:
        return self._store.uri(model_path(model_name, version))
