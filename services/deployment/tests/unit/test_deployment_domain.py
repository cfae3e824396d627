from dataclasses import dataclass, field

import pytest

from llmops_deployment.domain.canary import (
    CanaryPolicy,
    CounterSeries,
    TooFewRequests,
    VersionTraffic,
    judge,
    traffic_since,
)
from llmops_deployment.domain.smoke import smoke_problems

POLICY = CanaryPolicy(min_requests=50, max_seconds=600, max_error_rate=0.05, min_errors=3)
CHAMPION = VersionTraffic(requests=500, errors=0, mean_latency_ms=10.0, mean_confidence=0.9)


def test_a_canary_waits_for_enough_requests() -> None:
    verdict = judge(POLICY, VersionTraffic(requests=10, mean_latency_ms=10.0), CHAMPION, elapsed_s=5)
    assert verdict.action == "wait" and "10 of 50" in verdict.reason


def test_errors_roll_back_before_the_minimum_is_reached() -> None:
    verdict = judge(POLICY, VersionTraffic(requests=5, errors=4), CHAMPION, elapsed_s=5)
    assert verdict.action == "rollback" and "error rate 80.0%" in verdict.reason


def test_one_unlucky_error_is_not_a_trend() -> None:
    verdict = judge(POLICY, VersionTraffic(requests=2, errors=1), CHAMPION, elapsed_s=5)
    assert verdict.action == "wait"


def test_a_healthy_canary_is_promoted_with_its_evidence() -> None:
    canary = VersionTraffic(requests=60, errors=1, mean_latency_ms=12.0, mean_confidence=0.88, confidence_samples=60)
    verdict = judge(POLICY, canary, CHAMPION, elapsed_s=30)
    assert verdict.action == "promote" and "60 requests" in verdict.reason


def test_slow_or_unsure_canaries_are_rolled_back() -> None:
    slow = VersionTraffic(requests=60, mean_latency_ms=45.0)
    assert judge(POLICY, slow, CHAMPION, elapsed_s=30).action == "rollback"
    unsure = VersionTraffic(requests=60, mean_latency_ms=10.0, mean_confidence=0.6)
    verdict = judge(POLICY, unsure, CHAMPION, elapsed_s=30)
    assert verdict.action == "rollback" and "confidence" in verdict.reason


def test_the_time_limit_judges_on_what_was_seen() -> None:
    enough = VersionTraffic(requests=50, mean_latency_ms=10.0)
    assert judge(POLICY, enough, CHAMPION, elapsed_s=601).action == "promote"
    slow = VersionTraffic(requests=50, mean_latency_ms=45.0)
    assert judge(POLICY, slow, CHAMPION, elapsed_s=601).action == "rollback"


# ---- too few requests, and counters that reset (issue 20) --------------------------------------


def test_the_issue_example_is_never_promoted() -> None:
    """Deltas of counters that reset are negative: no evidence at all, refused rather than promoted."""
    with pytest.raises(ValueError, match="negative"):
        judge(POLICY, VersionTraffic(requests=-180, errors=-4), CHAMPION, elapsed_s=601)
    with pytest.raises(ValueError, match="negative"):
        judge(POLICY, VersionTraffic(requests=60), VersionTraffic(requests=-1), elapsed_s=30)


def test_a_canary_without_requests_is_rolled_back_when_its_time_runs_out() -> None:
    verdict = judge(POLICY, VersionTraffic(), CHAMPION, elapsed_s=601)
    assert verdict.action == "rollback"
    assert verdict.reason == "too few requests: 0 of the 50 needed in the 600 s time limit"
    few = judge(POLICY, VersionTraffic(requests=7, mean_latency_ms=10.0), CHAMPION, elapsed_s=601)
    assert few.action == "rollback" and "7 of the 50" in few.reason


