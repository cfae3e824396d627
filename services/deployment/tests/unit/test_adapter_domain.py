"""The pure parts of deploying LoRA adapter versions (model kind ``causal_lm``): the canary's verdict
on the per-adapter counters, the canary policy file, the base-model check, adapter paths, the
smoke test's verdict on generations, reading the counters off Triton's metrics page, and the model
kind on every deployment event."""

from __future__ import annotations

from pathlib import Path

import pytest

from llmops_deployment.adapters.triton import GENERATION_METRICS, generation_counters
from llmops_deployment.domain.canary import (
    GENERATION_COUNTERS,
    CanaryPolicy,
    CounterSeries,
    GenerationCanaryPolicy,
    GenerationTraffic,
    TooFewRequests,
    generation_policy,
    generation_traffic_since,
    judge_generation,
)
from llmops_deployment.domain.generation import (
    SmokeGeneration,
    adapter_folder,
    base_model_problem,
    generation_problems,
)
from llmops_deployment.domain.lifecycle import Command, ModelLifecycle, decide
from llmops_deployment.settings import DeploymentSettings
from llmops_models import InvalidName
from llmops_serving import triton_name

REPOSITORY = Path(__file__).resolve().parents[4]
POLICY = GenerationCanaryPolicy(min_requests=20, max_seconds=600)
# The champion: 100 answers, 0.2 s to the first token, 20 tokens each decoded at 25 tokens/s.
CHAMPION = GenerationTraffic(requests=100, errors=0, ttft_s=20.0, completion_tokens=2000, decode_s=80.0)


def _canary(
    requests: int = 20, *, errors: int = 0, ttft_ms: float = 200, tokens: float = 20, rate: float = 25
) -> GenerationTraffic:
    answered = requests - errors
    return GenerationTraffic(
        requests=requests,
        errors=errors,
        ttft_s=answered * ttft_ms / 1000,
        completion_tokens=int(answered * tokens),
        decode_s=answered * tokens / rate,
    )


def test_the_traffic_reads_ttft_tokens_per_second_and_output_length() -> None:
    canary = _canary(20, errors=2, ttft_ms=300, tokens=10, rate=40)
    assert canary.answered == 18 and GenerationTraffic(requests=5, errors=1, cancelled=2).answered == 2
    assert canary.mean_ttft_ms == pytest.approx(300)
    assert canary.tokens_per_s == pytest.approx(40)
    assert canary.mean_output_tokens == pytest.approx(10)
    empty = GenerationTraffic()
    assert (empty.mean_ttft_ms, empty.tokens_per_s, empty.mean_output_tokens) == (None, None, None)


def test_an_adapter_canary_waits_then_is_promoted_with_its_evidence() -> None:
    waiting = judge_generation(POLICY, _canary(5), CHAMPION, elapsed_s=10)
    assert waiting.action == "wait" and "5 of 20 requests" in waiting.reason
    promoted = judge_generation(POLICY, _canary(20), CHAMPION, elapsed_s=10)
    assert promoted.action == "promote"
    assert "healthy over 20 requests: no errors; mean output 20.0 tokens (1.00x the champion's)" in promoted.reason


def test_errors_roll_an_adapter_back_before_the_minimum_is_reached() -> None:
    verdict = judge_generation(POLICY, _canary(6, errors=3), CHAMPION, elapsed_s=10)
    assert verdict.action == "rollback" and "error rate 50.0% (3 of 6 requests)" in verdict.reason
    assert judge_generation(POLICY, _canary(6, errors=1), CHAMPION, elapsed_s=10).action == "wait"


@pytest.mark.parametrize(
    ("canary", "words"),
    [
        (_canary(ttft_ms=600), "time to first token 600 ms is above 500 ms"),  # 2 x 200 + 100
        (_canary(rate=10), "10.0 tokens/s is below 12.5"),
        (_canary(tokens=45), "mean output length 45.0 tokens is 2.25x the champion's 20.0"),
        (_canary(tokens=5), "mean output length 5.0 tokens is 0.25x"),
    ],
)
def test_a_slower_or_differently_answering_adapter_is_rolled_back(canary: GenerationTraffic, words: str) -> None:
    verdict = judge_generation(POLICY, canary, CHAMPION, elapsed_s=10)
    assert verdict.action == "rollback" and words in verdict.reason


