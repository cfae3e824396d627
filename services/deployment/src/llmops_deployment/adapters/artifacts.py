"""The artifact store (verified versions and their datasets), Triton's model repository folder the
versions are written into, and the causal-LM model's adapters folder (one LoRA adapter folder per
deployed version of kind ``causal_lm``). Blocking: callers run the slow parts in a thread.

Everything is written into a staging folder beside its destination and renamed into place, so
Triton (and the causal-LM model loading an adapter) never sees half of one."""

from __future__ import annotations

import json
import os
import shutil
import tempfile
import uuid
from collections.abc import Callable
from pathlib import Path
from typing import Any

from google.protobuf import text_format

from llmops_deployment.domain.generation import adapter_folder
from llmops_deployment.errors import FailureReason, GoLiveFailed
from llmops_models import ArtifactMissing, ManifestMismatch, ModelRegistry
from llmops_models.kinds import DEFAULT_KIND, ServingOptions, TritonModel, UnknownKind
from llmops_models.kinds.causal_lm.conversations import InvalidConversation, parse_messages, prompt_turns
from llmops_models.snapshots import SnapshotReader
from llmops_models.triton_repository import CONFIG_FILE, ModelRepository
from llmops_serving import parse_triton_name
from llmops_storage import ArtifactStore

ADAPTER_DIR = "adapter"
"""The artifact's LoRA adapter folder (PEFT ``adapter_config.json`` + ``adapter_model.safetensors``)."""
TRAINING_CONFIG_FILE = "training_config.json"
MESSAGES_COLUMN = "messages_json"


class Artifacts:
    def __init__(self, store: ArtifactStore, repository: ModelRepository, adapters_dir: Path | None = None) -> None:
        self._store = store
        self._registry = ModelRegistry(store)
        self._repository = repository
        self.adapters_dir = adapters_dir
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
        cannot be trusted or has no adapter."""
        try:
            self._registry.download_verified(model_name, version, folder)
        except ArtifactMissing as error:
            raise GoLiveFailed(FailureReason.ARTIFACT_MISSING, str(error), version=version) from error
        except ManifestMismatch as error:
            raise GoLiveFailed(FailureReason.ARTIFACT_CORRUPT, error.detail, version=version) from error
        if not (folder / ADAPTER_DIR).is_dir():
            raise GoLiveFailed(FailureReason.ARTIFACT_MISSING, f"no {ADAPTER_DIR}/ folder", version=version)
        try:
            return dict(json.loads((folder / TRAINING_CONFIG_FILE).read_text()))
        except (OSError, ValueError) as error:
            raise GoLiveFailed(
                FailureReason.ARTIFACT_CORRUPT, f"{TRAINING_CONFIG_FILE} cannot be read: {error}", version=version
            ) from error

    def has_model(self, name: str) -> bool:
        """Whether a Triton model of this name is in the model repository."""
        return (self._repository.root / name / CONFIG_FILE).is_file()

    def write_model(self, name: str, model: TritonModel) -> None:
        """Write a Triton model that serves no single version (the causal-LM base) into the model
        repository as ``<name>/config.pbtxt`` and ``<name>/1/<files>``, replacing one there."""

        def fill(staging: Path) -> None:
            (staging / "1").mkdir()
            for file_name, source in model.files.items():
                shutil.copy2(source, staging / "1" / file_name)
            (staging / CONFIG_FILE).write_text(text_format.MessageToString(model.config))

        _publish(self._repository.root / name, fill)

    def _adapters(self) -> Path:
        if self.adapters_dir is None:
            raise RuntimeError("no adapters folder configured for causal_lm versions")
        return self.adapters_dir

    def adapter_installed(self, name: str) -> bool:
        return (adapter_folder(self._adapters(), name) / "adapter_config.json").is_file()

    def install_adapter(self, name: str, artifact_folder: Path) -> None:
        """Copy the artifact's verified ``adapter/`` folder to ``<adapters_dir>/<name>/``."""
        _publish(
            adapter_folder(self._adapters(), name), lambda staging: _copy_into(artifact_folder / ADAPTER_DIR, staging)
        )

    def uninstall_adapter(self, name: str) -> None:
        """Remove an adapter folder (the causal-LM model evicts the adapter once it is idle)."""
        if self.adapters_dir is not None:
            _remove(adapter_folder(self.adapters_dir, name))

    def installed_adapters(self) -> dict[str, tuple[str, int]]:
        """Adapter name → (model name, version) of every adapter folder."""
        found: dict[str, tuple[str, int]] = {}
        if self.adapters_dir is not None and self.adapters_dir.is_dir():
            for folder in self.adapters_dir.iterdir():
                parsed = parse_triton_name(folder.name)
                if parsed is not None and (folder / "adapter_config.json").is_file():
                    found[folder.name] = parsed
        return found

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


def _copy_into(source: Path, target: Path) -> None:
    shutil.copytree(source, target, dirs_exist_ok=True)


def _staging_dir(target: Path) -> Path:
    """A staging folder on the same file system as ``target`` (so the rename is atomic), outside
    the folder Triton or the model lists."""
    staging = target.parent.parent / f".{target.parent.name}-staging"
    staging.mkdir(parents=True, exist_ok=True)
    return staging


def _publish(target: Path, fill: Callable[[Path], None]) -> None:
    """``fill`` a fresh staging folder, then rename it to ``target`` (replacing one there)."""
    target.parent.mkdir(parents=True, exist_ok=True)
    staging_root = _staging_dir(target)
    staging = Path(tempfile.mkdtemp(prefix=f"{target.name}-", dir=staging_root))
    try:
        fill(staging)
        if target.exists():
            retired = staging_root / f"retired-{uuid.uuid4().hex}"
            os.rename(target, retired)
            os.rename(staging, target)
            shutil.rmtree(retired, ignore_errors=True)
        else:
            os.rename(staging, target)
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise


def _remove(target: Path) -> None:
    if target.exists():
        retired = _staging_dir(target) / f"retired-{uuid.uuid4().hex}"
        os.rename(target, retired)
        shutil.rmtree(retired, ignore_errors=True)
