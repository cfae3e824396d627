"""The signals of generation windows as pure functions: refusals, PII, format, finish reasons,
timings, feedback shares and exact match against corrections; the task's declared format; the
policy's ``generation`` section (unknown keys are errors) and how its rules decide; the late join
of feedback to generations."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import UTC, datetime
from pathlib import Path

import numpy as np
import pytest
from pydantic import ValidationError

from llmops_monitoring.adapters.generation_reference import declared_format
from llmops_monitoring.domain.generation import (
    GenerationFeedbackJoin,
    GenerationObservation,
    analyse_generations,
    feedback_signals,
    has_pii,
    is_refusal,
    output_signals,
    timing_signals,
)
from llmops_monitoring.domain.policy import (
    GENERATION_SIGNALS,
    Action,
    DriftPolicy,
    GenerationPolicy,
    PolicyState,
    decide,
    load_policy,
)
from llmops_monitoring.domain.ports import GenerationReference
from llmops_monitoring.domain.windows import WindowBook, WindowKey

REPO = Path(__file__).resolve().parents[4]
NOW = datetime(2026, 12, 1, tzinfo=UTC)


def generation(
    output: str = "card_arrival",
    *,
    prompt: str = "my card has not arrived",
    finish_reason: str = "stop",
    ttft: float | None = 100.0,
    rate: float | None = 20.0,
    rating: int | None = None,
    corrected: str | None = None,
    request_id: str = "r",
) -> GenerationObservation:
    return GenerationObservation(
        request_id=request_id,
        prompt=prompt,
        output=output,
        finish_reason=finish_reason,
        prompt_tokens=10,
        completion_tokens=4,
        time_to_first_token_ms=ttft,
        tokens_per_s=rate,
        served_at=NOW,
        rating=rating,
        corrected_answer=corrected,
    )


def test_refusals_are_found_whatever_the_case_quotes_and_spacing() -> None:
    assert is_refusal("I'm sorry, but I can't help with that.")
    assert is_refusal("As an AI   language model, I have no opinion")
    assert is_refusal("I\u2019M UNABLE TO do that")
    assert not is_refusal("card_arrival")
    assert not is_refusal("Sorry for the wait: your card ships tomorrow.")


def test_pii_is_a_gateway_placeholder_or_a_finding_of_the_detectors() -> None:
    assert has_pii("write to <EMAIL> today", None)
    assert has_pii("call 555", lambda text: 1)
    assert not has_pii("card_arrival", lambda text: 0)
    assert not has_pii("card_arrival", None)


def test_output_shares_and_the_declared_format() -> None:
    window = [
        generation("card_arrival"),
        generation("I'm sorry, but I cannot help with that."),
        generation("mail <EMAIL>", finish_reason="length"),
        generation("lost_or_stolen_card"),
    ]
    labels = ("card_arrival", "lost_or_stolen_card")
    signals, flags = output_signals(window, output_format=(labels, None), find_pii=None)
    assert signals["refusal_share"] == 0.25
    assert signals["pii_share"] == 0.25
    assert signals["length_finish_share"] == 0.25
    assert signals["format_invalid_share"] == 0.5
    assert flags["format_invalid"] == [False, True, True, False]
    undeclared, _ = output_signals(window, output_format=None, find_pii=None)
    assert "format_invalid_share" not in undeclared
    schema = {"type": "object", "required": ["intent"], "properties": {"intent": {"type": "string"}}}
    json_window = [generation('{"intent": "card_arrival"}'), generation("card_arrival")]
    json_signals, _ = output_signals(json_window, output_format=(None, schema), find_pii=None)
    assert json_signals["format_invalid_share"] == 0.5


def test_timings_are_the_ttft_p95_and_the_median_ms_per_token() -> None:
    window = [generation(ttft=float(t), rate=r) for t, r in zip(range(1, 101), [10.0] * 60 + [50.0] * 40, strict=True)]
    signals = timing_signals(window)
    assert signals["ttft_p95_ms"] == pytest.approx(95.05)
    assert signals["ms_per_token"] == pytest.approx(100.0)
    assert timing_signals([generation(ttft=None, rate=None), generation(ttft=None, rate=0.0)]) == {}


def test_feedback_shares_and_exact_match_against_corrections() -> None:
    window = [
        generation("card_arrival", rating=5),
        generation("card arrival", corrected="Card_Arrival!"),  # a correction equal to the answer confirms it
        generation("I'm sorry, but I can't", rating=1, corrected="lost_or_stolen_card"),
        generation("card_arrival", rating=2),
        generation("card_arrival"),
    ]
    signals, figures = feedback_signals(window)
    assert signals["thumbs_down_share"] == pytest.approx(2 / 3)
    assert signals["corrected_share"] == pytest.approx(2 / 5)
    assert signals["correction_mismatch_share"] == pytest.approx(1 / 5)
    assert figures["corrected_exact_match"] == 0.5
    assert figures["with_feedback"] == 4 and figures["rated"] == 3 and figures["corrected"] == 2
    unrated, _ = feedback_signals([generation()])
    assert "thumbs_down_share" not in unrated and unrated["corrected_share"] == 0.0


def test_the_declared_format_is_the_majority_one_or_none() -> None:
    labels = '{"labels": ["a", "b"], "json_schema": null}'
    assert declared_format([labels, labels, ""]) == (("a", "b"), None)
    assert declared_format([labels, "", ""]) is None  # fewer than half declare one
    assert declared_format(["", ""]) is None
    assert declared_format(["not json", labels, labels]) == (("a", "b"), None)


def test_the_shipped_policy_has_a_generation_section_for_every_signal() -> None:
    policy = load_policy(REPO / "deploy" / "policies" / "drift.yaml")
    rules = policy.generation.rules
    # Every signal but the timings (reported only: retraining does not fix a slow server).
    assert set(rules.thresholds) == set(GENERATION_SIGNALS) - {"ttft_p95_ms", "ms_per_token"}
    assert policy.generation == GenerationPolicy()  # the file repeats the built-in defaults


@pytest.mark.parametrize(
    "section",
    [
        {"unknown_key": 1},
        {"drift_thresholds": {"prompt_language": 0.5}},
        {"output_thresholds": {"prompt_embedding": 0.5}},
        {"feedback_thresholds": {"refusal_share": 0.5}},
        {"decide_on": ["prompt_length"], "min_breached_signals": 1, "drift_thresholds": {"prompt_embedding": 0.6}},
        {"decide_on": ["prompt_embedding"], "min_breached_signals": 2},
    ],
)
def test_a_bad_generation_section_is_an_error(section: dict[str, object]) -> None:
    with pytest.raises(ValidationError):
        DriftPolicy.model_validate({"generation": section})


def _decide(policy: DriftPolicy, signals: dict[str, float], *, labelled: int = 0, size: int = 50) -> Action:
    return decide(
        policy,
        signals=signals,
        window_size=size,
        labelled=labelled,
        state=PolicyState(),
        now=1e9,
        rules=policy.generation.rules,
    ).action


def test_generation_rules_decide_under_the_shared_debounce() -> None:
    policy = DriftPolicy.model_validate(
        {"consecutive_windows": 1, "generation": {"min_window_size": 20, "min_feedback": 10}}
    )
    assert _decide(policy, {"refusal_share": 0.5}) is Action.REQUEST  # an output signal decides alone
    assert _decide(policy, {"refusal_share": 0.5}, size=10) is Action.INSUFFICIENT
    assert _decide(policy, {"thumbs_down_share": 0.9}, labelled=5) is Action.NONE  # too little feedback
    assert _decide(policy, {"thumbs_down_share": 0.9}, labelled=10) is Action.REQUEST
    assert _decide(policy, {"prompt_embedding": 0.9}) is Action.NONE  # one of two drift signals needed
    assert _decide(policy, {"prompt_embedding": 0.9, "prompt_oov_share": 0.9}) is Action.REQUEST
    assert _decide(policy, {"prompt_length": 9.0, "output_length": 9.0}) is Action.NONE  # reported only
    debounced = policy.model_copy(update={"consecutive_windows": 2})
    assert _decide(debounced, {"refusal_share": 0.5}) is Action.DEBOUNCE


def test_late_feedback_goes_to_the_next_report_of_the_version() -> None:
    book: WindowBook[GenerationObservation] = WindowBook(max_events=2, max_seconds=None)
    join = GenerationFeedbackJoin(max_tracked=10)
    key = WindowKey("bot", 1)
    first = generation(request_id="a")
    window, _ = book.add(key, first, now=0)
    join.served(window, first)
    assert join.feedback("a", rating=1, corrected_answer=None, book=book) == "window"
    second = generation(request_id="b")
    window, closed = book.add(key, second, now=0)
    join.served(window, second)
    assert closed is not None
    assert join.feedback("b", rating=None, corrected_answer="x", book=book) == "late"
    assert join.feedback("b", rating=1, corrected_answer=None, book=book) == "late"  # counted once
    assert [o.request_id for o in join.take_late(key)] == ["b"]
    assert second.rating == 1 and second.corrected_answer == "x"
    assert join.take_late(key) == []


class ZeroEncoder:
    def encode(self, texts: Sequence[str]) -> np.ndarray:
        return np.zeros((len(texts), 4), dtype=np.float32)


def test_a_window_against_its_reference_has_every_signal_of_the_families() -> None:
    prompts = [f"my card number {i} has not arrived yet" for i in range(40)]
    reference = GenerationReference(
        model_name="bot",
        model_version=1,
        dataset_id="instructions-1",
        prompts=prompts,
        answers=["card_arrival"] * 40,
        embeddings=np.zeros((40, 4), dtype=np.float32),
        vocabulary=frozenset(["my", "card", "number", "has", "not", "arrived", "yet"]),
        output_format=(("card_arrival",), None),
    )
    window = [generation(prompt=p, rating=4) for p in prompts[:20]] + [
        generation("I'm sorry, but I cannot help.", prompt="book me a flight to paris", rating=1) for _ in range(20)
    ]
    analysis = analyse_generations(
        window,
        reference,
        encoder=ZeroEncoder(),
        thresholds={"prompt_length": 0.25},
        embedding_sample_size=40,
        find_pii=None,
    )
    assert set(analysis.signals) == set(GENERATION_SIGNALS)
    assert analysis.signals["refusal_share"] == 0.5 and analysis.signals["format_invalid_share"] == 0.5
    assert analysis.signals["thumbs_down_share"] == 0.5
    assert analysis.signals["prompt_oov_share"] > 0.5  # half the prompts are all new words
    assert analysis.with_feedback == 40 and analysis.embedding_sample == 40
    names = [m["metric_name"] for m in analysis.drift_snapshot.dict()["metrics"]]
    assert any(n.startswith("MeanValue(column=refusal") for n in names)
