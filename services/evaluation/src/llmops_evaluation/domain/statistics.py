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
