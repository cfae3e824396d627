"""What the core needs from the outside: model backends and an inference log."""

from __future__ import annotations

from collections.abc import AsyncGenerator, Sequence
from typing import Protocol

from llmops_gateway.domain.generation import Chunk, GenerateItem, ServedGeneration
from llmops_gateway.domain.models import Prediction, ServedPrediction


class Predictor(Protocol):
    async def predict(
        self, model_name: str, version: int, texts: Sequence[str], *, timeout: float | None
    ) -> list[Prediction]:
        """Classify ``texts`` with one version; raises ``GatewayError`` subclasses."""
        ...


class Generator(Protocol):
    def generate(self, *, adapter: str, item: GenerateItem, timeout: float | None) -> AsyncGenerator[Chunk, None]:
        """Stream one generation with ``adapter`` (empty: the base model alone) until a chunk with a
        finish reason; raises ``GatewayError`` subclasses. Closing the iterator early cancels the
        generation on the backend, so its slot frees."""
        ...


class InferenceLog(Protocol):
    def record(self, served: ServedPrediction, *, latency_ms: float) -> None:
        """Queue one served prediction for logging; never blocks."""
        ...


class GenerationLog(Protocol):
    def record_generation(self, served: ServedGeneration, *, latency_ms: float) -> None:
        """Queue one finished or cancelled generation for logging; never blocks."""
        ...
