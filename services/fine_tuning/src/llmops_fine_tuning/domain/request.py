"""From a ``training.requested`` event and the configured defaults to one fully resolved job,
within the policy's limits."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Literal, Self

from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

from llmops_events.v1.training import Hyperparameters, TrainingRequested, TrainingTask
from llmops_fine_tuning.errors import TrainingRejected


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
    method: Literal["lora", "full"] = "lora"
    """What trains besides the head: ``lora``, adapters on the frozen encoder (the artifact carries
    them, about 1 MiB for MiniLM), or ``full``, every weight of the encoder (the artifact carries the
    whole encoder, 87 MiB). The job's ``learning_rate`` is the rate of whichever trains, so full
    fine-tuning needs one about 40x smaller (5e-5 against 2e-3); the LoRA hyperparameters are then
    unused."""
    head_learning_rate: float = Field(default=1e-2, gt=0)
    head_dropout: float = Field(default=0.1, ge=0, lt=1)
    weight_decay: float = Field(default=0.01, ge=0)
    warmup_ratio: float = Field(default=0.06, ge=0, lt=1)
    bucket_batches: int = Field(default=50, ge=1)
    """Length bucketing: examples are sorted by length within windows of this many batches."""
    eval_batch_size: int = Field(default=128, ge=1)
    max_grad_norm: float = Field(default=1.0, gt=0)
    export_optimized: bool = True
    """Export the trained classifier to ONNX and int8 (what Triton serves on CPU; about 10 s per job
    on two cores). False: the artifact has no optimized format and is served by PyTorch (a GPU
    deployment, or a test that never serves on CPU)."""


class CausalLmTrainerPolicy(BaseModel):
    """How the service trains a causal LM (``tasks.causal-lm.trainer`` of the defaults file)."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    weight_decay: float = Field(default=0.0, ge=0)
    warmup_ratio: float = Field(default=0.06, ge=0, lt=1)
    bucket_batches: int = Field(default=50, ge=1)
    """Length bucketing: conversations are sorted by token length within windows of this many batches."""
    eval_batch_size: int = Field(default=16, ge=1)
    max_grad_norm: float = Field(default=1.0, gt=0)
    generation_eval_examples: int = Field(default=32, ge=0, le=10_000)
    """Validation conversations answered by greedy generation for ``exact_match`` (0: only the
    teacher-forced loss and token accuracy, which need no generation)."""
    max_new_tokens: int = Field(default=64, ge=1, le=1024)
    """Longest generated answer in that check."""
    precision: Literal["auto", "float32", "bfloat16"] = "auto"
    """Compute dtype of the forward passes (the LoRA weights and the optimizer stay float32):
    ``auto`` is bfloat16 where the device multiplies bfloat16 natively (a CUDA GPU that supports
    it, a CPU with AMX), float32 elsewhere."""
    attention: Literal["eager", "sdpa"] = "eager"
    """Attention kernel while training: on CPU, for conversations under a few hundred tokens, the
    plain one is faster forward and backward than PyTorch's fused one (measured: 11.3 against 9.2
    examples/s on BANKING77 conversations)."""
    lora_top_layers: int | None = Field(default=None, ge=1, le=1024)
    """LoRA adapters in the top N decoder layers only (None, or N at least the model's layer count:
    every layer). Gradients then stop
    below them, so the backward pass skips the lower layers: fewer layers train faster, and the
    upper layers are where a model's behaviour is shaped for a task."""
    dpo_min_pairs: int = Field(default=16, ge=1, le=1_000_000)
    """DPO runs after SFT only when the snapshot's training split has at least this many
    preference pairs; with fewer, the adapter is the SFT one (a few pairs move it by noise)."""
    dpo_max_pairs: int = Field(default=2000, ge=1, le=100_000)
    """At most this many training pairs (a seeded sample beyond it): the phase's length is bounded."""
    dpo_beta: float = Field(default=0.1, gt=0, le=10)
    """DPO's beta: how far the policy may move from the reference (the SFT adapter) per unit of
    preference; larger stays closer."""
    dpo_epochs: float = Field(default=2, gt=0, le=10)
    dpo_learning_rate: float = Field(default=5e-4, ge=1e-7, le=1e-2)
    """LoRA weights during DPO (AdamW, the warm-up and decay of SFT, a fresh optimizer)."""
    dpo_sft_weight: float = Field(default=0.0, ge=0, le=10)
    """Weight of a negative log-likelihood term on the chosen answers (per token) added to DPO's
    loss (RPO; TRL's ``rpo_alpha``): DPO alone can widen the margin by making both answers less
    likely, the corrected one included; 0 is plain DPO."""
    dpo_batch_size: int = Field(default=8, ge=1, le=64)
    """Pairs per step; each step runs both answers of each pair (2x rows)."""
    dpo_replay_weight: float = Field(default=0.0, ge=0, le=10)
    """Weight of the SFT loss on a batch of the snapshot's training conversations added to every
    DPO step (``dpo_batch_size`` conversations; 0: none): keeps what SFT taught while DPO pushes
    rejected answers down, which are often right answers to other prompts."""
    dpo_max_exact_match_drop: float | None = Field(default=0.05, ge=0, le=1)
    """DPO's guard: the DPO-tuned adapter is kept only if its validation ``exact_match`` (greedy
    answers to the first ``generation_eval_examples`` validation conversations) is at most this
    much below the SFT adapter's, measured on the same conversations before DPO; otherwise the
    job restores the SFT adapter and says so (``dpo_kept`` 0). None: no guard (and no second
    generation pass). Preference pairs can teach a model to avoid answers that are right for other
    prompts; the guard keeps such a collapse out of the artifact, before the evaluation gate."""