def test_too_few_requests_follow_the_explicit_policy() -> None:
    seven = VersionTraffic(requests=7, mean_latency_ms=10.0)
    extend = CanaryPolicy(min_requests=50, max_seconds=600, on_too_few_requests=TooFewRequests.EXTEND)
    waiting = judge(extend, seven, CHAMPION, elapsed_s=601)
    assert waiting.action == "wait" and "7 of 50 requests" in waiting.reason and "extended" in waiting.reason
    assert judge(extend, VersionTraffic(requests=50), CHAMPION, elapsed_s=9000).action == "promote"
    assert judge(extend, VersionTraffic(requests=7, errors=7), CHAMPION, elapsed_s=9000).action == "rollback"

    promote = CanaryPolicy(min_requests=50, max_seconds=600, on_too_few_requests=TooFewRequests.PROMOTE)
    verdict = judge(promote, seven, CHAMPION, elapsed_s=601)
    assert verdict.action == "promote" and "only 7 of 50 requests" in verdict.reason
    assert judge(promote, VersionTraffic(requests=7, mean_latency_ms=45.0), CHAMPION, elapsed_s=601).action == (
        "rollback"
    ), "the other checks still apply"
    assert judge(promote, seven, CHAMPION, elapsed_s=30).action == "wait", "only when the time runs out"


def test_counters_that_reset_are_read_as_increases_since_the_reset() -> None:
    """Like Prometheus' ``increase()``: a counter that went down restarted from zero, so its new
    value is what it counted since; the counters of one process reset together."""
    series = CounterSeries()
    assert series.observe((200, 8)).increase == (0, 0), "the first reading is the baseline"
    for sample in [(200, 8), (230, 9), (20, 4), (35, 4), (40, 0)]:
        series = series.observe(sample)
    assert series.increase == (30 + 20 + 15 + 40, 1 + 4 + 0 + 0)
    assert series.resets == 2 and series.last == (40, 0)
    assert CounterSeries().increase == (), "nothing read yet"


def test_a_triton_restart_under_the_canary_keeps_its_errors_counted() -> None:
    """The issue's case: the canary served 200 requests (8 errors) before Triton restarted, then
    20 (4 errors): read as deltas from the start they are -180 and -4; read as a reset series
    they are the 20 requests and 4 errors it served, and the error check fires."""
    counters = CounterSeries()
    for requests, errors, ns in [(200, 8, 2_000_000_000), (20, 4, 200_000_000)]:
        counters = counters.observe((requests, errors, ns))
    canary = traffic_since(counters, CounterSeries())
    assert canary == VersionTraffic(requests=20, errors=4, mean_latency_ms=10.0)
    verdict = judge(POLICY, canary, CHAMPION, elapsed_s=601)
    assert verdict.action == "rollback" and "error rate 20.0% (4 of 20 requests)" in verdict.reason


def test_traffic_since_reads_latency_and_confidence_from_the_increases() -> None:
    counters = CounterSeries().observe((10, 0, 0)).observe((14, 1, 80_000_000))
    confidence = CounterSeries().observe((3, 2.7)).observe((7, 6.3))
    traffic = traffic_since(counters, confidence)
    assert (traffic.requests, traffic.errors, traffic.confidence_samples) == (4, 1, 4)
    assert traffic.mean_latency_ms == pytest.approx(20.0) and traffic.mean_confidence == pytest.approx(0.9)
    assert traffic_since(CounterSeries(), CounterSeries()) == VersionTraffic()


@dataclass
class _P:
    label: str
    confidence: float
    scores: dict[str, float] = field(default_factory=dict)


def test_smoke_problems_name_what_is_wrong() -> None:
    labels = ["a", "b"]
    good = _P("a", 0.7, {"a": 0.7, "b": 0.3})
    assert smoke_problems(["x"], [good], labels) == []
    problems = smoke_problems(
        ["x", "y"], [_P("c", 1.2, {"a": 0.9, "b": 0.9}), _P("b", 0.3, {"a": 0.7, "b": 0.3})], labels
    )
    assert any("not one of the model's labels" in p for p in problems)
    assert any("outside [0, 1]" in p for p in problems)
    assert any("sum to 1.8000" in p for p in problems)
    assert any("not the highest-scoring" in p for p in problems)
    assert smoke_problems(["x", "y"], [good], labels) == ["1 answers for 2 texts"]
