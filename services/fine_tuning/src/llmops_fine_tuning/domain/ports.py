"""The outside world as the service sees it: datasets in, trained folders out, versions published."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any, Protocol

from llmops_fine_tuning.domain.request import TrainingJob
from llmops_fine_tuning.domain.validation import DatasetSummary
from llmops_models.kinds.causal_lm.preferences import PreferencePair


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
class Conversations:
    """Conversations, each a list of ``{"role", "content"}`` turns ending with the assistant's answer."""

    messages: Sequence[list[dict[str, str]]]

    def __len__(self) -> int:
        return len(self.messages)


@dataclass(frozen=True)
class InstructionData:
    """The splits of an instructions snapshot a causal-LM trainer needs."""

    train: Conversations
    validation: Conversations
    invalid_rows: int = 0
    """Rows left out because their ``messages_json`` cannot be read."""
    preferences_train: Sequence[PreferencePair] = ()
    """Preference pairs of the training split (DPO after SFT, when there are enough)."""
    preferences_validation: Sequence[PreferencePair] = ()
    """Preference pairs of the validation split (DPO's loss, reward margin and preference accuracy)."""
    invalid_pairs: int = 0
    """Preference rows left out: an unreadable prompt, an empty answer, two equal answers."""


@dataclass(frozen=True)
class TrainingProgress:
    step: int
    total_steps: int
    epoch: float
    loss: float
    examples_per_second: float
    eta_seconds: float
    tokens_per_second: float | None = None
    """Tokens (padding excluded) over the elapsed time; None where a trainer does not count them."""


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

    def latest_dataset_id(self, content: str = "records") -> str | None:
        """The newest complete snapshot holding ``content`` (``records`` or ``instructions``)."""
        ...

    def latest(self, content: str = "records") -> tuple[str, datetime] | None:
        """The newest complete snapshot holding ``content``: its id and creation time."""
        ...

    def summary(self, dataset_id: str) -> DatasetSummary | None:
        """Counts per split (and label), or None when there is no complete snapshot of that id."""
        ...

    def load(self, dataset_id: str) -> TrainingData | InstructionData:
        """Labelled texts, or conversations for an instructions snapshot."""
        ...


class Trainer(Protocol):
    """Trains one job and writes the model's files (not the manifest) into ``output``."""

    def train(
        self, job: TrainingJob, data: TrainingData | InstructionData, output: Path, *, on_progress: ProgressCallback
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
