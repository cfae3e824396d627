from dataclasses import dataclass, field

from llmops_deployment.domain.canary import CanaryPolicy, VersionTraffic, judge
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
    verdict = judge(POLICY, VersionTraffic(requests=7, mean_latency_ms=10.0), CHAMPION, elapsed_s=601)
    assert verdict.action == "promote" and "time limit" in verdict.reason


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
