"""What the monitoring needs from the outside world, as small interfaces and plain values."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, Protocol

import numpy as np
import pandas as pd


class Encoder(Protocol):
    """Sentence embeddings (one row per text)."""

    def encode(self, texts: Sequence[str]) -> np.ndarray: ...


class Predictor(Protocol):
    """A model version: predicted label and its confidence, per text."""

    def predict(self, texts: Sequence[str]) -> tuple[list[str], list[float]]: ...


@dataclass(frozen=True)
class Reference:
    """What a model version's traffic is compared with: a sample of its training snapshot's validation
    split with the model's own predictions on it, their embeddings, and the training vocabulary."""

    model_name: str
    model_version: int
    dataset_id: str
    frame: pd.DataFrame
    """Columns ``text``, ``label`` (true), ``prediction``, ``confidence``."""
    embeddings: np.ndarray
    vocabulary: frozenset[str]

    @property
    def size(self) -> int:
        return len(self.frame)


@dataclass(frozen=True)
class GenerationReference:
    """What a causal LM version's generations are compared with: a seeded sample of the training
    conversations of its instructions snapshot (last user turns and final answers), the prompts'
    embeddings, the training vocabulary, and the task's declared output format."""

    model_name: str
    model_version: int
    dataset_id: str
    prompts: list[str]
    answers: list[str]
    embeddings: np.ndarray
    vocabulary: frozenset[str]
    output_format: tuple[tuple[str, ...] | None, Any | None] | None = None
    """``(labels, json_schema)`` the task declares (``output_format_json``), None when it declares none."""

    @property
    def size(self) -> int:
        return len(self.prompts)
