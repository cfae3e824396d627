"""When a canary has earned promotion, and when it must be rolled back; and how the counters it is
judged on are read (monotonic series that reset when Triton restarts). Pure: no I/O."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, fields, replace
from enum import StrEnum
from typing import Any, Protocol


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
    early = _gate(policy, canary.requests, canary.errors, elapsed_s)
    if early is not None:
        return early
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
    return _healthy(policy, canary.requests, canary.errors)


class _Lifecycle(Protocol):
    """What every kind's canary policy says about evidence and errors (the same for all kinds)."""

    @property
    def min_requests(self) -> int: ...
    @property
    def max_seconds(self) -> float: ...
    @property
    def on_too_few_requests(self) -> TooFewRequests: ...
    @property
    def max_error_rate(self) -> float: ...
    @property
    def min_errors(self) -> int: ...


def _gate(policy: _Lifecycle, requests: int, errors: int, elapsed_s: float) -> Verdict | None:
    """The verdict before any comparison with the champion: roll back on errors, wait for
    evidence, or apply ``on_too_few_requests`` at the time limit; None: compare now."""
    error_rate = errors / requests if requests else 0.0
    if errors >= policy.min_errors and error_rate > policy.max_error_rate:
        return Verdict(
            CanaryAction.ROLLBACK,
            f"error rate {error_rate:.1%} ({errors} of {requests} requests) "
            f"is above the maximum {policy.max_error_rate:.1%}",
        )
    enough = requests >= policy.min_requests
    timed_out = elapsed_s >= policy.max_seconds
    if not (enough or timed_out):
        return Verdict(CanaryAction.WAIT, f"{requests} of {policy.min_requests} requests observed")
    if not enough:
        match policy.on_too_few_requests:
            case TooFewRequests.ROLLBACK:
                return Verdict(
                    CanaryAction.ROLLBACK,
                    f"too few requests: {requests} of the {policy.min_requests} needed "
                    f"in the {policy.max_seconds:g} s time limit",
                )
            case TooFewRequests.EXTEND:
                return Verdict(
                    CanaryAction.WAIT,
                    f"{requests} of {policy.min_requests} requests observed "
                    f"(extended past the {policy.max_seconds:g} s time limit)",
                )
    return None


def _healthy(policy: _Lifecycle, requests: int, errors: int, evidence: str = "") -> Verdict:
    """The promotion, with what it was based on."""
    if errors:
        error_rate = errors / requests if requests else 0.0
        counted = f"{errors} errors ({error_rate:.1%}, within {policy.max_error_rate:.0%})"
    else:
        counted = "no errors"
    basis = (
        f"{requests} requests"
        if requests >= policy.min_requests
        else f"only {requests} of {policy.min_requests} requests in the {policy.max_seconds:g} s time limit "
        f"(on_too_few_requests=promote)"
    )
    return Verdict(CanaryAction.PROMOTE, f"healthy over {basis}: {counted}{evidence}")


# ---- generative models (kind causal_lm): one LoRA adapter per version on a shared base ----------


@dataclass(frozen=True, slots=True)
class GenerationCanaryPolicy:
    """The canary of an adapter version, judged against the champion adapter on the counters the
    causal-LM Triton model exports per adapter (``deploy/policies/canary.yaml``, section
    ``causal_lm``). Comparisons are skipped while the champion has answered nothing to compare with."""

    min_requests: int = 20
    """Canary requests to observe before promoting on the evidence."""
    max_seconds: float = 600.0
    on_too_few_requests: TooFewRequests = TooFewRequests.ROLLBACK
    max_error_rate: float = 0.05
    min_errors: int = 3
    max_ttft_ratio: float = 2.0
    """Canary mean time to first token may be at most this multiple of the champion's …"""
    ttft_slack_ms: float = 100.0
    """… plus this many milliseconds (a busy CPU jitters)."""
    min_tokens_per_s_ratio: float = 0.5
    """Canary decoding speed (tokens/s per stream) must be at least this share of the champion's."""
    min_output_length_ratio: float = 0.5
    """Canary mean completion tokens per request, as a multiple of the champion's, at least this …"""
    max_output_length_ratio: float = 2.0
    """… and at most this: much shorter answers (cut off, refusing) or much longer ones (rambling,
    not stopping) both mean the adapter answers differently from the one it replaces."""


@dataclass(frozen=True, slots=True)
class GenerationTraffic:
    """What one adapter served since the canary started (increases of the model's counters)."""

    requests: int = 0
    """Requests answered to their end, with an error or cancelled (the model counts a request with
    its final response, so none here is still in flight)."""
    errors: int = 0
    ttft_s: float = 0.0
    """Sum of the times to first token."""
    completion_tokens: int = 0
    decode_s: float = 0.0
    """Sum of the times from the first to the last token."""
    cancelled: int = 0
    """Requests the client cancelled: neither failures nor complete answers."""

    @property
    def answered(self) -> int:
        """Requests answered to their end (the means divide by these; the few tokens and first
        tokens of cancelled requests are in the sums, on both sides of the comparison alike)."""
        return max(self.requests - self.errors - self.cancelled, 0)

    @property
    def mean_ttft_ms(self) -> float | None:
        return self.ttft_s / self.answered * 1000 if self.answered else None

    @property
    def tokens_per_s(self) -> float | None:
        """Decoding speed of one stream: tokens over decoding time (the model's own definition)."""
        return self.completion_tokens / self.decode_s if self.decode_s > 0 else None

    @property
    def mean_output_tokens(self) -> float | None:
        return self.completion_tokens / self.answered if self.answered else None


