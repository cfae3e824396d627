"""What the evaluation needs from the outside world, as small interfaces."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Protocol

from pydantic import BaseModel, ConfigDict


class TestSet(BaseModel):
    """Labelled examples both models are scored on, with their slice columns."""

    model_config = ConfigDict(frozen=True)

    texts: list[str]
    labels: list[str]
    slices: dict[str, list[str]] = {}
    origin: str = "test split"


class Scorer(Protocol):
    """A loaded model."""

    def predict(self, texts: Sequence[str]) -> tuple[list[str], list[float]]:
        """Predicted label and its probability, per text."""
        ...

    def latencies_ms(self, texts: Sequence[str]) -> list[float]:
        """Wall time of one-by-one predictions (batch 1)."""
        ...
