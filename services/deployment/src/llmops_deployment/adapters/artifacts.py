"""The artifact store (verified versions and their datasets) and Triton's model repository folder
the versions are written into. Blocking: callers run the slow parts in a thread."""

from __future__ import annotations

import tempfile
from pathlib import Path

from llmops_deployment.errors import FailureReason, GoLiveFailed
from llmops_models import ArtifactMissing, ManifestMismatch, ModelRegistry
from llmops_models.kinds import ServingOptions, UnknownKind
from llmops_models.snapshots import SnapshotReader
from llmops_models.triton_repository import ModelRepository
from llmops_storage import ArtifactStore


class Artifacts:
    def __init__(self, store: ArtifactStore, repository: ModelRepository) -> None:
        self._store = store
        self._registry = ModelRegistry(store)
        self._repository = repository

    def published_versions(self, model_name: str) -> list[int]:
        return self._registry.published_versions(model_name)

    def uri(self, model_name: str, version: int) -> str:
        return self._registry.uri(model_name, version)

    def installed(self, model_name: str, version: int) -> bool:
        return self._repository.has(model_name, version)

    def install(self, model_name: str, version: int, options: ServingOptions) -> None:
        """Download the version, check every file against its manifest and write it into the
        model repository; ``GoLiveFailed`` (artifact_missing, artifact_corrupt) if it cannot be trusted,
        (kind_not_servable) if its kind has no Triton model."""
        with tempfile.TemporaryDirectory(prefix="deploy-") as scratch:
            folder = Path(scratch) / "model"
            try:
                self._registry.download_verified(model_name, version, folder)
            except ArtifactMissing as error:
                raise GoLiveFailed(FailureReason.ARTIFACT_MISSING, str(error), version=version) from error
            except ManifestMismatch as error:
                raise GoLiveFailed(FailureReason.ARTIFACT_CORRUPT, error.detail, version=version) from error
            try:
                self._repository.write(model_name, version, folder, options)
            except (UnknownKind, NotImplementedError) as error:
                raise GoLiveFailed(FailureReason.KIND_NOT_SERVABLE, str(error), version=version) from error

    def validation_texts(self, model_name: str, version: int, limit: int = 8) -> list[str]:
        """A few texts of the version's own validation split (none if they cannot be read)."""
        try:
            dataset_id = self._registry.manifest(model_name, version)["lineage"]["dataset_id"]
            frame = SnapshotReader(self._store).labelled(dataset_id, "validation")
            return [str(t) for t in frame["text"].head(limit)]
        except Exception:
            return []

    def installed_versions(self) -> dict[str, tuple[str, int]]:
        """Triton name → (model name, version) of every version in the model repository."""
        return self._repository.deployed()

    def uninstall(self, name: str) -> None:
        self._repository.remove(name)
