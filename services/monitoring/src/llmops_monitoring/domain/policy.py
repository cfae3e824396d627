"""The drift policy: which signals count, their thresholds, and the debounce that keeps one drift
from becoming a retraining storm (consecutive windows, cooldown, a daily cap).

Classifiers' windows are judged by the top-level thresholds; generations' windows (``causal_lm``
models) by the ``generation`` section's, under the same debounce, cooldown and daily cap.

Every signal is a score where higher means further from the reference; a signal *breaches* when
its score is above its threshold. The decision is a pure function of the policy, the window's
signals and the model's ``PolicyState`` (which the service persists, so a restart keeps the cooldown).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field, replace
from enum import StrEnum
from pathlib import Path

import yaml
from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

DRIFT_SIGNALS: dict[str, str] = {
    "embedding": "ROC AUC of a classifier telling window from reference sentence embeddings (0.5 = same)",
    "prediction": "Jensen-Shannon distance between predicted label distributions",
    "confidence": "Wasserstein distance (normed by the reference std) of prediction confidences",
    "length": "Wasserstein distance (normed) of text length in characters",
    "word_count": "Wasserstein distance (normed) of words per text",
    "sentence_count": "Wasserstein distance (normed) of sentences per text",
    "non_letter_share": "Wasserstein distance (normed) of the share of non-letter characters",
    "oov_share": "Wasserstein distance (normed) of the share of words absent from the training vocabulary",
}
QUALITY_SIGNALS: dict[str, str] = {
    "accuracy_drop": "reference accuracy minus accuracy on the window's labelled requests",
    "f1_drop": "reference weighted F1 minus weighted F1 on the window's labelled requests",
}
GENERATION_DRIFT_SIGNALS: dict[str, str] = {
    "prompt_embedding": "ROC AUC of a classifier telling the window's last user turns from the training prompts"
    " (MiniLM embeddings; 0.5 = same)",
    "prompt_length": "Wasserstein distance (normed) of the last user turn's length against the training prompts",
    "prompt_oov_share": "Wasserstein distance (normed) of the prompts' share of words absent from the training data",
    "output_length": "Wasserstein distance (normed) of the answers' length against the training answers",
}
GENERATION_OUTPUT_SIGNALS: dict[str, str] = {
    "refusal_share": "share of answers that refuse (a documented list of refusal phrases)",
    "format_invalid_share": "share of answers outside the task's declared output format (labels / JSON schema)",
    "pii_share": "share of answers with personal data (the gateway's placeholders or the PII detectors' findings)",
    "length_finish_share": "share of generations cut at max_tokens (finish reason length: the model rambles)",
    "ttft_p95_ms": "95th percentile of the time to first token, milliseconds",
    "ms_per_token": "median milliseconds per generated token after the first (1000 / tokens per second)",
}
GENERATION_FEEDBACK_SIGNALS: dict[str, str] = {
    "thumbs_down_share": "share of rated answers rated thumbs-down (rating <= THUMBS_DOWN_MAX_RATING)",
    "corrected_share": "share of the window's answers that feedback corrected",
    "correction_mismatch_share": "share of the window's answers a correction differs from (exact match, normalised)",
}
GENERATION_SIGNALS: dict[str, str] = {
    **GENERATION_DRIFT_SIGNALS,
    **GENERATION_OUTPUT_SIGNALS,
    **GENERATION_FEEDBACK_SIGNALS,
}
DAY_SECONDS = 24 * 60 * 60
# Calibrated on BANKING77 (docs/operations.md, "Monitoring"); deploy/policies/drift.yaml repeats them.
DEFAULT_DRIFT_THRESHOLDS: dict[str, float] = {
    "embedding": 0.62,
    "confidence": 0.35,
    "oov_share": 0.5,
    "prediction": 0.3,
    "length": 0.25,
    "word_count": 0.25,
    "sentence_count": 0.25,
    "non_letter_share": 0.25,
}


@dataclass(frozen=True, slots=True)
class SignalRules:
    """How one kind of window's signals decide: ``min_breached_signals`` of the ``decide_on`` drift
    signals together; any one ``gated`` signal once ``min_labelled`` requests have feedback; any one
    ``ungated`` signal always. Signals without a threshold are reported only."""

    min_window_size: int
    drift_thresholds: dict[str, float]
    decide_on: list[str]
    min_breached_signals: int
    gated_thresholds: dict[str, float]
    min_labelled: int
    ungated_thresholds: dict[str, float] = field(default_factory=dict)

    @property
    def thresholds(self) -> dict[str, float]:
        return {**self.drift_thresholds, **self.ungated_thresholds, **self.gated_thresholds}

    def threshold(self, signal: str) -> float | None:
        return self.thresholds.get(signal)

    def decides(self, signal: str, *, labelled: int) -> bool:
        return (
            signal in self.decide_on
            or signal in self.ungated_thresholds
            or (signal in self.gated_thresholds and labelled >= self.min_labelled)
        )


def _known(value: Mapping[str, object] | list[str], known: Mapping[str, str], what: str) -> None:
    unknown = sorted(set(value) - set(known))
    if unknown:
        raise ValueError(f"unknown {what} signal(s) {unknown}; known: {sorted(known)}")


# Calibrated on BANKING77 generations (services/monitoring/bench/bench_generation_monitoring.py);
# deploy/policies/drift.yaml repeats them.
DEFAULT_GENERATION_DRIFT_THRESHOLDS: dict[str, float] = {
    "prompt_embedding": 0.62,
    "prompt_length": 0.25,
    "prompt_oov_share": 0.5,
    "output_length": 0.5,
}
DEFAULT_GENERATION_OUTPUT_THRESHOLDS: dict[str, float] = {
    "refusal_share": 0.1,
    "format_invalid_share": 0.2,
    "pii_share": 0.02,
    "length_finish_share": 0.2,
    # ttft_p95_ms and ms_per_token are reported only: retraining does not fix a slow server.
}
DEFAULT_GENERATION_FEEDBACK_THRESHOLDS: dict[str, float] = {
    "thumbs_down_share": 0.3,
    "corrected_share": 0.2,
    "correction_mismatch_share": 0.2,
}


class GenerationPolicy(BaseModel):
    """The ``generation`` section: thresholds for windows of generation logs (``causal_lm`` models).
    Unknown keys and unknown signal names are errors."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    min_window_size: int = Field(default=200, ge=1)
    """A window with fewer generations is reported but never decides anything."""
    drift_thresholds: dict[str, float] = Field(default_factory=lambda: dict(DEFAULT_GENERATION_DRIFT_THRESHOLDS))
    """Prompt and output drift signal → threshold (against the version's training conversations)."""
    decide_on: list[str] = Field(default_factory=lambda: ["prompt_embedding", "prompt_oov_share"])
    """The drift signals whose breaches count towards a drift decision; the others are only reported."""
    min_breached_signals: int = Field(default=2, ge=1)
    """How many ``decide_on`` signals must breach together for the window to count as drifted."""
    output_thresholds: dict[str, float] = Field(default_factory=lambda: dict(DEFAULT_GENERATION_OUTPUT_THRESHOLDS))
    """Output quality signal → threshold; any one above it decides (reason ``quality``)."""
    feedback_thresholds: dict[str, float] = Field(default_factory=lambda: dict(DEFAULT_GENERATION_FEEDBACK_THRESHOLDS))
    """Feedback signal → threshold; any one above it decides (reason ``quality``) once ``min_feedback``
    of the window's generations have feedback."""
    min_feedback: int = Field(default=20, ge=1)
    """Generations with a rating or a correction needed before feedback signals decide."""
    reference_size: int | None = Field(default=None, ge=10)
    """Optional override of the service's reference sample size (held-out conversations)."""

    @field_validator("drift_thresholds", "decide_on")
    @classmethod
    def _known_drift(cls, value: dict[str, float] | list[str]) -> dict[str, float] | list[str]:
        _known(value, GENERATION_DRIFT_SIGNALS, "generation drift")
        return value

    @field_validator("output_thresholds")
    @classmethod
    def _known_output(cls, value: dict[str, float]) -> dict[str, float]:
        _known(value, GENERATION_OUTPUT_SIGNALS, "generation output")
        return value

    @field_validator("feedback_thresholds")
    @classmethod
    def _known_feedback(cls, value: dict[str, float]) -> dict[str, float]:
        _known(value, GENERATION_FEEDBACK_SIGNALS, "generation feedback")
        return value

    @model_validator(mode="after")
    def _decisive_have_thresholds(self) -> GenerationPolicy:
        missing = sorted(set(self.decide_on) - set(self.drift_thresholds))
        if missing:
            raise ValueError(f"generation decide_on signal(s) {missing} have no threshold in drift_thresholds")
        if self.min_breached_signals > len(self.decide_on):
            raise ValueError("generation min_breached_signals is larger than the number of decide_on signals")
        return self

    @property
    def rules(self) -> SignalRules:
        return SignalRules(
            min_window_size=self.min_window_size,
            drift_thresholds=dict(self.drift_thresholds),
            decide_on=list(self.decide_on),
            min_breached_signals=self.min_breached_signals,
            gated_thresholds=dict(self.feedback_thresholds),
            min_labelled=self.min_feedback,
            ungated_thresholds=dict(self.output_thresholds),
        )


