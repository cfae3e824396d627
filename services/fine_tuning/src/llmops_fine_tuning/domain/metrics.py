"""Classification metrics, without numpy or scikit-learn, so they are trivially testable."""

from __future__ import annotations

from collections.abc import Sequence


def classification_metrics(truth: Sequence[str], predicted: Sequence[str], labels: Sequence[str]) -> dict[str, float]:
    """Accuracy and macro-F1 over ``labels`` (a label absent from both sides does not count)."""
    if len(truth) != len(predicted):
        raise ValueError("truth and predictions differ in length")
    if not truth:
        return {"accuracy": 0.0, "macro_f1": 0.0, "examples": 0.0}
    correct = sum(t == p for t, p in zip(truth, predicted, strict=True))
    f1_scores = []
    for label in labels:
        true_positive = sum(t == label and p == label for t, p in zip(truth, predicted, strict=True))
        actual = sum(t == label for t in truth)
        guessed = sum(p == label for p in predicted)
        if actual == 0 and guessed == 0:
            continue
        f1_scores.append(2 * true_positive / (actual + guessed))
    return {
        "accuracy": correct / len(truth),
        "macro_f1": sum(f1_scores) / len(f1_scores) if f1_scores else 0.0,
        "examples": float(len(truth)),
    }
