"""Fail fast: what a dataset and a request must satisfy before any training starts."""

from __future__ import annotations

from collections.abc import Mapping

from pydantic import BaseModel, ConfigDict, Field

from llmops_events.v1.training import TrainingTask
from llmops_fine_tuning.domain.request import TrainingLimits
from llmops_fine_tuning.errors import TrainingRejected
from llmops_models.kinds.causal_lm.conversations import INSTRUCTIONS_CONTENT, RECORDS_CONTENT

TRAIN = "train"
VALIDATION = "validation"
SUPPORTED_TASKS = frozenset({TrainingTask.SEQUENCE_CLASSIFICATION, TrainingTask.CAUSAL_LM})
CONTENT_FOR_TASK = {
    TrainingTask.SEQUENCE_CLASSIFICATION: RECORDS_CONTENT,
    TrainingTask.CAUSAL_LM: INSTRUCTIONS_CONTENT,
}
"""What each task trains on: labelled texts, or conversations (instructions snapshots)."""


class DatasetSummary(BaseModel):
    """What a snapshot holds, per split and label, with its identity."""

    model_config = ConfigDict(frozen=True)

    dataset_id: str
    content_hash: str
    row_count: int
    counts: dict[str, dict[str, int]]
    """split → label → number of examples (labelled snapshots; empty for instructions)."""
    content: str = RECORDS_CONTENT
    """``records`` (texts with labels) or ``instructions`` (conversations)."""
    split_rows: dict[str, int] = Field(default_factory=dict)
    """split → usable rows (instructions snapshots: conversations that parse)."""
    invalid_rows: int = 0
    """Rows left out because they cannot be read (instructions: an unreadable ``messages_json``)."""

    def rows(self, split: str) -> int:
        if split in self.split_rows:
            return self.split_rows[split]
        return sum(self.counts.get(split, {}).values())

    def labels(self) -> list[str]:
        """Every label of the snapshot, sorted: the class index order of the model."""
        return sorted({label for per_label in self.counts.values() for label in per_label})


def check_task(task: TrainingTask) -> None:
    if task not in SUPPORTED_TASKS:
        raise TrainingRejected("unsupported_task", f"task {task.value!r} is not supported yet")


def check_content(summary: DatasetSummary, task: TrainingTask) -> None:
    """Raise ``TrainingRejected`` (``dataset_content_mismatch``) unless the snapshot holds what the
    task trains on: a classifier cannot learn from conversations, nor a causal LM from labels alone."""
    expected = CONTENT_FOR_TASK[task]
    if summary.content != expected:
        raise TrainingRejected(
            "dataset_content_mismatch",
            f"dataset {summary.dataset_id} holds {summary.content} data; task {task.value} trains on {expected} "
            "snapshots",
        )


def check_instructions(summary: DatasetSummary, *, min_examples: int) -> None:
    """Raise ``TrainingRejected`` unless an instructions snapshot has enough readable training
    conversations and a validation split to report metrics on."""
    train = summary.rows(TRAIN)
    if train < min_examples:
        unreadable = (
            f" ({summary.invalid_rows} row(s) with unreadable messages_json left out)" if summary.invalid_rows else ""
        )
        raise TrainingRejected(
            "too_few_examples",
            f"dataset {summary.dataset_id} has {train} training conversation(s); need {min_examples}{unreadable}",
        )
    if summary.rows(VALIDATION) == 0:
        raise TrainingRejected("empty_validation_split", f"dataset {summary.dataset_id} has no validation rows")


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
        rows = summary.rows(split)
        if rows > limit:
            raise TrainingRejected(
                "dataset_too_large",
                f"dataset {summary.dataset_id}: the {split} split has {rows} examples, "
                f"more than {name}={limit} (limits in the defaults file)",
            )
