"""Paired tests on the same examples, so noise does not promote a worse model."""

from __future__ import annotations

import numpy as np
from pydantic import BaseModel, ConfigDict
from scipy.stats import binomtest


class PairedComparison(BaseModel):
    """Candidate vs champion on the same examples."""

    model_config = ConfigDict(frozen=True)

    examples: int
    accuracy_difference: float
    """Candidate accuracy minus champion accuracy."""
    candidate_only_correct: int
    champion_only_correct: int
    mcnemar_p_value: float
    """Exact (binomial) McNemar test on the discordant pairs; 1.0 when there are none."""
    bootstrap_interval: tuple[float, float]
    """95% paired-bootstrap interval of the accuracy difference."""

    def significantly_worse(self, alpha: float) -> bool:
        return self.accuracy_difference < 0 and self.mcnemar_p_value < alpha

    def significantly_better(self, alpha: float) -> bool:
        return self.accuracy_difference > 0 and self.mcnemar_p_value < alpha


def compare(
    candidate_correct: np.ndarray, champion_correct: np.ndarray, *, resamples: int = 2000, seed: int = 0
) -> PairedComparison:
    """McNemar's exact test and a paired bootstrap of the accuracy difference."""
    candidate = np.asarray(candidate_correct, dtype=bool)
    champion = np.asarray(champion_correct, dtype=bool)
    if candidate.shape != champion.shape:
        raise ValueError("candidate and champion must be scored on the same examples")
    candidate_only = int((candidate & ~champion).sum())
    champion_only = int((~candidate & champion).sum())
    discordant = candidate_only + champion_only
    p_value = float(binomtest(candidate_only, discordant, 0.5).pvalue) if discordant else 1.0
    difference = candidate.astype(float) - champion.astype(float)
    rng = np.random.default_rng(seed)
    if difference.size:
        samples = rng.integers(0, difference.size, size=(resamples, difference.size))
        means = difference[samples].mean(axis=1)
        interval = (float(np.percentile(means, 2.5)), float(np.percentile(means, 97.5)))
    else:
        interval = (0.0, 0.0)
    return PairedComparison(
        examples=int(difference.size),
        accuracy_difference=float(difference.mean()) if difference.size else 0.0,
        candidate_only_correct=candidate_only,
        champion_only_correct=champion_only,
        mcnemar_p_value=p_value,
        bootstrap_interval=interval,
    )


class BootstrapComparison(BaseModel):
    """Candidate vs champion on a per-example score (ROUGE-L), same examples: a paired bootstrap."""

    model_config = ConfigDict(frozen=True)

    examples: int
    mean_difference: float
    """Candidate mean minus champion mean."""
    interval: tuple[float, float]
    """Two-sided ``confidence`` interval of the mean difference (percentiles of the resamples)."""
    confidence: float
    resamples: int
    p_value: float
    """Two-sided: twice the smaller share of resampled mean differences on either side of zero
    (at most 1; a resolution of 1/resamples)."""

    def significantly_worse(self) -> bool:
        return self.interval[1] < 0

    def significantly_better(self) -> bool:
        return self.interval[0] > 0


def paired_bootstrap(
    candidate: np.ndarray, champion: np.ndarray, *, resamples: int = 1000, seed: int = 0, confidence: float = 0.95
) -> BootstrapComparison:
    """Resample the examples with replacement (seeded), the same indices for both models, and
    read the interval of the mean difference off the resampled means."""
    candidate_scores = np.asarray(candidate, dtype=float)
    champion_scores = np.asarray(champion, dtype=float)
    if candidate_scores.shape != champion_scores.shape:
        raise ValueError("candidate and champion must be scored on the same examples")
    difference = candidate_scores - champion_scores
    if difference.size == 0:
        return BootstrapComparison(
            examples=0, mean_difference=0.0, interval=(0.0, 0.0), confidence=confidence, resamples=0, p_value=1.0
        )
    rng = np.random.default_rng(seed)
    means = difference[rng.integers(0, difference.size, size=(resamples, difference.size))].mean(axis=1)
    tail = (1 - confidence) / 2 * 100
    p_value = min(1.0, 2 * min(float((means <= 0).mean()), float((means >= 0).mean())))
    return BootstrapComparison(
        examples=int(difference.size),
        mean_difference=float(difference.mean()),
        interval=(float(np.percentile(means, tail)), float(np.percentile(means, 100 - tail))),
        confidence=confidence,
        resamples=resamples,
        p_value=p_value,
    )
