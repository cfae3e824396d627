"""The ``classifier`` kind: a sentence encoder (all-MiniLM-L6-v2 by default) with LoRA adapters,
mean pooling and a linear head, trained on labelled texts and served by ``Predict``."""

from __future__ import annotations

import json
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from llmops_models.kinds.base import Predictor, ServingOptions, TritonModel
from llmops_models.kinds.classifier import serving

LABEL_MAP_FILE = "label_map.json"  # also spelled in network.py, which must stand alone inside Triton


class ClassifierPredictor:
    """A trained classifier version behind the ``Predictor`` interface."""

    def __init__(self, classifier: Any) -> None:
        self.classifier = classifier

    @property
    def labels(self) -> list[str]:
        return list(self.classifier.labels)

    def predict(self, texts: Sequence[str]) -> tuple[list[str], list[float]]:
        if not texts:
            return [], []
        probabilities = self.classifier.predict_proba(texts)
        confidences, indices = probabilities.max(dim=-1)
        return [self.classifier.labels[i] for i in indices.tolist()], confidences.tolist()


class ClassifierKind:
    name: str = "classifier"
    training_task: str = "sequence-classification"
    evaluation_metrics: tuple[str, ...] = (
        "accuracy",
        "macro_f1",
        "expected_calibration_error",
        "robust_accuracy",
        "max_slice_gap",
        "latency_p95_ms",
    )
    canary_signals: tuple[str, ...] = ("error_rate", "latency_p95_ms", "requests")
    monitoring_signals: tuple[str, ...] = (
        "embedding",
        "confidence",
        "oov_share",
        "prediction",
        "length",
        "word_count",
        "sentence_count",
        "non_letter_share",
        "accuracy_drop",
        "f1_drop",
    )

    def load_predictor(self, folder: Path, *, device: str = "cpu") -> Predictor:
        from llmops_models.kinds.classifier.network import load_classifier

        return ClassifierPredictor(load_classifier(folder, device=device))

    def labels(self, folder: Path) -> list[str]:
        return list(json.loads((folder / LABEL_MAP_FILE).read_text())["labels"])

    def triton_model(self, name: str, folder: Path, options: ServingOptions) -> TritonModel:
        return serving.triton_model(name, self.labels(folder), options)


CLASSIFIER = ClassifierKind()
