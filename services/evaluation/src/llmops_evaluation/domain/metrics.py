"""Quality metrics of one model on one labelled set: accuracy, F1, calibration, slices."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
from pydantic import BaseModel, ConfigDict
from sklearn.metrics import accuracy_score, f1_score


class Predictions(BaseModel):
    """What a model answered on an evaluation set, aligned with the true labels."""

    model_config = ConfigDict(frozen=True, arbitrary_types_allowed=True)

    true_labels: list[str]
    predicted_labels: list[str]
    confidences: list[float]
    """Probability of the predicted label."""
    slices: dict[str, list[str]] = {}
    """Slice membership per example, e.g. {"tenant": [...], "source": [...]}."""

    @property
    def correct(self) -> np.ndarray:
        return np.asarray(self.true_labels) == np.asarray(self.predicted_labels)


class QualityMetrics(BaseModel):
    model_config = ConfigDict(frozen=True)

    examples: int
    accuracy: float
    macro_f1: float
    per_label_f1: dict[str, float]
    expected_calibration_error: float
    slice_accuracy: dict[str, dict[str, float]]
    """Accuracy per slice value, per slice dimension (tenant, source)."""
    max_slice_gap: float
    """Largest accuracy gap between two values of one slice dimension: the fairness signal."""


def expected_calibration_error(confidences: Sequence[float], correct: Sequence[bool], bins: int = 15) -> float:
    """ECE: the example-weighted gap between confidence and accuracy over equal-width bins."""
    confidence = np.asarray(confidences, dtype=float)
    hits = np.asarray(correct, dtype=float)
    if confidence.size == 0:
        return 0.0
    edges = np.linspace(0.0, 1.0, bins + 1)
    # Right-closed bins so a confidence of exactly 1.0 lands in the last one.
    index = np.clip(np.digitize(confidence, edges[1:-1], right=True), 0, bins - 1)
    error = 0.0
    for b in range(bins):
        members = index == b
        if members.any():
            error += members.mean() * abs(confidence[members].mean() - hits[members].mean())
    return float(error)


def slice_accuracies(
    correct: np.ndarray, slices: dict[str, list[str]], min_size: int = 1
) -> dict[str, dict[str, float]]:
    result: dict[str, dict[str, float]] = {}
    for dimension, values in slices.items():
        column = np.asarray(values)
        result[dimension] = {
            str(value): float(correct[column == value].mean())
            for value in sorted(set(values))
            if (column == value).sum() >= min_size
        }
    return result


def quality_metrics(predictions: Predictions, *, min_slice_size: int = 20) -> QualityMetrics:
    """Every quality metric the policy can refer to, computed once."""
    truth, predicted = predictions.true_labels, predictions.predicted_labels
    labels = sorted(set(truth))
    per_label = f1_score(truth, predicted, labels=labels, average=None, zero_division=0)
    correct = predictions.correct
    slices = slice_accuracies(correct, predictions.slices, min_size=min_slice_size)
    gaps = [max(values.values()) - min(values.values()) for values in slices.values() if len(values) >= 2]
    return QualityMetrics(
        examples=len(truth),
        accuracy=float(accuracy_score(truth, predicted)) if truth else 0.0,
        macro_f1=float(f1_score(truth, predicted, labels=labels, average="macro", zero_division=0)) if truth else 0.0,
        per_label_f1={label: float(score) for label, score in zip(labels, per_label, strict=True)},
        expected_calibration_error=expected_calibration_error(predictions.confidences, correct.tolist()),
        slice_accuracy=slices,
        max_slice_gap=float(max(gaps, default=0.0)),
    )


def latency_percentiles(latencies_ms: Sequence[float]) -> dict[str, float]:
    if not latencies_ms:
        return {"p50_ms": 0.0, "p95_ms": 0.0}
    values = np.asarray(latencies_ms, dtype=float)
    return {"p50_ms": float(np.percentile(values, 50)), "p95_ms": float(np.percentile(values, 95))}
