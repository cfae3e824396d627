"""One evaluation: score the candidate (and the champion) on the same examples, then decide."""

from __future__ import annotations

import numpy as np
from pydantic import BaseModel, ConfigDict

from llmops_evaluation.domain.metrics import Predictions, QualityMetrics, latency_percentiles, quality_metrics
from llmops_evaluation.domain.perturbations import perturbed_set
from llmops_evaluation.domain.policy import Evidence, Policy, decide
from llmops_evaluation.domain.ports import Scorer, TestSet
from llmops_evaluation.domain.statistics import PairedComparison, compare
from llmops_events.v1 import Decision, RuleFailure


class ModelReport(BaseModel):
    model_config = ConfigDict(frozen=True)

    quality: QualityMetrics
    latency: dict[str, float]
    robust_accuracy: float
    predictions: list[str]
    confidences: list[float]

    def summary(self) -> dict[str, object]:
        return {
            "accuracy": self.quality.accuracy,
            "macro_f1": self.quality.macro_f1,
            "expected_calibration_error": self.quality.expected_calibration_error,
            "robust_accuracy": self.robust_accuracy,
            "max_slice_gap": self.quality.max_slice_gap,
            "latency_p50_ms": self.latency["p50_ms"],
            "latency_p95_ms": self.latency["p95_ms"],
            "examples": self.quality.examples,
            "per_label_f1": self.quality.per_label_f1,
            "slice_accuracy": self.quality.slice_accuracy,
        }


class Verdict(BaseModel):
    model_config = ConfigDict(frozen=True)

    decision: Decision
    reasons: list[RuleFailure]
    candidate: ModelReport
    champion: ModelReport | None
    comparison: PairedComparison | None
    optimized_accuracy: float | None = None
    """The candidate's optimized serving format (int8 ONNX) on the same test set, when it has one."""

    def optimized_summary(self) -> dict[str, float]:
        if self.optimized_accuracy is None:
            return {}
        return {
            "optimized_accuracy": self.optimized_accuracy,
            "optimized_accuracy_drop": self.candidate.quality.accuracy - self.optimized_accuracy,
        }


def score(scorer: Scorer, test_set: TestSet, *, latency_examples: int, seed: int) -> ModelReport:
    predicted, confidences = scorer.predict(test_set.texts)
    quality = quality_metrics(
        Predictions(
            true_labels=test_set.labels, predicted_labels=predicted, confidences=confidences, slices=test_set.slices
        )
    )
    noisy_predicted, _ = scorer.predict(perturbed_set(test_set.texts, seed=seed))
    robust = float(np.mean(np.asarray(noisy_predicted) == np.asarray(test_set.labels))) if test_set.texts else 0.0
    latency = latency_percentiles(scorer.latencies_ms(test_set.texts[:latency_examples]))
    return ModelReport(
        quality=quality, latency=latency, robust_accuracy=robust, predictions=predicted, confidences=confidences
    )


def evaluate(
    *,
    candidate: Scorer,
    champion: Scorer | None,
    test_set: TestSet,
    policy: Policy,
    latency_examples: int,
    seed: int,
    optimized: Scorer | None = None,
) -> Verdict:
    """Score both models on ``test_set`` and apply ``policy``; ``optimized`` is the candidate's
    optimized serving format, judged against the candidate (its float twin) on the same texts."""
    candidate_report = score(candidate, test_set, latency_examples=latency_examples, seed=seed)
    optimized_accuracy = None
    if optimized is not None and test_set.texts:
        optimized_predicted, _ = optimized.predict(test_set.texts)
        optimized_accuracy = float(np.mean(np.asarray(optimized_predicted) == np.asarray(test_set.labels)))
    champion_report = comparison = None
    if champion is not None:
        champion_report = score(champion, test_set, latency_examples=latency_examples, seed=seed)
        truth = np.asarray(test_set.labels)
        comparison = compare(
            np.asarray(candidate_report.predictions) == truth,
            np.asarray(champion_report.predictions) == truth,
            seed=seed,
        )
    evidence = Evidence(
        candidate=candidate_report.quality,
        latency_p95_ms=candidate_report.latency["p95_ms"],
        robust_accuracy=candidate_report.robust_accuracy,
        champion=champion_report.quality if champion_report else None,
        comparison=comparison,
        optimized_accuracy=optimized_accuracy,
    )
    decision, reasons = decide(policy, evidence)
    return Verdict(
        decision=decision,
        reasons=reasons,
        candidate=candidate_report,
        champion=champion_report,
        comparison=comparison,
        optimized_accuracy=optimized_accuracy,
    )
