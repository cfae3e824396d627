"""When a canary has earned promotion, and when it must be rolled back; and how the counters it is
judged on are read (monotonic series that reset when Triton restarts). Pure: no I/O."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from enum import StrEnum


class TooFewRequests(StrEnum):
    """What a canary's time limit does when the canary has not served ``min_requests``."""

    ROLLBACK = "rollback"
    """The default: an unproven version never becomes champion by the clock; the champion stays."""
    EXTEND = "extend"
    """Keep the canary and its checks running until it has served ``min_requests`` (or an operator,
    a breach or a newer candidate ends it)."""
    PROMOTE = "promote"
    """Promote on what was seen (the other checks still apply), even on no requests at all."""


@dataclass(frozen=True, slots=True)
class CanaryPolicy:
    min_requests: int = 50
    """Canary requests to observe before promoting on the evidence."""
    max_seconds: float = 600.0
    """After this long the canary is judged on what it has seen: promoted if it served
    ``min_requests`` without a breach, else as ``on_too_few_requests`` says."""
    on_too_few_requests: TooFewRequests = TooFewRequests.ROLLBACK
    """What the time limit does to a canary that served fewer than ``min_requests``."""
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


@dataclass(frozen=True, slots=True)
class CounterSeries:
    """Cumulative counters of one process (Triton's statistics and its metrics), read again and
    again, summed the way Prometheus' ``increase()`` reads a counter: the first reading is the
    baseline; a reading in which any counter went down means the process restarted (or reloaded
    the model) and every counter started again from zero, so its values are the increase since.
    Requests served between the last reading before a restart and the restart are not seen (as
    with Prometheus), and neither are those of a restart whose counters grew past the last
    reading before they were read again; neither can make a count negative."""

    last: tuple[float, ...] | None = None
    """The latest reading (None: nothing read yet)."""
    increase: tuple[float, ...] = ()
    """What each counter counted since the baseline (empty: nothing read yet)."""
    resets: int = 0

    def observe(self, sample: Sequence[float]) -> CounterSeries:
        current = tuple(sample)
        if self.last is None:
            return CounterSeries(current, tuple(0 for _ in current), 0)
        if len(current) != len(self.last):
            raise ValueError(f"a reading of {len(current)} counters after readings of {len(self.last)}")
        reset = any(now < before for now, before in zip(current, self.last, strict=True))
        deltas = current if reset else tuple(now - before for now, before in zip(current, self.last, strict=True))
        total = tuple(sum(pair) for pair in zip(self.increase, deltas, strict=True))
        return CounterSeries(current, total, self.resets + reset)


def traffic_since(counters: CounterSeries, confidence: CounterSeries) -> VersionTraffic:
    """What one version served since its baselines: ``counters`` of (requests, errors, busy ns) on
    Triton, ``confidence`` of (logged predictions, sum of their confidences) from the inference log."""
    requests, errors, ns = (int(v) for v in counters.increase) if counters.increase else (0, 0, 0)
    samples, total = confidence.increase if confidence.increase else (0, 0.0)
    return VersionTraffic(
        requests=requests,
        errors=errors,
        mean_latency_ms=ns / requests / 1e6 if requests > 0 else None,
        mean_confidence=total / samples if samples > 0 else None,
        confidence_samples=int(samples),
    )


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
    """Roll back on the first breach; promote once ``min_requests`` passed without one. When the
    time limit comes first, ``on_too_few_requests`` decides. Counts are increases (``CounterSeries``);
    a negative one is refused with ``ValueError``, never judged."""
    for who, traffic in (("canary", canary), ("champion", champion)):
        if min(traffic.requests, traffic.errors, traffic.confidence_samples) < 0:
            raise ValueError(
                f"the {who}'s counts are negative ({traffic.requests} requests, {traffic.errors} errors): "
                "counters must be read as increases that survive resets (CounterSeries), not as deltas"
            )
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
    if not enough:
        match policy.on_too_few_requests:
            case TooFewRequests.ROLLBACK:
                return Verdict(
                    CanaryAction.ROLLBACK,
                    f"too few requests: {canary.requests} of the {policy.min_requests} needed "
                    f"in the {policy.max_seconds:g} s time limit",
                )
            case TooFewRequests.EXTEND:
                return Verdict(
                    CanaryAction.WAIT,
                    f"{canary.requests} of {policy.min_requests} requests observed "
                    f"(extended past the {policy.max_seconds:g} s time limit)",
                )
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
    basis = (
        f"{canary.requests} requests"
        if enough
        else f"only {canary.requests} of {policy.min_requests} requests in the {policy.max_seconds:g} s time limit "
        f"(on_too_few_requests=promote)"
    )
    return Verdict(CanaryAction.PROMOTE, f"healthy over {basis}: {errors}")
