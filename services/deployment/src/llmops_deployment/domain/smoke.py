"""What a freshly loaded version must get right before it takes any traffic. Pure: no I/O."""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Protocol


class _Prediction(Protocol):
    @property
    def label(self) -> str: ...
    @property
    def confidence(self) -> float: ...
    @property
    def scores(self) -> dict[str, float]: ...


def smoke_problems(texts: Sequence[str], predictions: Sequence[_Prediction], labels: Sequence[str]) -> list[str]:
    """Readable problems with the answers to ``texts`` (empty when the version looks sane)."""
    problems: list[str] = []
    if len(predictions) != len(texts):
        return [f"{len(predictions)} answers for {len(texts)} texts"]
    known = set(labels)
    for index, prediction in enumerate(predictions):
        where = f"text {index}"
        if prediction.label not in known:
            problems.append(f"{where}: label {prediction.label!r} is not one of the model's labels")
        if not (0.0 <= prediction.confidence <= 1.0) or math.isnan(prediction.confidence):
            problems.append(f"{where}: confidence {prediction.confidence} is outside [0, 1]")
        total = sum(prediction.scores.values())
        if not math.isclose(total, 1.0, abs_tol=1e-3):
            problems.append(f"{where}: scores sum to {total:.4f}, not 1")
        best = max(prediction.scores, key=prediction.scores.__getitem__, default=None)
        if best is not None and prediction.scores[best] > prediction.scores.get(prediction.label, 0.0) + 1e-6:
            problems.append(f"{where}: label {prediction.label!r} is not the highest-scoring one ({best!r})")
    return problems
