"""The gate on preference pairs of the held-out split (pure; the models come in as values).

* **Win rate against the champion.** Both models answer each pair's prompt greedily; the answer
  closer to the pair's ``chosen`` answer (ROUGE-L F, the metric of ``generation``) than the other
  model's wins; equal scores (the same answer, or two equally far ones) tie and count half:
  win rate = (wins + ties / 2) / pairs. 0.5 is "as good as the champion".
* **Preference accuracy**, of each model: the share of pairs where it gives the chosen answer a
  higher log-probability than the rejected one (log p(chosen) - log p(rejected) > 0; a tie is
  wrong), what DPO trains for, measured without generating.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from enum import StrEnum
from typing import Protocol

from pydantic import BaseModel, ConfigDict

from llmops_evaluation.domain.generation import Answer, rouge_l
from llmops_models.kinds.causal_lm.preferences import PreferencePair

MAX_PAIRS_SHOWN = 100


class PairScorer(Protocol):
    """A generative model that also scores given answers."""

    def generate(
        self, messages_batch: Sequence[Sequence[dict[str, str]]], *, max_new_tokens: int, batch_size: int
    ) -> list[Answer]: ...

    def answer_logprobs(
        self, prompts: Sequence[Sequence[dict[str, str]]], answers: Sequence[str], *, batch_size: int
    ) -> list[float]:
        """log p(answer | prompt) of each (prompt, answer), summed over the answer's tokens."""
        ...


class Outcome(StrEnum):
    WIN = "win"
    TIE = "tie"
    LOSS = "loss"


def outcome(candidate_score: float, champion_score: float, *, tolerance: float = 1e-9) -> Outcome:
    """The candidate's outcome on one pair, from both answers' closeness to ``chosen``."""
    if abs(candidate_score - champion_score) <= tolerance:
        return Outcome.TIE
    return Outcome.WIN if candidate_score > champion_score else Outcome.LOSS


def win_rate(outcomes: Sequence[Outcome]) -> float | None:
    """(wins + ties / 2) / pairs; None without pairs."""
    if not outcomes:
        return None
    wins = sum(o is Outcome.WIN for o in outcomes)
    ties = sum(o is Outcome.TIE for o in outcomes)
    return (wins + ties / 2) / len(outcomes)


def preference_accuracy(chosen: Sequence[float], rejected: Sequence[float]) -> float | None:
    """Share of pairs with log p(chosen) > log p(rejected); None without pairs."""
    if len(chosen) != len(rejected):
        raise ValueError("one rejected score per chosen score")
    if not chosen:
        return None
    return sum(c > r for c, r in zip(chosen, rejected, strict=True)) / len(chosen)


class PairResult(BaseModel):
    model_config = ConfigDict(frozen=True)

    pair_id: str
    prompt: str
    """The last user turn."""
    chosen: str
    rejected: str
    candidate_answer: str
    candidate_rouge_l: float
    """ROUGE-L F of the candidate's answer against ``chosen``."""
    candidate_logp_margin: float
    """log p(chosen) - log p(rejected) under the candidate."""
    champion_answer: str | None = None
    champion_rouge_l: float | None = None
    champion_logp_margin: float | None = None
    outcome: Outcome | None = None
    """The candidate's, against the champion's answer."""


class PreferenceComparison(BaseModel):
    """Both models on the held-out preference pairs."""

    model_config = ConfigDict(frozen=True)

    pairs: int
    wins: int = 0
    ties: int = 0
    losses: int = 0
    win_rate: float | None = None
    """Against the champion; None without one (or without pairs)."""
    candidate_preference_accuracy: float | None
    champion_preference_accuracy: float | None = None
    candidate_rouge_l_to_chosen: float | None = None
    champion_rouge_l_to_chosen: float | None = None
    results: list[PairResult] = []

    def summary(self) -> dict[str, object]:
        """The numbers, without the per-pair results."""
        return self.model_dump(mode="json", exclude={"results"})


def _mean(values: Sequence[float]) -> float | None:
    return sum(values) / len(values) if values else None


def _margins(model: PairScorer, pairs: Sequence[PreferencePair], batch_size: int) -> list[float]:
    prompts = [pair.prompt for pair in pairs]
    scores = model.answer_logprobs(
        [*prompts, *prompts], [p.chosen for p in pairs] + [p.rejected for p in pairs], batch_size=batch_size
    )
    n = len(pairs)
    if len(scores) != 2 * n:
        raise ValueError("one log-probability per answer")
    # A non-finite margin (an answer the model could not score) counts as no preference.
    return [c - r if math.isfinite(c - r) else 0.0 for c, r in zip(scores[:n], scores[n:], strict=True)]


def compare_on_pairs(
    candidate: PairScorer,
    champion: PairScorer | None,
    pairs: Sequence[PreferencePair],
    *,
    max_new_tokens: int,
    batch_size: int,
) -> PreferenceComparison:
    """Both models answer every pair's prompt and score its two answers; see the module docstring."""
    if not pairs:
        return PreferenceComparison(pairs=0, candidate_preference_accuracy=None)
    prompts = [pair.prompt for pair in pairs]
    candidate_answers = candidate.generate(prompts, max_new_tokens=max_new_tokens, batch_size=batch_size)
    candidate_rouge = [rouge_l(a.text, p.chosen) for a, p in zip(candidate_answers, pairs, strict=True)]
    candidate_margins = _margins(candidate, pairs, batch_size)
    champion_answers: list[Answer] | None = None
    champion_rouge: list[float] | None = None
    champion_margins: list[float] | None = None
    if champion is not None:
        champion_answers = champion.generate(prompts, max_new_tokens=max_new_tokens, batch_size=batch_size)
        champion_rouge = [rouge_l(a.text, p.chosen) for a, p in zip(champion_answers, pairs, strict=True)]
        champion_margins = _margins(champion, pairs, batch_size)
    outcomes = [outcome(c, h) for c, h in zip(candidate_rouge, champion_rouge, strict=True)] if champion_rouge else []
    results = []
    for i, pair in enumerate(pairs[:MAX_PAIRS_SHOWN]):
        last_user = next((m["content"] for m in reversed(pair.prompt) if m["role"] == "user"), "")
        results.append(
            PairResult(
                pair_id=pair.pair_id,
                prompt=last_user,
                chosen=pair.chosen,
                rejected=pair.rejected,
                candidate_answer=candidate_answers[i].text,
                candidate_rouge_l=candidate_rouge[i],
                candidate_logp_margin=candidate_margins[i],
                champion_answer=champion_answers[i].text if champion_answers else None,
                champion_rouge_l=champion_rouge[i] if champion_rouge else None,
                champion_logp_margin=champion_margins[i] if champion_margins else None,
                outcome=outcomes[i] if outcomes else None,
            )
        )
    return PreferenceComparison(
        pairs=len(pairs),
        wins=sum(o is Outcome.WIN for o in outcomes),
        ties=sum(o is Outcome.TIE for o in outcomes),
        losses=sum(o is Outcome.LOSS for o in outcomes),
        win_rate=win_rate(outcomes),
        candidate_preference_accuracy=preference_accuracy(candidate_margins, [0.0] * len(candidate_margins)),
        champion_preference_accuracy=(
            preference_accuracy(champion_margins, [0.0] * len(champion_margins)) if champion_margins else None
        ),
        candidate_rouge_l_to_chosen=_mean(candidate_rouge),
        champion_rouge_l_to_chosen=_mean(champion_rouge) if champion_rouge else None,
        results=results,
    )
