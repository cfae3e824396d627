"""The optimized-artifact gate (issue 21): the int8 ONNX export Triton serves may lose at most
``max_optimized_accuracy_drop`` accuracy against its float twin on the same test set."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import pytest

from llmops_evaluation.domain import ports
from llmops_evaluation.domain.evaluation import evaluate
from llmops_evaluation.domain.metrics import Predictions, quality_metrics
from llmops_evaluation.domain.policy import Evidence, Policy, decide, load_policy
from llmops_events.v1 import Decision

REPO = Path(__file__).resolve().parents[4]
N = 1000


def _quality(accuracy: float):
    correct = round(accuracy * N)
    truth = ["a", "b"] * (N // 2)
    predicted = [t if i < correct else ("b" if t == "a" else "a") for i, t in enumerate(truth)]
    return quality_metrics(Predictions(true_labels=truth, predicted_labels=predicted, confidences=[0.9] * N))


def _evidence(float_accuracy: float, optimized_accuracy: float | None) -> Evidence:
    return Evidence(candidate=_quality(float_accuracy), latency_p95_ms=5.0, optimized_accuracy=optimized_accuracy)


POLICY = Policy(max_optimized_accuracy_drop=0.003)


def test_the_default_policy_allows_at_most_three_tenths_of_a_point() -> None:
    assert load_policy(REPO / "deploy" / "policies" / "default.yaml").max_optimized_accuracy_drop == 0.003


@pytest.mark.parametrize(
    ("optimized", "approved"),
    [(0.940, True), (0.937, True), (0.936, False), (0.90, False), (0.95, True), (None, True)],
)
def test_the_gate_refuses_an_optimized_artifact_losing_more_than_the_threshold(
    optimized: float | None, approved: bool
) -> None:
    decision, reasons = decide(POLICY, _evidence(0.940, optimized))
    assert (decision == Decision.APPROVED) is approved
    if not approved:
        (reason,) = reasons
        assert reason.rule == "max_optimized_accuracy_drop"
        assert reason.threshold == 0.003
        assert reason.observed == pytest.approx(0.940 - (optimized or 0), abs=1e-4)
        assert "float twin" in reason.message


def test_without_the_rule_any_loss_is_accepted() -> None:
    decision, reasons = decide(Policy(max_optimized_accuracy_drop=None), _evidence(0.94, 0.5))
    assert decision == Decision.APPROVED and reasons == []


class _Fixed:
    """A scorer answering fixed labels (pure logic: the gate's arithmetic, not a model)."""

    def __init__(self, answers: Sequence[str]) -> None:
        self.answers = list(answers)

    def predict(self, texts: Sequence[str]) -> tuple[list[str], list[float]]:
        return self.answers[: len(texts)], [0.9] * len(texts)

    def latencies_ms(self, texts: Sequence[str]) -> list[float]:
        return [1.0] * len(texts)


def test_evaluate_scores_the_optimized_format_on_the_same_texts_as_its_float_twin() -> None:
    labels = ["a", "b"] * 500
    test_set = ports.TestSet(texts=[f"text {i}" for i in range(N)], labels=labels)
    float_answers = list(labels)  # 1.000
    good = list(labels)
    good[:3] = ["b", "a", "b"]  # 0.997: a loss of 0.003, at the limit
    lossy = list(labels)
    lossy[:4] = ["b", "a", "b", "a"]  # 0.996

    kept = evaluate(
        candidate=_Fixed(float_answers),
        champion=None,
        test_set=test_set,
        policy=POLICY,
        latency_examples=2,
        seed=1,
        optimized=_Fixed(good),
    )
    assert kept.decision == Decision.APPROVED
    assert kept.optimized_summary() == {"optimized_accuracy": 0.997, "optimized_accuracy_drop": pytest.approx(0.003)}

    refused = evaluate(
        candidate=_Fixed(float_answers),
        champion=None,
        test_set=test_set,
        policy=POLICY,
        latency_examples=2,
        seed=1,
        optimized=_Fixed(lossy),
    )
    assert refused.decision == Decision.REJECTED
    assert [r.rule for r in refused.reasons] == ["max_optimized_accuracy_drop"]

    plain = evaluate(
        candidate=_Fixed(float_answers), champion=None, test_set=test_set, policy=POLICY, latency_examples=2, seed=1
    )
    assert plain.optimized_accuracy is None and plain.optimized_summary() == {}