class DriftPolicy(BaseModel):
    """``deploy/policies/drift.yaml``; unknown keys and unknown signal names are errors."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    min_window_size: int = Field(default=200, ge=1)
    """A window with fewer events is reported but never decides anything."""
    drift_thresholds: dict[str, float] = Field(default_factory=lambda: dict(DEFAULT_DRIFT_THRESHOLDS))
    """Drift signal → threshold: above it the report marks the signal drifted (Evidently's default otherwise)."""
    decide_on: list[str] = Field(default_factory=lambda: ["embedding", "confidence", "oov_share"])
    """The drift signals whose breaches count towards a decision; the others are only reported."""
    min_breached_signals: int = Field(default=2, ge=1)
    """How many of the ``decide_on`` signals must breach together for the window to count as drifted."""
    quality_thresholds: dict[str, float] = Field(default_factory=lambda: {"accuracy_drop": 0.15, "f1_drop": 0.15})
    """Quality signal → threshold (absolute drop against the reference)."""
    min_labelled: int = Field(default=50, ge=1)
    """Fewer labelled requests than this gives quality figures in the report but no quality decision."""
    consecutive_windows: int = Field(default=2, ge=1)
    """Windows in a row that must breach before retraining is requested (debounce)."""
    cooldown_minutes: float = Field(default=360, ge=0)
    """After a request, no other for this model for this long (the new model is on its way)."""
    max_retrains_per_day: int = Field(default=2, ge=0)
    """Hard cap on requests per model in any 24 hours."""
    reference_size: int | None = Field(default=None, ge=10)
    """Optional override of the service's reference sample size (validation examples)."""
    generation: GenerationPolicy = Field(default_factory=GenerationPolicy)
    """Thresholds for windows of generations (``causal_lm`` models); debounce, cooldown and cap above."""

    @field_validator("drift_thresholds")
    @classmethod
    def _known_drift(cls, value: dict[str, float]) -> dict[str, float]:
        unknown = sorted(set(value) - set(DRIFT_SIGNALS))
        if unknown:
            raise ValueError(f"unknown drift signal(s) {unknown}; known: {sorted(DRIFT_SIGNALS)}")
        return value

    @field_validator("decide_on")
    @classmethod
    def _known_decisive(cls, value: list[str]) -> list[str]:
        unknown = sorted(set(value) - set(DRIFT_SIGNALS))
        if unknown:
            raise ValueError(f"unknown drift signal(s) {unknown}; known: {sorted(DRIFT_SIGNALS)}")
        return value

    @model_validator(mode="after")
    def _decisive_have_thresholds(self) -> DriftPolicy:
        missing = sorted(set(self.decide_on) - set(self.drift_thresholds))
        if missing:
            raise ValueError(f"decide_on signal(s) {missing} have no threshold in drift_thresholds")
        if self.min_breached_signals > len(self.decide_on):
            raise ValueError("min_breached_signals is larger than the number of decide_on signals")
        return self

    @field_validator("quality_thresholds")
    @classmethod
    def _known_quality(cls, value: dict[str, float]) -> dict[str, float]:
        unknown = sorted(set(value) - set(QUALITY_SIGNALS))
        if unknown:
            raise ValueError(f"unknown quality signal(s) {unknown}; known: {sorted(QUALITY_SIGNALS)}")
        return value

    @property
    def thresholds(self) -> dict[str, float]:
        return {**self.drift_thresholds, **self.quality_thresholds}

    @property
    def rules(self) -> SignalRules:
        """The classifier windows' rules."""
        return SignalRules(
            min_window_size=self.min_window_size,
            drift_thresholds=dict(self.drift_thresholds),
            decide_on=list(self.decide_on),
            min_breached_signals=self.min_breached_signals,
            gated_thresholds=dict(self.quality_thresholds),
            min_labelled=self.min_labelled,
        )


def load_policy(path: Path) -> DriftPolicy:
    """The policy file, or the built-in defaults when it does not exist."""
    if not path.exists():
        return DriftPolicy()
    return DriftPolicy.model_validate(yaml.safe_load(path.read_text()) or {})


class Action(StrEnum):
    NONE = "none"
    """No breach."""
    INSUFFICIENT = "insufficient"
    """Too few events to decide."""
    OBSERVE_ONLY = "observe_only"
    """Breach on a version that is not the champion (a canary): reported, not acted on."""
    DEBOUNCE = "debounce"
    """Breach, but not yet for ``consecutive_windows`` windows."""
    COOLDOWN = "cooldown"
    """Breach, but a request was made less than ``cooldown_minutes`` ago."""
    DAILY_CAP = "daily_cap"
    """Breach, but ``max_retrains_per_day`` requests were already made in the last 24 hours."""
    REQUEST = "request"
    """Retraining is requested."""


@dataclass(frozen=True, slots=True)
class PolicyState:
    """What the policy remembers per model: the breach streak and when retraining was requested."""

    consecutive_breaches: int = 0
    request_times: tuple[float, ...] = field(default_factory=tuple)
    """Epoch seconds of the requests of the last 24 hours."""
    requests: int = 0
    """Requests recorded for the model so far (never pruned): the next request is number ``requests + 1``,
    which names its events (the same number after a request published but not recorded)."""

    @property
    def last_request_at(self) -> float | None:
        return self.request_times[-1] if self.request_times else None


@dataclass(frozen=True, slots=True)
class Decision:
    action: Action
    kind: str | None
    """``drift`` or ``quality`` when something breached."""
    breached: list[str]
    explanation: str
    state: PolicyState

    @property
    def requested(self) -> bool:
        return self.action is Action.REQUEST

    def as_record(self) -> dict[str, object]:
        return {
            "action": self.action.value,
            "kind": self.kind,
            "breached": self.breached,
            "explanation": self.explanation,
            "consecutive_breaches": self.state.consecutive_breaches,
        }


def breached_signals(
    policy: DriftPolicy | SignalRules, signals: dict[str, float], *, labelled: int
) -> tuple[list[str], list[str]]:
    """The drift and the quality signals above their thresholds (gated quality only with enough labels)."""
    rules = policy.rules if isinstance(policy, DriftPolicy) else policy
    drift = sorted(s for s in rules.decide_on if s in signals and signals[s] > rules.drift_thresholds[s])
    quality = sorted(s for s, t in rules.ungated_thresholds.items() if s in signals and signals[s] > t)
    if labelled >= rules.min_labelled:
        quality += sorted(s for s, t in rules.gated_thresholds.items() if s in signals and signals[s] > t)
    return drift, quality


def decide(
    policy: DriftPolicy,
    *,
    signals: dict[str, float],
    window_size: int,
    labelled: int,
    state: PolicyState,
    now: float,
    actionable: bool = True,
    rules: SignalRules | None = None,
) -> Decision:
    """Apply the policy to one window's signals; ``now`` is epoch seconds. ``rules``: how the window's
    signals decide (default: the classifier's, ``policy.rules``); debounce, cooldown and the daily
    cap are the policy's whatever the rules."""
    rules = rules or policy.rules
    recent = tuple(t for t in state.request_times if now - t < DAY_SECONDS)
    state = replace(state, request_times=recent)
    if window_size < rules.min_window_size:
        return Decision(
            Action.INSUFFICIENT,
            None,
            [],
            f"{window_size} events < min_window_size {rules.min_window_size}: no decision",
            state,
        )
    drift, quality = breached_signals(rules, signals, labelled=labelled)
    drifted = len(drift) >= rules.min_breached_signals
    breached = (drift if drifted else []) + quality
    if not breached:
        needed = rules.min_breached_signals
        detail = f" ({len(drift)} decisive signal(s) above threshold, {needed} needed)" if drift else ""
        return Decision(Action.NONE, None, [], f"no breach{detail}", replace(state, consecutive_breaches=0))
    kind = "quality" if quality else "drift"
    listing = ", ".join(f"{s}={signals[s]:.3f}>{rules.thresholds[s]:g}" for s in breached)
    if not actionable:
        return Decision(
            Action.OBSERVE_ONLY, kind, breached, f"breach ({listing}) on a version that is not the champion", state
        )
    streak = state.consecutive_breaches + 1
    state = replace(state, consecutive_breaches=streak)
    # The cooldown is checked first: while a new model is on its way, that is the reason nothing
    # happens, whatever the streak.
    last = state.last_request_at
    if last is not None and now - last < policy.cooldown_minutes * 60:
        remaining = policy.cooldown_minutes - (now - last) / 60
        return Decision(
            Action.COOLDOWN, kind, breached, f"breach ({listing}) during the cooldown ({remaining:.0f} min left)", state
        )
    if streak < policy.consecutive_windows:
        return Decision(
            Action.DEBOUNCE,
            kind,
            breached,
            f"breach ({listing}) in {streak} of {policy.consecutive_windows} consecutive windows needed",
            state,
        )
    if len(recent) >= policy.max_retrains_per_day:
        return Decision(
            Action.DAILY_CAP,
            kind,
            breached,
            f"breach ({listing}) but {len(recent)} request(s) in 24 h reached max_retrains_per_day",
            state,
        )
    return Decision(
        Action.REQUEST,
        kind,
        breached,
        f"breach ({listing}) in {streak} consecutive window(s): retraining requested (reason {kind})",
        PolicyState(consecutive_breaches=0, request_times=(*recent, now), requests=state.requests + 1),
    )
