"""What the core needs from the outside: a model backend and an inference log."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Protocol

from llmops_gateway.domain.models import Prediction, ServedPrediction


class Predictor(Protocol):
    async def predict(
        self, model_name: str, version: int, texts: Sequence[str], *, timeout: float | None
    ) -> list[Prediction]:
        """Classify ``texts`` with one version; raises ``GatewayError`` subclasses."""
        ...


class InferenceLog(Protocol):
    def record(self, served: ServedPrediction, *, latency_ms: float) -> None:
        """Queue one served prediction for logging; never blocks."""
        ...
