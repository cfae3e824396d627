"""The seam between the platform and a kind of model.

A *kind* is everything that differs between kinds of model; the services ask the kind and never
spell a kind's shape themselves. The artifact's ``manifest.json`` names its kind (``kind``;
artifacts written before kinds existed are classifiers), so every service finds the right one
with ``kind_of(manifest)``.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol


@dataclass(frozen=True, slots=True)
class ServingOptions:
    """How Triton runs one version (``config.pbtxt``)."""

    instance_count: int = 1
    max_batch_size: int = 64
    dynamic_batching: bool = True
    max_queue_delay_us: int = 2000
    torch_threads: int = 0
    """Threads per instance; 0: the kind's default (all cores)."""
    instance_kind: str = "KIND_CPU"
    """Triton ``instance_group`` kind: ``KIND_CPU``, or ``KIND_GPU`` (the model on CUDA) where a GPU exists."""
    runtime: str = "auto"
    """What runs the model: ``onnx`` (the artifact's optimized export under ONNX Runtime), ``torch``,
    or ``auto``: ONNX on CPU when the artifact has an export, PyTorch otherwise (and on GPU)."""
    preferred_batch_sizes: tuple[int, ...] = ()
    """Batch sizes the dynamic batcher aims for (Triton's ``preferred_batch_size``); empty: none."""


class Predictor(Protocol):
    """A loaded model version, in-process (evaluation, monitoring references)."""

    def predict(self, texts: Sequence[str]) -> tuple[list[str], list[float]]:
        """One answer and its confidence per text."""
        ...


@dataclass(frozen=True, slots=True)
class TritonModel:
    """What a kind puts beside the artifact in a Triton version folder: the model configuration and
    the Python-backend files (destination name → source file)."""

    config: Any
    """``tritonclient.grpc.model_config_pb2.ModelConfig``."""
    files: Mapping[str, Path]


class ModelKind(Protocol):
    name: str
    """As recorded in manifests (``kind``), e.g. ``classifier``."""
    training_task: str
    """The ``training.requested`` task value this kind trains for."""
    evaluation_metrics: tuple[str, ...]
    """Metric names the evaluation gate reports for this kind (the policy's rules read them)."""
    canary_signals: tuple[str, ...]
    """What deployment watches while a canary serves."""
    monitoring_signals: tuple[str, ...]
    """The drift and quality signals monitoring computes for this kind."""

    def load_predictor(self, folder: Path, *, device: str = "cpu") -> Predictor:
        """Load a downloaded (and verified) artifact folder for in-process inference."""
        ...

    def triton_model(self, name: str, folder: Path, options: ServingOptions) -> TritonModel:
        """The Triton model serving the artifact in ``folder`` under the Triton name ``name``."""
        ...

    def load_optimized_predictor(self, folder: Path) -> Predictor | None:
        """The artifact's optimized serving format loaded for in-process inference (what Triton
        serves on CPU), for the evaluation gate to compare with its float twin; None without one."""
        ...

    def optimize(self, folder: Path) -> dict[str, Any] | None:
        """Add the kind's optimized serving format to a freshly trained artifact folder, before its
        manifest is written (the classifier: ONNX, int8); what ``optimized.json`` says, or None."""
        ...
