"""From a ``training.requested`` event and the configured defaults to one fully resolved job."""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel, ConfigDict, Field

from llmops_events.v1.training import Hyperparameters, TrainingRequested, TrainingTask


class ResolvedHyperparameters(BaseModel):
    """Every hyperparameter with a value: the request's where it set one, the default otherwise."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    lora_rank: int = Field(ge=1, le=256)
    lora_alpha: float = Field(gt=0)
    lora_dropout: float = Field(ge=0, lt=1)
    target_modules: list[str] = Field(min_length=1)
    learning_rate: float = Field(gt=0)
    epochs: float = Field(gt=0)
    batch_size: int = Field(ge=1)
    max_length: int = Field(ge=8)
    seed: int


class TrainerPolicy(BaseModel):
    """How the service trains, beyond what a request may choose. Recorded with every model."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    pooling: str = Field(default="mean", pattern="^mean$")
    """Only mean pooling is implemented: it is how sentence encoders were trained."""
    head_learning_rate: float = Field(default=1e-2, gt=0)
    head_dropout: float = Field(default=0.1, ge=0, lt=1)
    weight_decay: float = Field(default=0.01, ge=0)
    warmup_ratio: float = Field(default=0.06, ge=0, lt=1)
    bucket_batches: int = Field(default=50, ge=1)
    """Length bucketing: examples are sorted by length within windows of this many batches."""
    eval_batch_size: int = Field(default=128, ge=1)
    max_grad_norm: float = Field(default=1.0, gt=0)


class TrainingDefaults(BaseModel):
    """The defaults file (``deploy/training/defaults.yaml``)."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    base_model: str
    task: TrainingTask = TrainingTask.SEQUENCE_CLASSIFICATION
    hyperparameters: ResolvedHyperparameters
    trainer: TrainerPolicy = Field(default_factory=TrainerPolicy)


class TrainingJob(BaseModel):
    """Everything needed to train one model version, and to reproduce it."""

    model_config = ConfigDict(frozen=True)

    request_id: str
    correlation_id: str
    model_name: str
    base_model: str
    dataset_id: str | None
    """None until the latest snapshot is looked up."""
    task: TrainingTask
    hyperparameters: ResolvedHyperparameters
    trainer: TrainerPolicy
    reason: str
    evidence: dict[str, Any] = Field(default_factory=dict)
    requested_by: str = "unknown"


def merge_hyperparameters(defaults: ResolvedHyperparameters, requested: Hyperparameters) -> ResolvedHyperparameters:
    """The defaults, overridden by every field the request set."""
    overrides = requested.model_dump(exclude_none=True)
    return ResolvedHyperparameters.model_validate({**defaults.model_dump(), **overrides})


def resolve_job(
    request: TrainingRequested, *, request_id: str, correlation_id: str | None, defaults: TrainingDefaults
) -> TrainingJob:
    """The job a request asks for, with every default filled in (dataset id may still be None)."""
    return TrainingJob(
        request_id=request_id,
        correlation_id=correlation_id or request_id,
        model_name=request.model_name,
        base_model=request.base_model or defaults.base_model,
        dataset_id=request.dataset_id,
        task=request.task,
        hyperparameters=merge_hyperparameters(defaults.hyperparameters, request.hyperparameters),
        trainer=defaults.trainer,
        reason=str(request.reason),
        evidence=dict(request.evidence),
        requested_by=request.requested_by,
    )
