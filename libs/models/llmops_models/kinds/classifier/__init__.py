"""The ``classifier`` kind: a sentence encoder (all-MiniLM-L6-v2 by default) with LoRA adapters
(or fine-tuned in full), mean pooling and a linear head, trained on labelled texts and served by ``Predict``."""

from __future__ import annotations

import json
import logging
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from llmops_models.kinds.base import Predictor, ServingOptions, TritonModel
from llmops_models.kinds.classifier import serving

logger = logging.getLogger(__name__)

LABEL_MAP_FILE = "label_map.json"  # also spelled in network.py, which must stand alone inside Triton
TRAINED_FILES = ("head.safetensors", "tokenizer", LABEL_MAP_FILE, "training_config.json")
ENCODER_WEIGHTS = ("adapter", "encoder")
"""What a trained classifier folder holds before its export (``network.py``'s layout): the files
above and one of these, the LoRA adapter or the encoder fine-tuned in full."""


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


class OnnxClassifierPredictor:
    """The optimized export (ONNX Runtime, what Triton serves on CPU) behind ``Predictor``."""

    def __init__(self, classifier: Any) -> None:
        self.classifier = classifier

    @property
    def labels(self) -> list[str]:
        return list(self.classifier.labels)

    def predict(self, texts: Sequence[str]) -> tuple[list[str], list[float]]:
        if not texts:
            return [], []
        probabilities = self.classifier.predict_proba(texts)
        return [self.classifier.labels[i] for i in probabilities.argmax(axis=1).tolist()], [
            float(p) for p in probabilities.max(axis=1)
        ]


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

    def load_optimized_predictor(self, folder: Path) -> Predictor | None:
        from llmops_models.kinds.classifier.onnx_runtime import OnnxClassifier, has_optimized

        return OnnxClassifierPredictor(OnnxClassifier(folder)) if has_optimized(folder) else None

    def labels(self, folder: Path) -> list[str]:
        return list(json.loads((folder / LABEL_MAP_FILE).read_text())["labels"])

    def triton_model(self, name: str, folder: Path, options: ServingOptions) -> TritonModel:
        from llmops_models.kinds.classifier.onnx_runtime import has_optimized

        return serving.triton_model(name, self.labels(folder), options, has_optimized=has_optimized(folder))

    def optimize(self, folder: Path) -> dict[str, Any] | None:
        """Export to ONNX and quantize to int8 (``onnx_export``). A model that cannot be exported
        is still published, without the optimized format: it is served by PyTorch then."""
        trained = all((folder / name).exists() for name in TRAINED_FILES)
        if not trained or not any((folder / name).is_dir() for name in ENCODER_WEIGHTS):
            return None  # not a trained classifier folder (nothing to export)
        from llmops_models.kinds.classifier.onnx_export import export_optimized, remove_optimized

        try:
            return export_optimized(folder)
        except Exception:
            logger.warning("ONNX export failed; the artifact is published without it", exc_info=True)
            remove_optimized(folder)
            return None


CLASSIFIER = ClassifierKind()
