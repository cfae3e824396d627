"""The promotion policy: rules read from YAML, applied to the evidence, giving a decision and
every failed rule as a machine-readable reason with a sentence a person can read."""

from __future__ import annotations

from pathlib import Path

import yaml
from pydantic import BaseModel, ConfigDict, Field

from llmops_evaluation.domain.generative_policy import GenerativePolicy
from llmops_evaluation.domain.metrics import QualityMetrics
from llmops_evaluation.domain.statistics import PairedComparison
from llmops_events.v1 import Decision, RuleFailure


class Policy(BaseModel):
    """Thresholds a candidate must meet. A rule left out (None) is not applied."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    min_accuracy: float | None = Field(default=None, ge=0, le=1)
    min_macro_f1: float | None = Field(default=None, ge=0, le=1)
    max_accuracy_drop: float | None = Field(default=0.01, ge=0, le=1)
    """Largest accepted drop in accuracy against the champion (absolute)."""
    significance_level: float = Field(default=0.05, gt=0, lt=1)
    """Alpha of the paired McNemar test."""
    reject_if_significantly_worse: bool = True
    """Reject a candidate that the paired test finds worse than the champion, whatever the drop."""
    require_significant_improvement: bool = False
    """Approve only a candidate that the paired test finds better than the champion."""
    max_calibration_error: float | None = Field(default=None, ge=0, le=1)
    max_latency_p95_ms: float | None = Field(default=None, gt=0)
    min_robust_accuracy: float | None = Field(default=None, ge=0, le=1)
    """Accuracy on seeded typo/case/punctuation perturbations of the test set."""
    max_slice_gap: float | None = Field(default=None, ge=0, le=1)
    """Largest accuracy gap between tenants (or sources)."""
    min_examples: int = Field(default=20, ge=1)
    """Fewer test examples than this is not evidence."""
    max_optimized_accuracy_drop: float | None = Field(default=None, ge=0, le=1)
    """Largest accepted accuracy loss of the artifact's optimized serving format (the int8 ONNX
    export Triton serves on CPU) against its float twin, on the same test set (absolute)."""
    causal_lm: GenerativePolicy | None = None
    """The rules for generative (``causal_lm``) models; the rules above are the classifier's.
    Absent: ``GenerativePolicy``'s defaults."""

    def generative(self) -> GenerativePolicy:
        return self.causal_lm or GenerativePolicy()


class Evidence(BaseModel):
    """What the gate decides on: the candidate's numbers and, if there is one, the comparison with the champion."""

    model_config = ConfigDict(frozen=True)

    candidate: QualityMetrics
    latency_p95_ms: float
    robust_accuracy: float | None = None
    champion: QualityMetrics | None = None
    comparison: PairedComparison | None = None
    optimized_accuracy: float | None = None
    """Accuracy of the candidate's optimized serving format on the same test set; None without one."""


def load_policy(path: Path) -> Policy:
    """A policy file: YAML mapping of rule names to thresholds."""
    return Policy.model_validate(yaml.safe_load(path.read_text()) or {})


def policy_for(model_name: str, folder: Path) -> Policy:
    """``<folder>/<model_name>.yaml`` if present, else ``<folder>/default.yaml``, else built-in defaults."""
    for candidate in (folder / f"{model_name}.yaml", folder / "default.yaml"):
        if candidate.exists():
            return load_policy(candidate)
    return Policy()


def _at_least(rule: str, name: str, observed: float, threshold: float | None) -> RuleFailure | None:
    if threshold is None or observed >= threshold:
        return None
    return RuleFailure(
        rule=rule,
        observed=round(observed, 4),
        threshold=threshold,
        message=f"{name} {observed:.4f} is below the minimum {threshold}",
    )


def _at_most(rule: str, name: str, observed: float, threshold: float | None) -> RuleFailure | None:
    if threshold is None or observed <= threshold:
        return None
    return RuleFailure(
        rule=rule,
        observed=round(observed, 4),
        threshold=threshold,
        message=f"{name} {observed:.4f} is above the maximum {threshold}",
    )


