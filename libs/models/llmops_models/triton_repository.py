"""The Triton model repository on disk: one self-contained folder per deployed version, written
as the version's kind says (configuration and Python-backend files beside the artifact).

A version is written into a staging folder beside the repository and renamed into place, so
Triton (and anyone listing the repository) never sees a half-written model. Every folder named
after a model (or adapter) is checked to stay inside its root (``llmops_storage.inside``) before
anything is written, renamed or deleted: a name like ``../../victim__v1`` is refused, not obeyed.
"""

from __future__ import annotations

import os
import shutil
import tempfile
import uuid
from pathlib import Path

from google.protobuf import text_format

from llmops_models.kinds import ServingOptions, TritonModel, kind_of
from llmops_models.manifest import read_manifest
from llmops_serving import parse_triton_name, triton_name
from llmops_storage import inside

CONFIG_FILE = "config.pbtxt"
_ARTIFACT_FILES_SKIPPED = frozenset({"_COMPLETE"})


class ModelRepository:
    """Writes, lists and removes deployed versions under Triton's ``--model-repository``."""

    def __init__(self, root: Path) -> None:
        self.root = root
        self._staging = root.parent / f".{root.name}-staging"

    def path(self, model_name: str, version: int) -> Path:
        return inside(self.root, triton_name(model_name, version))

    def has(self, model_name: str, version: int) -> bool:
        return (self.path(model_name, version) / CONFIG_FILE).is_file()

    def write(
        self,
        model_name: str,
        version: int,
        artifact_folder: Path,
        options: ServingOptions,
        *,
        name: str | None = None,
    ) -> str:
        """Publish ``artifact_folder`` (a downloaded model version) as a Triton model; returns its
        Triton name. ``name`` overrides the default ``<model>__v<version>`` (benchmarks deploy one
        artifact under two configurations). Replaces an existing folder of the same name."""
        name = name or triton_name(model_name, version)
        inside(self.root, name)
        triton_model = kind_of(read_manifest(artifact_folder)).triton_model(name, artifact_folder, options)
        return self._publish(name, triton_model, artifact_folder)

    def write_model(self, name: str, triton_model: TritonModel) -> str:
        """Publish a Triton model that carries no artifact (the causal-LM base serving every
        version's adapter: ``CAUSAL_LM.base_triton_model``); returns its name. Replaces an existing
        folder of the same name."""
        return self._publish(name, triton_model, None)

    def _publish(self, name: str, triton_model: TritonModel, artifact_folder: Path | None) -> str:
        target = inside(self.root, name)
        self.root.mkdir(parents=True, exist_ok=True)
        self._staging.mkdir(parents=True, exist_ok=True)
        staging = Path(tempfile.mkdtemp(prefix=f"{name}-", dir=self._staging))
        try:
            version_dir = staging / "1"
            if artifact_folder is not None:
                shutil.copytree(
                    artifact_folder,
                    version_dir / "artifact",
                    ignore=lambda _dir, names: [n for n in names if n in _ARTIFACT_FILES_SKIPPED],
                )
            version_dir.mkdir(parents=True, exist_ok=True)
            for file_name, source in triton_model.files.items():
                shutil.copy2(source, version_dir / file_name)
            (staging / CONFIG_FILE).write_text(text_format.MessageToString(triton_model.config))
            if target.exists():  # same version rewritten (e.g. after a restart): swap, then delete the old one
                retired = self._staging / f"retired-{uuid.uuid4().hex}"
                os.rename(target, retired)
                os.rename(staging, target)
                shutil.rmtree(retired, ignore_errors=True)
            else:
                os.rename(staging, target)
            return name
        except BaseException:
            shutil.rmtree(staging, ignore_errors=True)
            raise

    def remove(self, name: str) -> None:
        target = inside(self.root, name)
        if target.exists():
            retired = self._staging / f"retired-{uuid.uuid4().hex}"
            self._staging.mkdir(parents=True, exist_ok=True)
            os.rename(target, retired)
            shutil.rmtree(retired, ignore_errors=True)

    def deployed(self) -> dict[str, tuple[str, int]]:
        """Triton name → (model name, version) of every deployed version on disk."""
        found: dict[str, tuple[str, int]] = {}
        if self.root.is_dir():
            for folder in self.root.iterdir():
                parsed = parse_triton_name(folder.name)
                if parsed is not None and (folder / CONFIG_FILE).is_file():
                    found[folder.name] = parsed
        return found


class AdapterRepository:
    """The LoRA adapters the causal-LM base model serves: one ``<root>/<name>/`` PEFT folder per
    deployed version (``root`` is the base model's ``adapters_dir`` parameter). Written into a
    staging folder and renamed, so the model never loads half an adapter."""

    ADAPTER_DIR = "adapter"
    """Where an artifact folder keeps its adapter."""

    def __init__(self, root: Path) -> None:
        self.root = root
        self._staging = root.parent / f".{root.name}-staging"

    def write(self, name: str, artifact_folder: Path) -> Path:
        """Publish ``artifact_folder/adapter/`` as the adapter ``name``; returns its folder."""
        target = inside(self.root, name)
        source = artifact_folder / self.ADAPTER_DIR
        if not (source / "adapter_config.json").is_file():
            raise FileNotFoundError(f"{source} holds no adapter_config.json: not a LoRA adapter")
        self.root.mkdir(parents=True, exist_ok=True)
        self._staging.mkdir(parents=True, exist_ok=True)
        staging = Path(tempfile.mkdtemp(prefix=f"{name}-", dir=self._staging))
        try:
            shutil.copytree(source, staging / name)
            if target.exists():
                retired = self._staging / f"retired-{uuid.uuid4().hex}"
                os.rename(target, retired)
                os.rename(staging / name, target)
                shutil.rmtree(retired, ignore_errors=True)
            else:
                os.rename(staging / name, target)
            return target
        finally:
            shutil.rmtree(staging, ignore_errors=True)

    def remove(self, name: str) -> None:
        target = inside(self.root, name)
        if target.exists():
            self._staging.mkdir(parents=True, exist_ok=True)
            retired = self._staging / f"retired-{uuid.uuid4().hex}"
            os.rename(target, retired)
            shutil.rmtree(retired, ignore_errors=True)

    def names(self) -> list[str]:
        """The adapters on disk."""
        if not self.root.is_dir():
            return []
        return sorted(f.name for f in self.root.iterdir() if (f / "adapter_config.json").is_file())
