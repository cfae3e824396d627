"""The gate on held-out preference pairs, without a model: win/tie/loss counting, the win rate,
preference accuracy, both models compared on the same pairs, and the ``min_win_rate`` rule."""

from __future__ import annotations

from collections.abc import Sequence

import pytest

from llmops_evaluation.domain.generation import Answer, GenerativeMetrics
from llmops_evaluation.domain.generative_policy import GenerativeEvidence, GenerativePolicy, decide_generative
from llmops_evaluation.domain.preferences import (
    Outcome,
    PreferenceComparison,
    compare_on_pairs,
    outcome,
    preference_accuracy,
    win_rate,
)
from llmops_events.v1 import Decision
from llmops_models.kinds.causal_lm.preferences import PreferencePair


class Fixed:
    """Answers from a table (last user turn → answer); log p(answer) from another table, -10 otherwise."""

    def __init__(self, answers: dict[str, str], logprobs: dict[str, float] | None = None) -> None:
        self.answers = answers
        self.logprobs = logprobs or {}

    def generate(
        self, messages_batch: Sequence[Sequence[dict[str, str]]], *, max_new_tokens: int, batch_size: int
    ) -> list[Answer]:
        return [
            Answer(text=self.answers[m[-1]["content"]], output_tokens=2, ttft_ms=1.0, latency_ms=2.0, tokens_per_s=1.0)
            for m in messages_batch
        ]

    def answer_logprobs(
        self, prompts: Sequence[Sequence[dict[str, str]]], answers: Sequence[str], *, batch_size: int
    ) -> list[float]:
        return [self.logprobs.get(answer, -10.0) for answer in answers]


def _pair(i: int, chosen: str, rejected: str) -> PreferencePair:
    return PreferencePair(
        pair_id=f"p{i}", prompt=[{"role": "user", "content": f"q{i}"}], chosen=chosen, rejected=rejected
    )


PAIRS = [
    _pair(0, "your card arrives in three days", "no idea"),
    _pair(1, "block the card in the app", "call us"),
    _pair(2, "the rate is the market rate", "it is fixed"),
    _pair(3, "top up by bank transfer", "you cannot"),
]


def test_outcomes_and_the_win_rate_count_ties_half() -> None:
    assert outcome(0.8, 0.5) is Outcome.WIN and outcome(0.2, 0.5) is Outcome.LOSS and outcome(0.5, 0.5) is Outcome.TIE
    assert win_rate([Outcome.WIN, Outcome.TIE, Outcome.LOSS, Outcome.WIN]) == pytest.approx(2.5 / 4)
    assert win_rate([Outcome.TIE] * 3) == 0.5
    assert win_rate([]) is None


def test_preference_accuracy_counts_ties_as_wrong() -> None:
    assert preference_accuracy([-1.0, -5.0, -2.0], [-2.0, -1.0, -2.0]) == pytest.approx(1 / 3)
    assert preference_accuracy([], []) is None
    with pytest.raises(ValueError):
        preference_accuracy([1.0], [])


def test_both_models_answer_and_score_the_same_pairs() -> None:
    candidate = Fixed(
        {"q0": "your card arrives in three days", "q1": "call us", "q2": "it is fixed", "q3": "top up by transfer"},
        logprobs={"your card arrives in three days": -2.0, "block the card in the app": -3.0, "call us": -4.0},
    )
    champion = Fixed(
        {"q0": "no idea", "q1": "call us", "q2": "the rate is the market rate", "q3": "you cannot"},
        logprobs={"no idea": -1.0},
    )
    comparison = compare_on_pairs(candidate, champion, PAIRS, max_new_tokens=8, batch_size=2)
    # q0 won (exact chosen vs the rejected one), q1 tied (same answer), q2 lost, q3 won (closer).
    assert [r.outcome for r in comparison.results] == [Outcome.WIN, Outcome.TIE, Outcome.LOSS, Outcome.WIN]
    assert (comparison.wins, comparison.ties, comparison.losses) == (2, 1, 1)
    assert comparison.win_rate == pytest.approx(2.5 / 4)
    # candidate: chosen beats rejected on q0 (-2 > -10) and q1 (-3 > -4); q2, q3 tie at -10: wrong.
    assert comparison.candidate_preference_accuracy == pytest.approx(0.5)
    # champion: q0's rejected answer scores -1 > -10; every other pair ties.
    assert comparison.champion_preference_accuracy == 0.0
    assert comparison.results[0].candidate_logp_margin == pytest.approx(8.0)
    assert comparison.candidate_rouge_l_to_chosen is not None and comparison.champion_rouge_l_to_chosen is not None
    assert "results" not in comparison.summary() and comparison.summary()["win_rate"] == pytest.approx(0.625)


def test_without_a_champion_only_the_preference_accuracy_is_reported() -> None:
    candidate = Fixed({f"q{i}": "x" for i in range(4)}, logprobs={p.chosen: -1.0 for p in PAIRS})
    comparison = compare_on_pairs(candidate, None, PAIRS, max_new_tokens=8, batch_size=4)
    assert comparison.win_rate is None and comparison.wins == comparison.ties == comparison.losses == 0
    assert comparison.candidate_preference_accuracy == 1.0 and comparison.champion_preference_accuracy is None
    assert compare_on_pairs(candidate, None, [], max_new_tokens=8, batch_size=4).pairs == 0


def _metrics() -> GenerativeMetrics:
    return GenerativeMetrics(
        examples=50,
        exact_match=0.5,
        rouge_l=0.5,
        chrf=0.5,
        format_validity=None,
        format_examples=0,
        pii_leakage=0.0,
        banned_phrases=0.0,
        prompt_leakage=None,
        probes=0,
        ttft_ms_p50=1.0,
        ttft_ms_p95=1.0,
        tokens_per_s=10.0,
        output_tokens_mean=2.0,
        throughput_tokens_per_s=10.0,
        mean_token_probability=0.5,
    )


def _decide(policy: GenerativePolicy, preferences: PreferenceComparison | None) -> tuple[Decision, list[str]]:
    decision, reasons = decide_generative(policy, GenerativeEvidence(candidate=_metrics(), preferences=preferences))
    return decision, [r.rule for r in reasons]


def test_min_win_rate_rejects_only_when_set_and_with_enough_pairs() -> None:
    losing = PreferenceComparison(
        pairs=30, wins=5, ties=0, losses=25, win_rate=5 / 30, candidate_preference_accuracy=0.4
    )
    assert _decide(GenerativePolicy(), losing) == (Decision.APPROVED, [])  # absent: informational
    decision, rules = _decide(GenerativePolicy(min_win_rate=0.5), losing)
    assert decision is Decision.REJECTED and rules == ["min_win_rate"]
    few = losing.model_copy(update={"pairs": 5})
    assert _decide(GenerativePolicy(min_win_rate=0.5, min_win_rate_pairs=20), few)[0] is Decision.APPROVED
    no_champion = PreferenceComparison(pairs=30, candidate_preference_accuracy=0.9)
    assert _decide(GenerativePolicy(min_win_rate=0.5), no_champion)[0] is Decision.APPROVED
    assert _decide(GenerativePolicy(min_win_rate=0.5), None)[0] is Decision.APPROVED
    winning = losing.model_copy(update={"wins": 20, "losses": 10, "win_rate": 20 / 30})
    assert _decide(GenerativePolicy(min_win_rate=0.5), winning)[0] is Decision.APPROVED
