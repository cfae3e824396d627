"""When a canary has earned promotion, and when it must be rolled back. Pure: no I/O."""

from __future__ import annotations

from dataclasses import dataclass
from enum import StrEnum


@dataclass(frozen=True, slots=True)
class CanaryPolicy:
    min_requests: int = 50
    """Canary requests to observe before promoting on the evidence."""
    max_seconds: float = 600.0
    """After this long the canary is judged on what it has seen (promoted if nothing breached)."""
    max_error_rate: float = 0.05
    """Share of canary requests that failed on Triton."""
    min_errors: int = 3
    """Failures needed before the error rate can roll back (one unlucky request is not a trend)."""
    max_latency_ratio: float = 2.0
    """Canary mean latency may be at most this multiple of the champion's …"""
    latency_slack_ms: float = 20.0
    """… plus this many milliseconds (small models on a busy CPU jitter)."""
    max_confidence_drop: float = 0.15
    """Mean confidence may fall at most this much below the champion's."""


@dataclass(frozen=True, slots=True)
class VersionTraffic:
    """What one version served since the canary started."""

    requests: int = 0
    errors: int = 0
    mean_latency_ms: float | None = None
    mean_confidence: float | None = None
    confidence_samples: int = 0

    @property
    def error_rate(self) -> float:
        return self.errors / self.requests if self.requests else 0.0


class CanaryAction(StrEnum):
    """What a judgement asks for (its value labels ``llmops_deployment_canary_decisions_total``)."""

    WAIT = "wait"
    PROMOTE = "promote"
    ROLLBACK = "rollback"


@dataclass(frozen=True, slots=True)
class Verdict:
    action: CanaryAction
    reason: str


def judge(policy: CanaryPolicy, canary: VersionTraffic, champion: VersionTraffic, elapsed_s: float) -> Verdict:
    """Roll back on the first breach; promote once enough requests (or time) passed without one."""
    if canary.errors >= policy.min_errors and canary.error_rate > policy.max_error_rate:
        return Verdict(
            CanaryAction.ROLLBACK,
            f"error rate {canary.error_rate:.1%} ({canary.errors} of {canary.requests} requests) "
            f"is above the maximum {policy.max_error_rate:.1%}",
        )
    enough = canary.requests >= policy.min_requests
    timed_out = elapsed_s >= policy.max_seconds
    if not (enough or timed_out):
        return Verdict(CanaryAction.WAIT, f"{canary.requests} of {policy.min_requests} requests observed")
    if canary.mean_latency_ms is not None and champion.mean_latency_ms is not None:
        limit = champion.mean_latency_ms * policy.max_latency_ratio + policy.latency_slack_ms
        if canary.mean_latency_ms > limit:
            return Verdict(
                CanaryAction.ROLLBACK,
                f"mean latency {canary.mean_latency_ms:.1f} ms is above {limit:.1f} ms "
                f"({policy.max_latency_ratio:g}x the champion's {champion.mean_latency_ms:.1f} ms "
                f"+ {policy.latency_slack_ms:g} ms)",
            )
    if canary.mean_confidence is not None and champion.mean_confidence is not None:
        drop = champion.mean_confidence - canary.mean_confidence
        if drop > policy.max_confidence_drop:
            return Verdict(
                CanaryAction.ROLLBACK,
                f"mean confidence {canary.mean_confidence:.3f} is {drop:.3f} below the champion's "
                f"{champion.mean_confidence:.3f} (maximum drop {policy.max_confidence_drop:g})",
            )
    if canary.errors:
        errors = f"{canary.errors} errors ({canary.error_rate:.1%}, within {policy.max_error_rate:.0%})"
    else:
        errors = "no errors"
    basis = f"{canary.requests} requests" + ("" if enough else f" in the {policy.max_seconds:g} s time limit")
    return Verdict(CanaryAction.PROMOTE, f"healthy over {basis}: {errors}")
