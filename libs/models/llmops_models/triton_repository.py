"""The Triton model repository on disk: one self-contained folder per deployed version, written
as the version's kind says (configuration and Python-backend files beside the artifact).

A version is written into a staging folder beside the repository and renamed into place, so
Triton (and anyone listing the repository) never sees a half-written model.
"""

from __future__ import annotations

import os
import shutil
import tempfile
import uuid
from pathlib import Path

from google.protobuf import text_format

from llmops_models.kinds import ServingOptions, kind_of
from llmops_models.manifest import read_manifest
from llmops_serving import parse_triton_name, triton_name

CONFIG_FILE = "config.pbtxt"
_ARTIFACT_FILES_SKIPPED = frozenset({"_COMPLETE"})


class ModelRepository:
    """Writes, lists and removes deployed versions under Triton's ``--model-repository``."""

    def __init__(self, root: Path) -> None:
        self.root = root
        self._staging = root.parent / f".{root.name}-staging"

    def path(self, model_name: str, version: int) -> Path:
        return self.root / triton_name(model_name, version)

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
        triton_model = kind_of(read_manifest(artifact_folder)).triton_model(name, artifact_folder, options)
        self.root.mkdir(parents=True, exist_ok=True)
        self._staging.mkdir(parents=True, exist_ok=True)
        staging = Path(tempfile.mkdtemp(prefix=f"{name}-", dir=self._staging))
        try:
            version_dir = staging / "1"
            shutil.copytree(
                artifact_folder,
                version_dir / "artifact",
                ignore=lambda _dir, names: [n for n in names if n in _ARTIFACT_FILES_SKIPPED],
            )
            for file_name, source in triton_model.files.items():
                shutil.copy2(source, version_dir / file_name)
            (staging / CONFIG_FILE).write_text(text_format.MessageToString(triton_model.config))
            target = self.root / name
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
        target = self.root / name
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