GENERATION_COUNTERS = ("requests", "errors", "ttft_s", "completion_tokens", "decode_s", "cancelled")
"""The order of one reading of an adapter's counters (``CounterSeries``)."""


def generation_traffic_since(counters: CounterSeries) -> GenerationTraffic:
    """What one adapter served since its baseline, from the series of its counters read in the
    order of ``GENERATION_COUNTERS``."""
    if not counters.increase:
        return GenerationTraffic()
    requests, errors, ttft_s, tokens, decode_s, cancelled = counters.increase
    return GenerationTraffic(
        requests=int(requests),
        errors=int(errors),
        ttft_s=ttft_s,
        completion_tokens=int(tokens),
        decode_s=decode_s,
        cancelled=int(cancelled),
    )


def judge_generation(
    policy: GenerationCanaryPolicy, canary: GenerationTraffic, champion: GenerationTraffic, elapsed_s: float
) -> Verdict:
    """As ``judge``, on an adapter's error rate, then time to first token, tokens/s and mean output
    length against the champion's."""
    for who, traffic in (("canary", canary), ("champion", champion)):
        counts = (traffic.requests, traffic.errors, traffic.completion_tokens, traffic.cancelled)
        if min(*counts, traffic.ttft_s, traffic.decode_s) < 0:
            raise ValueError(
                f"the {who}'s counts are negative ({traffic.requests} requests, {traffic.errors} errors): "
                "counters must be read as increases that survive resets (CounterSeries), not as deltas"
            )
    early = _gate(policy, canary.requests, canary.errors, elapsed_s)
    if early is not None:
        return early
    if canary.mean_ttft_ms is not None and champion.mean_ttft_ms is not None:
        limit = champion.mean_ttft_ms * policy.max_ttft_ratio + policy.ttft_slack_ms
        if canary.mean_ttft_ms > limit:
            return Verdict(
                CanaryAction.ROLLBACK,
                f"mean time to first token {canary.mean_ttft_ms:.0f} ms is above {limit:.0f} ms "
                f"({policy.max_ttft_ratio:g}x the champion's {champion.mean_ttft_ms:.0f} ms "
                f"+ {policy.ttft_slack_ms:g} ms)",
            )
    if canary.tokens_per_s is not None and champion.tokens_per_s is not None:
        floor = champion.tokens_per_s * policy.min_tokens_per_s_ratio
        if canary.tokens_per_s < floor:
            return Verdict(
                CanaryAction.ROLLBACK,
                f"{canary.tokens_per_s:.1f} tokens/s is below {floor:.1f} "
                f"({policy.min_tokens_per_s_ratio:g}x the champion's {champion.tokens_per_s:.1f})",
            )
    evidence = ""
    if canary.mean_output_tokens is not None and champion.mean_output_tokens:
        ratio = canary.mean_output_tokens / champion.mean_output_tokens
        if not policy.min_output_length_ratio <= ratio <= policy.max_output_length_ratio:
            return Verdict(
                CanaryAction.ROLLBACK,
                f"mean output length {canary.mean_output_tokens:.1f} tokens is {ratio:.2f}x the champion's "
                f"{champion.mean_output_tokens:.1f} (allowed {policy.min_output_length_ratio:g}x "
                f"to {policy.max_output_length_ratio:g}x)",
            )
        evidence = f"; mean output {canary.mean_output_tokens:.1f} tokens ({ratio:.2f}x the champion's)"
    if canary.mean_ttft_ms is not None:
        evidence += f"; time to first token {canary.mean_ttft_ms:.0f} ms"
    return _healthy(policy, canary.requests, canary.errors, evidence)


def generation_policy(values: Mapping[str, Any], *, lifecycle: CanaryPolicy) -> GenerationCanaryPolicy:
    """The ``causal_lm`` section of the canary policy file; unknown keys and values out of range
    are ``ValueError`` (a typo must not silently disable a check). The time limit and what it does
    to a canary with too few requests come from ``lifecycle`` (the same for every kind)."""
    allowed = {f.name for f in fields(GenerationCanaryPolicy)} - {"max_seconds", "on_too_few_requests"}
    unknown = sorted(set(values) - allowed)
    if unknown:
        raise ValueError(f"unknown canary policy key(s) {unknown}; known: {sorted(allowed)}")
    base = GenerationCanaryPolicy(max_seconds=lifecycle.max_seconds, on_too_few_requests=lifecycle.on_too_few_requests)
    typed: dict[str, Any] = {}
    for key, value in values.items():
        if value is None:
            continue
        kind = type(getattr(base, key))
        if isinstance(value, bool) or not isinstance(value, int | float) or (kind is int and value != int(value)):
            expected = "an integer" if kind is int else "a number"
            raise ValueError(f"canary policy {key} must be {expected}, not {value!r}")
        typed[key] = kind(value)
    policy = replace(base, **typed)
    checks = {
        "min_requests": policy.min_requests >= 1,
        "min_errors": policy.min_errors >= 1,
        "max_error_rate": 0 <= policy.max_error_rate <= 1,
        "max_ttft_ratio": policy.max_ttft_ratio > 0,
        "ttft_slack_ms": policy.ttft_slack_ms >= 0,
        "min_tokens_per_s_ratio": policy.min_tokens_per_s_ratio >= 0,
        "min_output_length_ratio": 0 <= policy.min_output_length_ratio <= policy.max_output_length_ratio,
    }
    wrong = [key for key, ok in checks.items() if not ok]
    if wrong:
        shown = ", ".join(f"{key}={getattr(policy, key)}" for key in wrong)
        raise ValueError(f"canary policy value(s) out of range: {shown}")
    return policy
