"""Fail fast: what a dataset and a request must satisfy before any training starts."""

from __future__ import annotations

from collections.abc import Mapping

from pydantic import BaseModel, ConfigDict

from llmops_events.v1.training import TrainingTask
from llmops_fine_tuning.domain.request import TrainingLimits
from llmops_fine_tuning.errors import TrainingRejected

TRAIN = "train"
VALIDATION = "validation"
SUPPORTED_TASKS = frozenset({TrainingTask.SEQUENCE_CLASSIFICATION})


class DatasetSummary(BaseModel):
    """What a snapshot holds, per split and label, with its identity."""

    model_config = ConfigDict(frozen=True)

    dataset_id: str
    content_hash: str
    row_count: int
    counts: dict[str, dict[str, int]]
    """split → label → number of examples."""

    def labels(self) -> list[str]:
        """Every label of the snapshot, sorted: the class index order of the model."""
        return sorted({label for per_label in self.counts.values() for label in per_label})


def check_task(task: TrainingTask) -> None:
    if task not in SUPPORTED_TASKS:
        raise TrainingRejected("unsupported_task", f"task {task.value!r} is not supported yet")


def check_dataset(summary: DatasetSummary, *, min_examples_per_label: int) -> None:
    """Raise ``TrainingRejected`` unless every label has enough training examples and there is
    a validation split to report metrics on."""
    train: Mapping[str, int] = summary.counts.get(TRAIN, {})
    labels = summary.labels()
    if len(labels) < 2:
        raise TrainingRejected("too_few_labels", f"dataset {summary.dataset_id} has {len(labels)} label(s); need 2")
    short = {label: train.get(label, 0) for label in labels if train.get(label, 0) < min_examples_per_label}
    if short:
        listing = ", ".join(f"{label}={count}" for label, count in sorted(short.items())[:10])
        more = f" (+{len(short) - 10} more)" if len(short) > 10 else ""
        raise TrainingRejected(
            "too_few_examples",
            f"dataset {summary.dataset_id}: {len(short)} label(s) have fewer than {min_examples_per_label} "
            f"training examples: {listing}{more}",
        )
    if sum(summary.counts.get(VALIDATION, {}).values()) == 0:
        raise TrainingRejected("empty_validation_split", f"dataset {summary.dataset_id} has no validation rows")


def check_dataset_size(summary: DatasetSummary, limits: TrainingLimits) -> None:
    """Raise ``TrainingRejected`` (``dataset_too_large``) when a split has more rows than the
    policy allows: loading, tokenizing and evaluating it would outgrow memory or the time limit."""
    for split, limit, name in (
        (TRAIN, limits.max_train_examples, "max_train_examples"),
        (VALIDATION, limits.max_validation_examples, "max_validation_examples"),
    ):
        rows = sum(summary.counts.get(split, {}).values())
        if rows > limit:
            raise TrainingRejected(
                "dataset_too_large",
                f"dataset {summary.dataset_id}: the {split} split has {rows} examples, "
                f"more than {name}={limit} (limits in the defaults file)",
            )
