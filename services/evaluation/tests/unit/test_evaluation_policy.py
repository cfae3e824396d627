"""The evaluation gate: metrics, the paired test on constructed cases, and every policy rule."""

from __future__ import annotations

import random
from pathlib import Path

import numpy as np
import pytest

from llmops_evaluation.domain.metrics import Predictions, expected_calibration_error, quality_metrics
from llmops_evaluation.domain.perturbations import PERTURBATIONS, perturb, perturbed_set
from llmops_evaluation.domain.policy import Evidence, Policy, decide, load_policy, policy_for
from llmops_evaluation.domain.statistics import compare
from llmops_events.v1 import Decision

REPO = Path(__file__).resolve().parents[4]


def _correctness(n: int, accuracy: float, seed: int) -> np.ndarray:
    rng = np.random.default_rng(seed)
    return rng.random(n) < accuracy


def _metrics(accuracy: float, n: int = 400, gap: float = 0.0):
    correct = round(accuracy * n)
    truth = ["a", "b"] * (n // 2)
    predicted = [t if i < correct else ("b" if t == "a" else "a") for i, t in enumerate(truth)]
    tenants = ["t1"] * (n // 2) + ["t2"] * (n // 2)
    return quality_metrics(
        Predictions(
            true_labels=truth, predicted_labels=predicted, confidences=[accuracy] * n, slices={"tenant": tenants}
        )
    )


class TestMetrics:
    def test_perfectly_calibrated_model_has_no_calibration_error(self) -> None:
        assert expected_calibration_error([0.8] * 10, [True] * 8 + [False] * 2) == pytest.approx(0.0)

    def test_overconfident_model_has_calibration_error(self) -> None:
        assert expected_calibration_error([1.0] * 10, [True] * 5 + [False] * 5) == pytest.approx(0.5)

    def test_quality_metrics_and_slice_gap(self) -> None:
        predictions = Predictions(
            true_labels=["x", "x", "y", "y"],
            predicted_labels=["x", "y", "y", "y"],
            confidences=[0.9] * 4,
            slices={"tenant": ["a", "a", "b", "b"]},
        )
        metrics = quality_metrics(predictions, min_slice_size=1)
        assert metrics.accuracy == 0.75
        assert metrics.per_label_f1["x"] == pytest.approx(2 / 3)
        assert metrics.slice_accuracy["tenant"] == {"a": 0.5, "b": 1.0}
        assert metrics.max_slice_gap == 0.5


class TestPairedComparison:
    def test_truly_worse_candidate_is_significantly_worse(self) -> None:
        champion = _correctness(2000, 0.90, seed=1)
        candidate = champion.copy()
        candidate[np.flatnonzero(champion)[:150]] = False  # loses 150 examples the champion got right
        comparison = compare(candidate, champion)
        assert comparison.significantly_worse(0.05)
        assert comparison.bootstrap_interval[1] < 0

    def test_truly_better_candidate_is_significantly_better(self) -> None:
        champion = _correctness(2000, 0.80, seed=2)
        candidate = champion.copy()
        candidate[np.flatnonzero(~champion)[:150]] = True
        comparison = compare(candidate, champion)
        assert comparison.significantly_better(0.05)
        assert comparison.bootstrap_interval[0] > 0

    def test_indistinguishable_candidate_is_neither(self) -> None:
        champion = _correctness(500, 0.85, seed=3)
        candidate = champion.copy()
        # Swap a few discordant pairs both ways: same accuracy up to noise.
        candidate[np.flatnonzero(champion)[:6]] = False
        candidate[np.flatnonzero(~champion)[:5]] = True
        comparison = compare(candidate, champion)
        assert not comparison.significantly_worse(0.05)
        assert not comparison.significantly_better(0.05)
        assert comparison.bootstrap_interval[0] < 0 < comparison.bootstrap_interval[1]

    def test_identical_models_have_p_value_one(self) -> None:
        correct = _correctness(100, 0.7, seed=4)
        assert compare(correct, correct).mcnemar_p_value == 1.0


class TestPolicy:
    def test_first_model_without_champion_is_judged_on_absolute_rules_only(self) -> None:
        decision, reasons = decide(Policy(min_accuracy=0.8), Evidence(candidate=_metrics(0.9), latency_p95_ms=5))
        assert decision is Decision.APPROVED and reasons == []

    @pytest.mark.parametrize(
        ("policy", "evidence_overrides", "rule"),
        [
            (Policy(min_accuracy=0.95), {}, "min_accuracy"),
            (Policy(min_macro_f1=0.95), {}, "min_macro_f1"),
            (
                Policy(max_calibration_error=0.0001, max_accuracy_drop=None),
                {"calibration": 0.5},
                "max_calibration_error",
            ),
            (Policy(max_latency_p95_ms=10), {"latency_p95_ms": 25.0}, "max_latency_p95_ms"),
            (Policy(min_robust_accuracy=0.8), {"robust_accuracy": 0.5}, "min_robust_accuracy"),
            (Policy(min_examples=1000), {}, "min_examples"),
        ],
    )
    def test_each_absolute_rule_rejects_with_its_reason(self, policy, evidence_overrides, rule) -> None:
        candidate = _metrics(0.9)
        if "calibration" in evidence_overrides:
            candidate = candidate.model_copy(update={"expected_calibration_error": evidence_overrides["calibration"]})
        evidence = Evidence(
            candidate=candidate,
            latency_p95_ms=evidence_overrides.get("latency_p95_ms", 5.0),
            robust_accuracy=evidence_overrides.get("robust_accuracy"),
        )
        decision, reasons = decide(policy, evidence)
        assert decision is Decision.REJECTED
        assert [r.rule for r in reasons] == [rule]
        assert reasons[0].message and reasons[0].observed is not None

    def test_slice_gap_rule(self) -> None:
        candidate = _metrics(0.9).model_copy(update={"max_slice_gap": 0.4})
        _, reasons = decide(Policy(max_slice_gap=0.3), Evidence(candidate=candidate, latency_p95_ms=1))
        assert [r.rule for r in reasons] == ["max_slice_gap"]

    def test_regression_against_champion_is_rejected_by_drop_and_by_test(self) -> None:
        champion_correct = _correctness(2000, 0.90, seed=5)
        candidate_correct = champion_correct.copy()
        candidate_correct[np.flatnonzero(champion_correct)[:100]] = False
        evidence = Evidence(
            candidate=_metrics(0.85),
            champion=_metrics(0.90),
            latency_p95_ms=1,
            comparison=compare(candidate_correct, champion_correct),
        )
        decision, reasons = decide(Policy(max_accuracy_drop=0.01), evidence)
        assert decision is Decision.REJECTED
        assert {r.rule for r in reasons} == {"max_accuracy_drop", "significantly_worse"}

    def test_noise_does_not_reject_or_promote_by_itself(self) -> None:
        champion_correct = _correctness(500, 0.85, seed=6)
        candidate_correct = champion_correct.copy()
        candidate_correct[np.flatnonzero(champion_correct)[:2]] = False
        evidence = Evidence(
            candidate=_metrics(0.846),
            champion=_metrics(0.85),
            latency_p95_ms=1,
            comparison=compare(candidate_correct, champion_correct),
        )
        assert decide(Policy(max_accuracy_drop=0.01), evidence)[0] is Decision.APPROVED
        _, reasons = decide(Policy(max_accuracy_drop=0.01, require_significant_improvement=True), evidence)
        assert [r.rule for r in reasons] == ["no_significant_improvement"]

    def test_policy_files_load_and_fall_back_to_default(self, tmp_path: Path) -> None:
        (tmp_path / "default.yaml").write_text("min_accuracy: 0.5\n")
        (tmp_path / "banking.yaml").write_text("min_accuracy: 0.9\nmax_latency_p95_ms: 50\n")
        assert policy_for("banking", tmp_path).min_accuracy == 0.9
        assert policy_for("other", tmp_path).min_accuracy == 0.5
        assert policy_for("other", tmp_path / "missing") == Policy()

    def test_repository_default_policy_is_valid(self) -> None:
        policy = load_policy(REPO / "deploy" / "policies" / "default.yaml")
        assert policy.min_accuracy is not None

    def test_unknown_rule_in_policy_file_is_an_error(self, tmp_path: Path) -> None:
        (tmp_path / "p.yaml").write_text("min_acuracy: 0.5\n")
        with pytest.raises(ValueError, match="min_acuracy"):
            load_policy(tmp_path / "p.yaml")


class TestPerturbations:
    def test_perturbations_are_seeded_and_change_text(self) -> None:
        texts = ["Where is my new card, please?"] * 6
        assert perturbed_set(texts, seed=1) == perturbed_set(texts, seed=1)
        assert any(p != t for p, t in zip(perturbed_set(texts, seed=1), texts, strict=True))

    @pytest.mark.parametrize("kind", PERTURBATIONS)
    def test_each_kind(self, kind: str) -> None:
        text = "I lost my card yesterday, can you block it?"
        assert isinstance(perturb(text, kind=kind, rng=random.Random(0)), str)
