"""The fine-tuning service's pure decisions: request resolution, validation, versions, manifests."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest

from llmops_events.v1.training import Hyperparameters, TrainingRequested, TrainingTask
from llmops_fine_tuning.adapters.defaults import load_defaults
from llmops_fine_tuning.domain.lineage import build_lineage
from llmops_fine_tuning.domain.metrics import classification_metrics
from llmops_fine_tuning.domain.request import ResolvedHyperparameters, TrainingDefaults, TrainingLimits, resolve_job
from llmops_fine_tuning.domain.validation import DatasetSummary, check_dataset, check_task
from llmops_fine_tuning.errors import TrainingRejected
from llmops_fine_tuning.settings import FineTuningSettings
from llmops_models import build_manifest

DEFAULTS = TrainingDefaults(
    base_model="sentence-transformers/all-MiniLM-L6-v2",
    hyperparameters=ResolvedHyperparameters(
        lora_rank=8,
        lora_alpha=16,
        lora_dropout=0.1,
        target_modules=["query", "value"],
        learning_rate=2e-3,
        epochs=3,
        batch_size=32,
        max_length=64,
        seed=42,
    ),
    limits=TrainingLimits(base_models=["sentence-transformers/all-MiniLM-L6-v2", "/models/bert"]),
)


def _summary(train: dict[str, int], validation: dict[str, int] | None = None) -> DatasetSummary:
    counts = {"train": train, "validation": validation if validation is not None else dict.fromkeys(train, 2)}
    return DatasetSummary(dataset_id="ds-1", content_hash="sha256:abc", row_count=0, counts=counts)


def test_request_hyperparameters_override_only_what_they_set() -> None:
    request = TrainingRequested(model_name="intents", hyperparameters=Hyperparameters(lora_rank=4, epochs=0.5))
    job = resolve_job(request, request_id="req-1", correlation_id=None, defaults=DEFAULTS)
    assert job.hyperparameters.lora_rank == 4
    assert job.hyperparameters.epochs == 0.5
    assert job.hyperparameters.learning_rate == 2e-3
    assert job.hyperparameters.target_modules == ["query", "value"]
    assert job.base_model == DEFAULTS.base_model
    assert job.dataset_id is None  # the latest snapshot, looked up later
    assert job.correlation_id == "req-1"  # a request without one starts its own correlation


def test_request_base_model_and_dataset_win_over_defaults() -> None:
    request = TrainingRequested(model_name="intents", base_model="/models/bert", dataset_id="ds-7")
    job = resolve_job(request, request_id="req-1", correlation_id="corr-9", defaults=DEFAULTS)
    assert (job.base_model, job.dataset_id, job.correlation_id) == ("/models/bert", "ds-7", "corr-9")


def test_shipped_defaults_file_is_valid() -> None:
    defaults = load_defaults(FineTuningSettings().defaults_file)
    assert defaults.trainer.pooling == "mean"
    assert defaults.task is TrainingTask.SEQUENCE_CLASSIFICATION
    assert defaults.hyperparameters.max_length >= 32


def test_dataset_with_enough_examples_passes() -> None:
    check_dataset(_summary({"a": 8, "b": 9}), min_examples_per_label=8)


def test_too_few_examples_per_label_is_refused_with_reason() -> None:
    with pytest.raises(TrainingRejected) as caught:
        check_dataset(_summary({"a": 8, "b": 3}), min_examples_per_label=8)
    assert caught.value.reason == "too_few_examples"
    assert "b=3" in caught.value.detail
    assert not caught.value.retryable


def test_label_seen_only_in_validation_counts_as_zero_training_examples() -> None:
    with pytest.raises(TrainingRejected, match="too_few_examples"):
        check_dataset(_summary({"a": 10, "b": 10}, {"a": 2, "b": 2, "c": 1}), min_examples_per_label=5)


def test_single_label_and_missing_validation_are_refused() -> None:
    with pytest.raises(TrainingRejected, match="too_few_labels"):
        check_dataset(_summary({"a": 100}), min_examples_per_label=1)
    with pytest.raises(TrainingRejected, match="empty_validation_split"):
        check_dataset(_summary({"a": 10, "b": 10}, {}), min_examples_per_label=1)


def test_both_tasks_are_supported() -> None:
    check_task(TrainingTask.SEQUENCE_CLASSIFICATION)
    check_task(TrainingTask.CAUSAL_LM)


def test_labels_are_sorted_union_of_splits() -> None:
    assert _summary({"b": 1, "a": 1}, {"c": 1}).labels() == ["a", "b", "c"]


def test_metrics_accuracy_and_macro_f1() -> None:
    metrics = classification_metrics(["a", "a", "b", "b"], ["a", "b", "b", "b"], ["a", "b", "c"])
    assert metrics["accuracy"] == 0.75
    # F1(a) = 2*1/(2+1) = 2/3; F1(b) = 2*2/(2+3) = 4/5; c absent on both sides: not counted.
    assert metrics["macro_f1"] == pytest.approx((2 / 3 + 4 / 5) / 2)


def test_lineage_pins_data_model_code_and_hyperparameters() -> None:
    request = TrainingRequested(model_name="intents", dataset_id="ds-1")
    job = resolve_job(request, request_id="req-1", correlation_id=None, defaults=DEFAULTS)
    lineage = build_lineage(
        job, dataset_content_hash="sha256:d", base_model_weights_hash="sha256:w", code_version="git:abc"
    )
    assert lineage["dataset_id"] == "ds-1" and lineage["dataset_content_hash"] == "sha256:d"
    assert lineage["base_model_weights_hash"] == "sha256:w" and lineage["code_version"] == "git:abc"
    assert lineage["hyperparameters"]["seed"] == 42 and lineage["trainer"]["pooling"] == "mean"
    manifest = build_manifest(
        model_name="intents",
        version=3,
        kind="classifier",
        files={"b": "h2", "a": "h1"},
        lineage=lineage,
        metrics={"accuracy": 0.9},
        created_at=datetime(2026, 1, 1, tzinfo=UTC),
    )
    assert manifest["request_id"] == "req-1" and list(manifest["files"]) == ["a", "b"]
