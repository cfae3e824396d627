"""One evaluation of a generative model: the candidate (and the champion) answer the same test
conversations and the same prompt-injection probes greedily, every answer is scored, and the
generative policy decides."""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any, Protocol

import numpy as np
from pydantic import BaseModel, ConfigDict

from llmops_evaluation.domain.generation import (
    Answer,
    ExampleScore,
    GenerativeMetrics,
    GenerativeTestSet,
    PiiFinder,
    ProbeResult,
    aggregate,
    corpus_chrf,
    longest_shared_run,
    prompt_leaked,
    score_examples,
)
from llmops_evaluation.domain.generative_policy import (
    GenerativeEvidence,
    GenerativePolicy,
    decide_generative,
)
from llmops_evaluation.domain.preferences import PreferenceComparison, compare_on_pairs
from llmops_evaluation.domain.statistics import BootstrapComparison, PairedComparison, compare, paired_bootstrap
from llmops_evaluation.errors import EvaluationRejected
from llmops_events.v1 import Decision, RuleFailure
from llmops_models.kinds.causal_lm.preferences import PreferencePair

ToxicityScorer = Callable[[list[str]], Sequence[float]]
"""Answers → one score in [0, 1] each (1: toxic): a user's own model, named in the settings."""


class Generator(Protocol):
    """A loaded generative model."""

    def generate(
        self, messages_batch: Sequence[Sequence[dict[str, str]]], *, max_new_tokens: int, batch_size: int
    ) -> list[Answer]:
        """One greedy answer per conversation (its final assistant turn, if any, left out)."""
        ...

    def answer_logprobs(
        self, prompts: Sequence[Sequence[dict[str, str]]], answers: Sequence[str], *, batch_size: int
    ) -> list[float]:
        """log p(answer | prompt) of each (prompt, answer), summed over the answer's tokens."""
        ...


@dataclass(frozen=True)
class Probes:
    """Prompt-injection probes and the system prompt they attack when the test set has none."""

    texts: list[str]
    canary_system_prompt: str


@dataclass(frozen=True)
class GenerationSettings:
    max_new_tokens: int
    batch_size: int
    seed: int


class GenerativeReport(BaseModel):
    """One model's answers, their scores and the aggregates."""

    model_config = ConfigDict(frozen=True)

    metrics: GenerativeMetrics
    answers: list[Answer]
    scores: list[ExampleScore]
    probes: list[ProbeResult]


class GenerativeVerdict(BaseModel):
    model_config = ConfigDict(frozen=True)

    decision: Decision
    reasons: list[RuleFailure]
    candidate: GenerativeReport
    champion: GenerativeReport | None
    exact_match_comparison: PairedComparison | None
    rouge_l_comparison: BootstrapComparison | None
    system_prompt: str
    """The system prompt the probes attacked."""
    preferences: PreferenceComparison | None = None
    """Both models on the test split's preference pairs; None when it has none."""


def _toxicity(scorer: ToxicityScorer | None, texts: list[str]) -> list[float] | None:
    if scorer is None:
        return None
    try:
        scores = [float(score) for score in scorer(texts)]
    except Exception as error:  # a user's callable: any failure is a verdict, never a crash
        raise EvaluationRejected("toxicity_scorer_error", f"the toxicity scorer failed: {error!r}") from error
    if len(scores) != len(texts) or not all(0.0 <= s <= 1.0 for s in scores):
        raise EvaluationRejected(
            "toxicity_scorer_error",
            f"the toxicity scorer must return one score in [0, 1] per answer; it returned {len(scores)} for "
            f"{len(texts)} answers",
        )
    return scores


def run_model(
    generator: Generator,
    test_set: GenerativeTestSet,
    *,
    policy: GenerativePolicy,
    settings: GenerationSettings,
    probes: Probes,
    find_pii: PiiFinder,
    toxicity: ToxicityScorer | None = None,
) -> GenerativeReport:
    """Answer every test conversation and every probe, and score the answers."""
    began = time.perf_counter()
    answers = generator.generate(
        [example.messages for example in test_set.examples],
        max_new_tokens=settings.max_new_tokens,
        batch_size=settings.batch_size,
    )
    seconds = time.perf_counter() - began
    texts = [answer.text for answer in answers]
    scores = score_examples(
        test_set.examples,
        answers,
        find_pii=find_pii,
        banned_phrases=policy.banned_phrases,
        vocabulary=test_set.vocabulary,
        toxicity=_toxicity(toxicity, texts),
    )
    system_prompt = test_set.system_prompt() or probes.canary_system_prompt
    probe_answers = generator.generate(
        [[{"role": "system", "content": system_prompt}, {"role": "user", "content": probe}] for probe in probes.texts],
        max_new_tokens=settings.max_new_tokens,
        batch_size=settings.batch_size,
    )
    probe_results = [
        ProbeResult(
            probe=probe,
            answer=answer.text,
            leaked=prompt_leaked(answer.text, system_prompt, min_chars=policy.prompt_leak_min_chars),
            shared_chars=longest_shared_run(answer.text, system_prompt),
        )
        for probe, answer in zip(probes.texts, probe_answers, strict=True)
    ]
    metrics = aggregate(
        scores,
        answers,
        probes=probe_results,
        generation_seconds=seconds,
        chrf_corpus=corpus_chrf(texts, [example.reference for example in test_set.examples]),
        slices=test_set.slices,
        toxicity_threshold=policy.toxicity_threshold,
    )
    return GenerativeReport(metrics=metrics, answers=list(answers), scores=scores, probes=probe_results)


def evaluate_generative(
    *,
    candidate: Generator,
    champion: Generator | None,
    test_set: GenerativeTestSet,
    policy: GenerativePolicy,
    settings: GenerationSettings,
    probes: Probes,
    find_pii: PiiFinder,
    toxicity: ToxicityScorer | None = None,
    pairs: Sequence[PreferencePair] = (),
) -> GenerativeVerdict:
    """Both models on the same conversations, probes and preference pairs, then the policy's decision."""
    options: dict[str, Any] = dict(
        test_set=test_set, policy=policy, settings=settings, probes=probes, find_pii=find_pii, toxicity=toxicity
    )
    candidate_report = run_model(candidate, **options)
    champion_report = em = rouge = None
    if champion is not None:
        champion_report = run_model(champion, **options)
        em = compare(
            np.asarray([s.exact_match for s in candidate_report.scores]),
            np.asarray([s.exact_match for s in champion_report.scores]),
            seed=settings.seed,
        )
        rouge = paired_bootstrap(
            np.asarray([s.rouge_l for s in candidate_report.scores]),
            np.asarray([s.rouge_l for s in champion_report.scores]),
            resamples=policy.bootstrap_resamples,
            seed=settings.seed,
            confidence=1 - policy.significance_level,
        )
    preferences = (
        compare_on_pairs(
            candidate, champion, pairs, max_new_tokens=settings.max_new_tokens, batch_size=settings.batch_size
        )
        if pairs
        else None
    )
    evidence = GenerativeEvidence(
        candidate=candidate_report.metrics,
        champion=champion_report.metrics if champion_report else None,
        exact_match_comparison=em,
        rouge_l_comparison=rouge,
        preferences=preferences,
    )
    decision, reasons = decide_generative(policy, evidence)
    return GenerativeVerdict(
        decision=decision,
        reasons=reasons,
        candidate=candidate_report,
        champion=champion_report,
        exact_match_comparison=em,
        rouge_l_comparison=rouge,
        system_prompt=test_set.system_prompt() or probes.canary_system_prompt,
        preferences=preferences,
    )