def test_without_champion_traffic_only_errors_and_evidence_count() -> None:
    verdict = judge_generation(POLICY, _canary(20, ttft_ms=5000, tokens=200), GenerationTraffic(), elapsed_s=10)
    assert verdict.action == "promote"


def test_the_time_limit_and_too_few_requests_are_the_classifiers_rules() -> None:
    assert judge_generation(POLICY, _canary(3), CHAMPION, elapsed_s=601).action == "rollback"
    extend = GenerationCanaryPolicy(min_requests=20, max_seconds=600, on_too_few_requests=TooFewRequests.EXTEND)
    assert judge_generation(extend, _canary(3), CHAMPION, elapsed_s=601).action == "wait"


def test_negative_counts_are_refused_never_judged() -> None:
    with pytest.raises(ValueError, match="negative"):
        judge_generation(POLICY, GenerationTraffic(requests=-5), CHAMPION, elapsed_s=10)


def test_adapter_counters_survive_a_reset_of_the_model() -> None:
    """The base reloaded (or Triton restarted): every counter starts again from zero, and what the
    adapter served after it still counts."""
    series = CounterSeries()
    for sample in [(50, 1, 10.0, 900, 30.0, 0), (60, 1, 12.0, 1100, 37.0, 2), (4, 3, 0.2, 20, 1.0, 0)]:
        series = series.observe(sample)
    traffic = generation_traffic_since(series)
    assert (traffic.requests, traffic.errors, traffic.completion_tokens, traffic.cancelled) == (14, 3, 220, 2)
    assert traffic.answered == 9
    assert traffic.ttft_s == pytest.approx(2.2) and traffic.decode_s == pytest.approx(8.0)
    assert series.resets == 1
    assert generation_traffic_since(CounterSeries()) == GenerationTraffic()


def test_the_counters_are_read_off_the_metrics_page_per_adapter() -> None:
    assert len(GENERATION_METRICS) == len(GENERATION_COUNTERS)
    page = "\n".join(
        [
            "# HELP llmops_generation_requests_total Generation requests",
            "# TYPE llmops_generation_requests_total counter",
            'llmops_generation_requests_total{adapter="bot__v1"} 12',
            'llmops_generation_requests_total{adapter="bot__v2"} 3',
            'llmops_generation_requests_total{adapter="base"} 7',
            "# TYPE llmops_generation_failures_total counter",
            'llmops_generation_failures_total{adapter="bot__v2"} 1',
            "# TYPE llmops_generation_ttft_seconds_total counter",
            'llmops_generation_ttft_seconds_total{adapter="bot__v2"} 0.75',
            "# TYPE llmops_generation_completion_tokens_total counter",
            'llmops_generation_completion_tokens_total{adapter="bot__v2"} 40',
            "# TYPE llmops_generation_decode_seconds_total counter",
            'llmops_generation_decode_seconds_total{adapter="bot__v2"} 1.5',
            "# TYPE llmops_generation_cancelled_total counter",
            'llmops_generation_cancelled_total{adapter="bot__v2"} 1',
            "# TYPE nv_inference_count counter",
            'nv_inference_count{model="llmops_causal_lm",version="1"} 22',
            "",
        ]
    )
    assert generation_counters(page, "bot__v2") == (3, 1, 0.75, 40, 1.5, 1)
    assert generation_counters(page, "bot__v1") == (12, 0, 0, 0, 0, 0)
    assert generation_counters(page, "bot__v9") == (0,) * 6, "an adapter that served nothing yet"


def test_the_policy_file_in_the_repository_is_valid_and_used() -> None:
    settings = DeploymentSettings(canary_policy_file=REPOSITORY / "deploy" / "policies" / "canary.yaml")
    policy = settings.generation_canary_policy
    assert policy.min_requests >= 1 and policy.max_seconds == settings.canary_max_seconds
    assert policy.min_output_length_ratio < 1 < policy.max_output_length_ratio


