"""Values the gateway's core works on, independent of gRPC and Triton."""

from __future__ import annotations

from dataclasses import dataclass, field


@dataclass(frozen=True, slots=True)
class PredictItem:
    """One validated text to classify."""

    text: str
    model: str
    """The requested model name; empty means the default model."""
    tenant: str
    request_id: str


@dataclass(frozen=True, slots=True)
class Prediction:
    """What a model version answered for one text."""

    label: str
    confidence: float
    scores: dict[str, float] = field(default_factory=dict)


@dataclass(frozen=True, slots=True)
class ServedPrediction:
    """A prediction with the version that served it."""

    item: PredictItem
    prediction: Prediction
    model_name: str
    model_version: int
    route: str