TRAINER_POLICIES: dict[TrainingTask, type[TrainerPolicy] | type[CausalLmTrainerPolicy]] = {
    TrainingTask.SEQUENCE_CLASSIFICATION: TrainerPolicy,
    TrainingTask.CAUSAL_LM: CausalLmTrainerPolicy,
}


PACKAGED_BASE_MODELS = ("sentence-transformers/all-MiniLM-L6-v2", "all-MiniLM-L6-v2", "default")
"""The names of the packaged MiniLM copy (``llmops_models``' ``resolve_base_model``)."""


class TrainingLimits(BaseModel):
    """What a request may ask for (``limits`` of the defaults file). A job beyond them is refused
    before it starts, with ``training.failed`` (retryable=false): a request for ``epochs: 1e9``
    would block the partition for ever, ``batch_size: 1e9`` would be killed for memory and
    redelivered in a crash loop, a forged ``base_model`` path would load anything on the disk."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    base_models: list[str] = Field(default_factory=lambda: list(PACKAGED_BASE_MODELS), min_length=1)
    """Allowed ``base_model`` values, compared as written (a Hugging Face id or a folder)."""
    max_epochs: float = Field(default=20, gt=0)
    max_batch_size: int = Field(default=256, ge=1)
    max_length: int = Field(default=512, ge=8)
    """Tokens per text; BERT-style encoders have 512 positions."""
    max_lora_rank: int = Field(default=64, ge=1)
    min_learning_rate: float = Field(default=1e-6, gt=0)
    max_learning_rate: float = Field(default=0.1, gt=0)
    max_train_examples: int = Field(default=200_000, ge=1)
    """Training rows of the dataset snapshot (checked once the snapshot is known)."""
    max_validation_examples: int = Field(default=50_000, ge=1)

    def violations(self, hp: ResolvedHyperparameters) -> list[str]:
        """One phrase per hyperparameter beyond the limits, naming the field, value and limit."""
        found: list[str] = []

        def above(field: str, value: float, limit: float, name: str) -> None:
            if not value <= limit:  # also catches NaN
                found.append(f"{field}={_number(value)} exceeds {name}={_number(limit)}")

        above("epochs", hp.epochs, self.max_epochs, "max_epochs")
        above("batch_size", hp.batch_size, self.max_batch_size, "max_batch_size")
        above("max_length", hp.max_length, self.max_length, "max_length")
        above("lora_rank", hp.lora_rank, self.max_lora_rank, "max_lora_rank")
        above("learning_rate", hp.learning_rate, self.max_learning_rate, "max_learning_rate")
        if not hp.learning_rate >= self.min_learning_rate:
            found.append(
                f"learning_rate={_number(hp.learning_rate)} is below "
                f"min_learning_rate={_number(self.min_learning_rate)}"
            )
        return found

    def check(self, hp: ResolvedHyperparameters, base_model: str) -> None:
        """Raise ``TrainingRejected`` unless the job is within the limits."""
        if base_model not in self.base_models:
            raise TrainingRejected(
                "base_model_not_allowed",
                f"base_model {base_model!r} is not one of the allowed base models {self.base_models} "
                "(limits.base_models in the defaults file)",
            )
        if violations := self.violations(hp):
            raise TrainingRejected(
                "hyperparameter_out_of_bounds", "; ".join(violations) + " (limits in the defaults file)"
            )


def _number(value: float) -> str:
    return str(value) if isinstance(value, int) else f"{value:g}"


class TaskDefaults(BaseModel):
    """The defaults and limits of one more task (``tasks.<task>`` of the defaults file): its own
    base model, hyperparameters, trainer policy (validated as that task's trainer reads it) and
    limits, base-model allow-list included."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    base_model: str
    hyperparameters: ResolvedHyperparameters
    trainer: dict[str, Any] = Field(default_factory=dict)
    limits: TrainingLimits


@dataclass(frozen=True)
class TaskSettings:
    """What a job of one task starts from: defaults, trainer policy and limits."""

    base_model: str
    hyperparameters: ResolvedHyperparameters
    trainer: TrainerPolicy | CausalLmTrainerPolicy
    limits: TrainingLimits


def _within_limits(
    where: str, base_model: str, hyperparameters: ResolvedHyperparameters, limits: TrainingLimits
) -> None:
    if base_model not in limits.base_models:
        raise ValueError(f"{where}base_model {base_model!r} is not in limits.base_models")
    if violations := limits.violations(hyperparameters):
        raise ValueError(f"{where}default hyperparameters beyond the limits: " + "; ".join(violations))


class TrainingDefaults(BaseModel):
    """The defaults file (``deploy/training/defaults.yaml``): the top-level section is for
    ``task`` (sequence classification), ``tasks`` holds one section per other task."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    base_model: str
    task: TrainingTask = TrainingTask.SEQUENCE_CLASSIFICATION
    hyperparameters: ResolvedHyperparameters
    trainer: TrainerPolicy = Field(default_factory=TrainerPolicy)
    limits: TrainingLimits = Field(default_factory=TrainingLimits)
    tasks: dict[TrainingTask, TaskDefaults] = Field(default_factory=dict)

    @model_validator(mode="after")
    def _defaults_within_limits(self) -> Self:
        _within_limits("", self.base_model, self.hyperparameters, self.limits)
        for task, section in self.tasks.items():
            if task == self.task:
                raise ValueError(f"tasks.{task.value}: the top-level section already is that task's")
            _within_limits(f"tasks.{task.value}: ", section.base_model, section.hyperparameters, section.limits)
            TRAINER_POLICIES[task].model_validate(section.trainer)
        return self

    def for_task(self, task: TrainingTask) -> TaskSettings | None:
        """The defaults, trainer policy and limits of ``task``; None when the file has none."""
        if task == self.task:
            return TaskSettings(self.base_model, self.hyperparameters, self.trainer, self.limits)
        section = self.tasks.get(task)
        if section is None:
            return None
        trainer = TRAINER_POLICIES[task].model_validate(section.trainer)
        return TaskSettings(section.base_model, section.hyperparameters, trainer, section.limits)


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
    trainer: TrainerPolicy | CausalLmTrainerPolicy
    reason: str
    evidence: dict[str, Any] = Field(default_factory=dict)
    requested_by: str = "unknown"
    time_limit_s: float | None = None
    """The trainer stops the job (``time_limit_exceeded``) once it has run this long; None: no limit."""


def merge_hyperparameters(defaults: ResolvedHyperparameters, requested: Hyperparameters) -> ResolvedHyperparameters:
    """The defaults, overridden by every field the request set."""
    overrides = requested.model_dump(exclude_none=True)
    return ResolvedHyperparameters.model_validate({**defaults.model_dump(), **overrides})


def resolve_job(
    request: TrainingRequested,
    *,
    request_id: str,
    correlation_id: str | None,
    defaults: TrainingDefaults,
    time_limit_s: float | None = None,
) -> TrainingJob:
    """The job a request asks for, with every default of its task filled in (dataset id may still
    be None).

    Raises ``TrainingRejected`` (``unsupported_task`` when the defaults file has no section for the
    task; ``base_model_not_allowed``, ``hyperparameter_out_of_bounds``, ``invalid_hyperparameters``)
    for a job beyond that task's limits."""
    settings = defaults.for_task(request.task)
    if settings is None:
        raise TrainingRejected(
            "unsupported_task", f"task {request.task.value!r} has no section in the defaults file (tasks)"
        )
    try:
        hyperparameters = merge_hyperparameters(settings.hyperparameters, request.hyperparameters)
    except ValidationError as error:  # valid as an event, not as a job (target_modules=[])
        problems = "; ".join(f"{'.'.join(map(str, e['loc']))}: {e['msg']}" for e in error.errors())
        raise TrainingRejected("invalid_hyperparameters", problems) from error
    base_model = request.base_model or settings.base_model
    settings.limits.check(hyperparameters, base_model)
    return TrainingJob(
        request_id=request_id,
        correlation_id=correlation_id or request_id,
        model_name=request.model_name,
        base_model=base_model,
        dataset_id=request.dataset_id,
        task=request.task,
        hyperparameters=hyperparameters,
        trainer=settings.trainer,
        reason=str(request.reason),
        evidence=dict(request.evidence),
        requested_by=request.requested_by,
        time_limit_s=time_limit_s,
    )
