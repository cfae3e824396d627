"""The outside world as the service sees it: datasets in, trained folders out, versions published."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any, Protocol

from llmops_fine_tuning.domain.request import TrainingJob
from llmops_fine_tuning.domain.validation import DatasetSummary


@dataclass(frozen=True)
class LabelledTexts:
    texts: Sequence[str]
    labels: Sequence[str]

    def __len__(self) -> int:
        return len(self.texts)


@dataclass(frozen=True)
class TrainingData:
    """The splits a trainer needs and the label order (class index ``i`` is ``labels[i]``)."""

    train: LabelledTexts
    validation: LabelledTexts
    labels: list[str]


@dataclass(frozen=True)
class TrainingProgress:
    step: int
    total_steps: int
    epoch: float
    loss: float
    examples_per_second: float
    eta_seconds: float


@dataclass(frozen=True)
class TrainingResult:
    """What a trainer wrote into its output folder, and how it went."""

    metrics: dict[str, float]
    trainable_parameter_share: float
    wall_time_seconds: float
    base_model_weights_hash: str
    extra: dict[str, Any] = field(default_factory=dict)


ProgressCallback = Callable[[TrainingProgress], None]


class DatasetReader(Protocol):
    """Dataset snapshots written by the ingestion service."""

    def latest_dataset_id(self) -> str | None: ...

    def latest(self) -> tuple[str, datetime] | None:
        """The newest complete snapshot's id and creation time."""
        ...

    def summary(self, dataset_id: str) -> DatasetSummary | None:
        """Counts per split and label, or None when there is no complete snapshot of that id."""
        ...

    def load(self, dataset_id: str) -> TrainingData: ...


class Trainer(Protocol):
    """Trains one job and writes the model's files (not the manifest) into ``output``."""

    def train(
        self, job: TrainingJob, data: TrainingData, output: Path, *, on_progress: ProgressCallback
    ) -> TrainingResult: ...


class ModelRegistry(Protocol):
    """Model versions in the artifact store."""

    def next_version(self, model_name: str) -> int: ...

    def find_by_request(self, model_name: str, request_id: str) -> dict[str, Any] | None:
        """The manifest of a published version that served ``request_id``, if there is one."""
        ...

    def publish(self, model_name: str, version: int, folder: Path) -> str:
        """Publish ``folder`` as ``version``; raises ``FileExistsError`` when it is taken."""
        ...

    def uri(self, model_name: str, version: int) -> str: ...