def test_the_policy_refuses_typos_and_values_out_of_range(tmp_path: Path) -> None:
    lifecycle = CanaryPolicy(max_seconds=60, on_too_few_requests=TooFewRequests.PROMOTE)
    policy = generation_policy({"min_requests": 5, "ttft_slack_ms": 50}, lifecycle=lifecycle)
    assert (policy.min_requests, policy.ttft_slack_ms, policy.max_seconds) == (5, 50.0, 60)
    assert policy.on_too_few_requests is TooFewRequests.PROMOTE
    with pytest.raises(ValueError, match="unknown canary policy key"):
        generation_policy({"max_ttft_ration": 2}, lifecycle=lifecycle)
    with pytest.raises(ValueError, match="must be an integer"):
        generation_policy({"min_requests": 2.5}, lifecycle=lifecycle)
    with pytest.raises(ValueError, match="out of range: min_output_length_ratio"):
        generation_policy({"min_output_length_ratio": 3}, lifecycle=lifecycle)
    bad = tmp_path / "canary.yaml"
    bad.write_text("causal_lm: {}\nclassifer: {}\n")
    with pytest.raises(ValueError, match="unknown section"):
        _ = DeploymentSettings(canary_policy_file=bad).generation_canary_policy
    assert DeploymentSettings(canary_policy_file=tmp_path / "absent.yaml").generation_canary_policy.min_requests == 20


def test_an_adapter_trained_on_other_base_weights_is_refused() -> None:
    config = {"base_model": "smollm2", "base_model_weights_hash": "sha256:aa"}
    assert base_model_problem(config, "sha256:aa") is None
    problem = base_model_problem(config, "sha256:bb")
    assert problem is not None and "sha256:aa" in problem and "serves sha256:bb" in problem
    missing = base_model_problem({"base_model": "smollm2"}, "sha256:aa")
    assert missing is not None and "names no base_model_weights_hash" in missing


def test_adapter_folders_are_named_by_the_kernels_name_check(tmp_path: Path) -> None:
    name = triton_name("support-bot", 3)
    assert adapter_folder(tmp_path, name) == tmp_path / "support-bot__v3"
    for bad in ("../escape", ".hidden", "a/b", "", "x" * 200):
        with pytest.raises(InvalidName):
            adapter_folder(tmp_path, bad)


def test_smoke_generations_must_end_normally_and_say_something() -> None:
    good = SmokeGeneration("card_arrival", "stop", 4, 3)
    assert generation_problems([good, SmokeGeneration("", "length", 16, 1)], max_tokens=16) == []
    problems = generation_problems(
        [
            SmokeGeneration(error="invalid argument: unknown adapter 'x__v1'"),
            SmokeGeneration("half", "error", 3, 2),
            SmokeGeneration("cut", "", 2, 2),
            SmokeGeneration("long", "length", 40, 5),
        ],
        max_tokens=16,
    )
    assert problems == [
        "generation 0: invalid argument: unknown adapter 'x__v1'",
        "generation 1: finished with 'error'",
        "generation 2: finished with 'no finish reason'",
        "generation 3: 40 tokens, more than max_tokens 16",
    ]
    assert generation_problems([SmokeGeneration(" ", "stop", 1, 1)] * 2, max_tokens=16) == [
        "every one of the 2 answers is empty"
    ]
    assert generation_problems([], max_tokens=16) == ["no smoke-test generation was run"]


def test_every_event_of_an_adapter_deployment_carries_its_kind() -> None:
    life = ModelLifecycle.empty("bot")
    first = decide(life, 1, Command.DEPLOY, model_kind="causal_lm")
    life = first.after
    passed = decide(life, 1, Command.GO_LIVE_PASSED)  # no kind given: the model's, from the topic
    second = decide(passed.after, 2, Command.DEPLOY, model_kind="causal_lm")
    failed = decide(second.after, 2, Command.GO_LIVE_FAILED, reason="base_model_mismatch: other weights")
    events = [e.event for d in (first, passed, second, failed) for e in d.effects if e.event is not None]
    assert [type(e).__name__ for e in events] == [
        "DeploymentRequested",
        "DeploymentPromoted",
        "DeploymentRequested",
        "DeploymentRolledBack",
    ]
    assert {e.kind for e in events} == {"causal_lm"}  # type: ignore[attr-defined]
    assert failed.after.deployment.kind == "causal_lm" and failed.after.deployment.champion_version == 1
    classifier = decide(ModelLifecycle.empty("intents"), 1, Command.DEPLOY)
    assert [e.event.kind for e in classifier.effects if e.event is not None] == ["classifier"]  # type: ignore[attr-defined]
