"""Fine-tuning jobs: requests, progress and outcomes, all keyed by model name."""

from __future__ import annotations

from datetime import datetime
from enum import StrEnum
from typing import Any, ClassVar

from pydantic import BaseModel, ConfigDict, Field

from llmops_events import topics
from llmops_events.base import EventData
from llmops_events.names import DatasetId, ModelName, ModelVersion


class TrainingReason(StrEnum):
    MANUAL = "manual"
    DRIFT = "drift"
    QUALITY = "quality"
    SCHEDULE = "schedule"
    NEW_DATA = "new-data"


class TrainingTask(StrEnum):
    SEQUENCE_CLASSIFICATION = "sequence-classification"
    CAUSAL_LM = "causal-lm"


class Hyperparameters(BaseModel):
    """LoRA fine-tuning hyperparameters; every field left out takes the service's configured default."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    lora_rank: int | None = Field(default=None, ge=1, le=256)
    lora_alpha: float | None = Field(default=None, gt=0)
    lora_dropout: float | None = Field(default=None, ge=0, lt=1)
    target_modules: list[str] | None = None
    learning_rate: float | None = Field(default=None, gt=0)
    epochs: float | None = Field(default=None, gt=0)
    batch_size: int | None = Field(default=None, ge=1)
    max_length: int | None = Field(default=None, ge=8)
    seed: int | None = None


class _TrainingEvent(EventData):
    topic: ClassVar[str] = topics.TRAINING
    key_field: ClassVar[str] = "model_name"

    model_name: ModelName
    """The served model's name; every version of it shares this name."""


class TrainingRequested(_TrainingEvent):
    """Someone or something asks for a new version of a model to be trained."""

    event_type: ClassVar[str] = "llmops.training.requested.v1"

    reason: TrainingReason = TrainingReason.MANUAL
    evidence: dict[str, Any] = Field(default_factory=dict)
    """Why: for drift or quality, the report URI and the breached signals."""

    base_model: str | None = None
    """Hugging Face model directory or id; None means the configured default (all-MiniLM-L6-v2)."""

    dataset_id: DatasetId | None = None
    """None means the latest snapshot."""

    task: TrainingTask = TrainingTask.SEQUENCE_CLASSIFICATION
    hyperparameters: Hyperparameters = Field(default_factory=Hyperparameters)
    requested_by: str = "unknown"


class TrainingStarted(_TrainingEvent):
    event_type: ClassVar[str] = "llmops.training.started.v1"

    request_id: str
    """The event id of the request this job serves."""
    model_version: ModelVersion
    dataset_id: DatasetId
    worker: str


class TrainingProgressed(_TrainingEvent):
    event_type: ClassVar[str] = "llmops.training.progressed.v1"

    request_id: str
    model_version: int = Field(ge=1)
    step: int = Field(ge=0)
    total_steps: int = Field(ge=0)
    epoch: float = Field(ge=0)
    loss: float
    examples_per_second: float = Field(ge=0)
    eta_seconds: float = Field(ge=0)
    tokens_per_second: float | None = Field(default=None, ge=0)
    """Tokens seen (padding excluded) per second since the start; absent where the trainer does
    not count tokens."""


class TrainingCompleted(_TrainingEvent):
    event_type: ClassVar[str] = "llmops.training.completed.v1"

    request_id: str
    model_version: int = Field(ge=1)
    artifact_uri: str
    metrics: dict[str, float] = Field(default_factory=dict)
    """Validation metrics (accuracy, macro_f1, loss, ...)."""
    trainable_parameter_share: float = Field(ge=0, le=1)
    wall_time_seconds: float = Field(ge=0)
    lineage: dict[str, Any] = Field(default_factory=dict)
    """Dataset id and hash, base model id and weights hash, code version, full hyperparameters."""
    completed_at: datetime


class TrainingFailed(_TrainingEvent):
    event_type: ClassVar[str] = "llmops.training.failed.v1"

    request_id: str
    model_version: int | None = None
    reason: str = Field(examples=["dataset_not_found"])
    """Machine-readable reason code."""
    detail: str = ""
    """A sentence a person can read."""
    retryable: bool = False