def decide(policy: Policy, evidence: Evidence) -> tuple[Decision, list[RuleFailure]]:
    """Apply every rule; approved only when none fails."""
    candidate = evidence.candidate
    failures = [
        _at_least("min_examples", "test examples", candidate.examples, policy.min_examples),
        _at_least("min_accuracy", "accuracy", candidate.accuracy, policy.min_accuracy),
        _at_least("min_macro_f1", "macro-F1", candidate.macro_f1, policy.min_macro_f1),
        _at_most(
            "max_calibration_error",
            "expected calibration error",
            candidate.expected_calibration_error,
            policy.max_calibration_error,
        ),
        _at_most("max_latency_p95_ms", "p95 latency (ms)", evidence.latency_p95_ms, policy.max_latency_p95_ms),
        _at_most("max_slice_gap", "largest accuracy gap between slices", candidate.max_slice_gap, policy.max_slice_gap),
    ]
    if evidence.robust_accuracy is not None:
        failures.append(
            _at_least(
                "min_robust_accuracy",
                "accuracy under perturbations",
                evidence.robust_accuracy,
                policy.min_robust_accuracy,
            )
        )
    if evidence.optimized_accuracy is not None:
        failures.append(_optimized_rule(policy, evidence.candidate.accuracy, evidence.optimized_accuracy))
    failures.extend(_champion_rules(policy, evidence))
    reasons = [failure for failure in failures if failure is not None]
    return (Decision.REJECTED if reasons else Decision.APPROVED), reasons


def _optimized_rule(policy: Policy, float_accuracy: float, optimized_accuracy: float) -> RuleFailure | None:
    """The optimized artifact may lose at most ``max_optimized_accuracy_drop`` against its float twin."""
    drop = float_accuracy - optimized_accuracy
    if policy.max_optimized_accuracy_drop is None or drop <= policy.max_optimized_accuracy_drop + 1e-12:
        return None
    return RuleFailure(
        rule="max_optimized_accuracy_drop",
        observed=round(drop, 4),
        threshold=policy.max_optimized_accuracy_drop,
        message=(
            f"the optimized serving format loses {drop:.4f} accuracy against its float twin "
            f"({float_accuracy:.4f} → {optimized_accuracy:.4f}); the maximum is {policy.max_optimized_accuracy_drop}"
        ),
    )


def _champion_rules(policy: Policy, evidence: Evidence) -> list[RuleFailure | None]:
    comparison = evidence.comparison
    if evidence.champion is None or comparison is None:
        return []  # first deployment: nothing to regress against
    drop = -comparison.accuracy_difference
    alpha = policy.significance_level
    rules: list[RuleFailure | None] = []
    if policy.max_accuracy_drop is not None and drop > policy.max_accuracy_drop:
        rules.append(
            RuleFailure(
                rule="max_accuracy_drop",
                observed=round(drop, 4),
                threshold=policy.max_accuracy_drop,
                message=(
                    f"accuracy dropped by {drop:.4f} against the champion "
                    f"({evidence.champion.accuracy:.4f} → {evidence.candidate.accuracy:.4f}); "
                    f"the maximum is {policy.max_accuracy_drop}"
                ),
            )
        )
    if policy.reject_if_significantly_worse and comparison.significantly_worse(alpha):
        rules.append(
            RuleFailure(
                rule="significantly_worse",
                observed=round(comparison.mcnemar_p_value, 6),
                threshold=alpha,
                message=(
                    f"the candidate is worse than the champion on the same examples "
                    f"(McNemar p={comparison.mcnemar_p_value:.4g} < {alpha}; "
                    f"{comparison.champion_only_correct} examples only the champion got right, "
                    f"{comparison.candidate_only_correct} only the candidate)"
                ),
            )
        )
    if policy.require_significant_improvement and not comparison.significantly_better(alpha):
        rules.append(
            RuleFailure(
                rule="no_significant_improvement",
                observed=round(comparison.mcnemar_p_value, 6),
                threshold=alpha,
                message=(
                    f"the candidate is not significantly better than the champion "
                    f"(difference {comparison.accuracy_difference:+.4f}, McNemar p={comparison.mcnemar_p_value:.4g})"
                ),
            )
        )
    return rules
