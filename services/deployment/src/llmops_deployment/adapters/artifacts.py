"""The artifact store (verified versions and their datasets), Triton's model repository folder the
versions are written into, and the causal-LM model's adapters folder (one LoRA adapter folder per
deployed version of kind ``causal_lm``). Blocking: callers run the slow parts in a thread."""

from __future__ import annotations

import json
import tempfile
from pathlib import Path
from typing import Any

from llmops_deployment.domain.generation import adapter_folder
from llmops_deployment.errors import FailureReason, GoLiveFailed
from llmops_models import ArtifactMissing, ManifestMismatch, ModelRegistry
from llmops_models.kinds import DEFAULT_KIND, ServingOptions, TritonModel, UnknownKind
from llmops_models.kinds.causal_lm.conversations import InvalidConversation, parse_messages, prompt_turns
from llmops_models.snapshots import SnapshotReader
from llmops_models.triton_repository import AdapterRepository, ModelRepository
from llmops_serving import parse_triton_name
from llmops_storage import ArtifactStore

ADAPTER_DIR = AdapterRepository.ADAPTER_DIR
"""The artifact's LoRA adapter folder (PEFT ``adapter_config.json`` + ``adapter_model.safetensors``)."""
WEIGHT_DIRS = (ADAPTER_DIR, "encoder")
"""Where an artifact keeps what training changed: a LoRA adapter, or a classifier's encoder fine-tuned in full."""
TRAINING_CONFIG_FILE = "training_config.json"
MESSAGES_COLUMN = "messages_json"


class Artifacts:
    def __init__(
        self, store: ArtifactStore, repository: ModelRepository, adapters: AdapterRepository | None = None
    ) -> None:
        self._store = store
        self._registry = ModelRegistry(store)
        self._repository = repository
        self._adapters = adapters
        """Where the causal-LM model finds adapters (None: this service deploys no causal_lm)."""
        self._kinds: dict[tuple[str, int], str] = {}

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

    def kind(self, model_name: str, version: int) -> str | None:
        """The model kind its manifest records (None when it cannot be read); published versions
        never change, so the answer is kept."""
        key = (model_name, version)
        if key not in self._kinds:
            try:
                self._kinds[key] = str(self._registry.manifest(model_name, version).get("kind") or DEFAULT_KIND)
            except (OSError, ValueError):
                return None
        return self._kinds[key]

    def fetch(self, model_name: str, version: int, folder: Path) -> dict[str, Any]:
        """Download the version into ``folder``, every file checked against its manifest; returns
        its ``training_config.json``. ``GoLiveFailed`` (artifact_missing, artifact_corrupt) if it
        cannot be trusted or has no trained weights."""
        try:
            self._registry.download_verified(model_name, version, folder)
        except ArtifactMissing as error:
            raise GoLiveFailed(FailureReason.ARTIFACT_MISSING, str(error), version=version) from error
        except ManifestMismatch as error:
            raise GoLiveFailed(FailureReason.ARTIFACT_CORRUPT, error.detail, version=version) from error
        if not any((folder / name).is_dir() for name in WEIGHT_DIRS):
            raise GoLiveFailed(
                FailureReason.ARTIFACT_MISSING, f"no {' or '.join(WEIGHT_DIRS)} folder of weights", version=version
            )
        try:
            return dict(json.loads((folder / TRAINING_CONFIG_FILE).read_text()))
        except (OSError, ValueError) as error:
            raise GoLiveFailed(
                FailureReason.ARTIFACT_CORRUPT, f"{TRAINING_CONFIG_FILE} cannot be read: {error}", version=version
            ) from error

    def write_model(self, name: str, model: TritonModel) -> None:
        """Write a Triton model that serves no single version (the causal-LM base) into the model
        repository, replacing one there."""
        self._repository.write_model(name, model)

    def _adapter_repository(self) -> AdapterRepository:
        if self._adapters is None:
            raise RuntimeError("no adapters folder configured for causal_lm versions")
        return self._adapters

    def adapter_installed(self, name: str) -> bool:
        return (adapter_folder(self._adapter_repository().root, name) / "adapter_config.json").is_file()

    def install_adapter(self, name: str, artifact_folder: Path) -> None:
        """Copy the artifact's verified ``adapter/`` folder to ``<adapters_dir>/<name>/``."""
        repository = self._adapter_repository()
        adapter_folder(repository.root, name)  # the name check, before anything is written
        repository.write(name, artifact_folder)

    def uninstall_adapter(self, name: str) -> None:
        """Remove an adapter folder (the causal-LM model evicts the adapter once it is idle)."""
        if self._adapters is not None:
            adapter_folder(self._adapters.root, name)
            self._adapters.remove(name)

    def installed_adapters(self) -> dict[str, tuple[str, int]]:
        """Adapter name → (model name, version) of every adapter folder."""
        if self._adapters is None:
            return {}
        parsed = {name: parse_triton_name(name) for name in self._adapters.names()}
        return {name: found for name, found in parsed.items() if found is not None}

    def conversations(self, model_name: str, version: int, limit: int) -> list[list[dict[str, str]]]:
        """The prompts (the turns before the reference answer) of up to ``limit`` conversations of
        the version's validation split (none when they cannot be read)."""
        try:
            dataset_id = self._registry.manifest(model_name, version)["lineage"]["dataset_id"]
            frame = SnapshotReader(self._store).labelled(str(dataset_id), "validation")
        except Exception:
            return []
        if MESSAGES_COLUMN not in frame.columns:
            return []
        found: list[list[dict[str, str]]] = []
        for value in frame[MESSAGES_COLUMN]:
            try:
                found.append(prompt_turns(parse_messages(value)))
            except InvalidConversation:
                continue
            if len(found) >= limit:
                break
        return found

    def installed_versions(self) -> dict[str, tuple[str, int]]:
        """Triton name → (model name, version) of every version in the model repository."""
        return self._repository.deployed()

    def uninstall(self, name: str) -> None:
        self._repository.remove(name)
