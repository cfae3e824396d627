"""The Triton model repository on disk: one self-contained folder per deployed version.

A version is written into a staging folder beside the repository and renamed into place, so
Triton (and anyone listing the repository) never sees a half-written model.
"""

from __future__ import annotations

import json
import os
import shutil
import tempfile
import uuid
from dataclasses import dataclass
from pathlib import Path

from google.protobuf import text_format
from tritonclient.grpc import model_config_pb2 as mc

import llmops_fine_tuning.classifier as classifier_module
from llmops_fine_tuning.classifier import LABEL_MAP_FILE
from llmops_serving import (
    CONFIDENCE_OUTPUT,
    LABEL_OUTPUT,
    LABELS_PARAMETER,
    SCORES_OUTPUT,
    TEXT_INPUT,
    parse_triton_name,
    triton_name,
)

MODEL_SOURCE = Path(__file__).resolve().parents[1] / "triton_model" / "model.py"
CONFIG_FILE = "config.pbtxt"
_ARTIFACT_FILES_SKIPPED = frozenset({"_COMPLETE"})


@dataclass(frozen=True, slots=True)
class ServingOptions:
    """How Triton runs one version (``config.pbtxt``)."""

    instance_count: int = 1
    max_batch_size: int = 64
    dynamic_batching: bool = True
    max_queue_delay_us: int = 2000
    torch_threads: int = 0
    """Threads per instance; 0 leaves torch's default (all cores)."""


def model_config(name: str, labels: list[str], options: ServingOptions) -> mc.ModelConfig:
    """The Triton model configuration of a deployed classifier version."""
    config = mc.ModelConfig(
        name=name,
        backend="python",
        max_batch_size=options.max_batch_size,
        input=[mc.ModelInput(name=TEXT_INPUT, data_type=mc.TYPE_STRING, dims=[1])],
        output=[
            mc.ModelOutput(name=LABEL_OUTPUT, data_type=mc.TYPE_STRING, dims=[1]),
            mc.ModelOutput(name=CONFIDENCE_OUTPUT, data_type=mc.TYPE_FP32, dims=[1]),
            mc.ModelOutput(name=SCORES_OUTPUT, data_type=mc.TYPE_FP32, dims=[len(labels)]),
        ],
        instance_group=[mc.ModelInstanceGroup(count=options.instance_count, kind=mc.ModelInstanceGroup.KIND_CPU)],
    )
    if options.dynamic_batching:
        config.dynamic_batching.max_queue_delay_microseconds = options.max_queue_delay_us
    config.parameters[LABELS_PARAMETER].string_value = json.dumps(labels, ensure_ascii=False)
    config.parameters["torch_threads"].string_value = str(options.torch_threads)
    config.parameters["batch_size"].string_value = str(options.max_batch_size)
    return config


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
        labels = list(json.loads((artifact_folder / LABEL_MAP_FILE).read_text())["labels"])
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
            shutil.copy2(MODEL_SOURCE, version_dir / "model.py")
            shutil.copy2(Path(classifier_module.__file__), version_dir / "classifier.py")
            config = model_config(name, labels, options)
            (staging / CONFIG_FILE).write_text(text_format.MessageToString(config))
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
