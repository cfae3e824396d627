"""One window against its reference: the Evidently reports and the drift score of every signal.

The scores the policy decides on are read back from the Evidently report itself (one
``ValueDrift`` metric per signal, with the policy's threshold), so the saved report explains the
decision. The embedding signal is computed with Evidently's classifier drift method directly:
its ``EmbeddingsDrift`` metric always runs a t-SNE for its plot (~50 s), too slow for every window.
"""

from __future__ import annotations

import logging
import re
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pandas as pd

from llmops_monitoring.domain.ports import Encoder, Reference
from llmops_monitoring.domain.windows import Observation

logger = logging.getLogger(__name__)

_WORD = re.compile(r"[a-z]+")

# Evidently's stat test per signal column: Wasserstein distance normed by the reference's standard
# deviation (an effect size, comparable across window sizes, unlike a p-value) for numbers and
# Jensen-Shannon distance for the label distribution.
COLUMN_METHODS: dict[str, str] = {
    "prediction": "jensenshannon",
    "confidence": "wasserstein",
    "length": "wasserstein",
    "word_count": "wasserstein",
    "sentence_count": "wasserstein",
    "non_letter_share": "wasserstein",
    "oov_share": "wasserstein",
}
MIN_EMBEDDING_SAMPLE = 20
DESCRIPTOR_COLUMNS = ("length", "word_count", "sentence_count", "non_letter_share", "oov_share")


def embedding_stride(window_size: int, sample_size: int) -> int:
    """Every how many events one is embedded, for a window of ``window_size`` events."""
    return max(1, window_size // sample_size)


def embedding_sample_rows(count: int, sample_size: int, *, stride: int | None = None) -> slice:
    """The rows of a window that are embedded: every ``stride``-th, at most ``sample_size``.

    A systematic sample, so the service can embed them while the window fills (the embedding is
    the slowest step on a CPU) and find them in the encoder's cache when the window closes.
    """
    step = stride or max(1, -(-count // sample_size))
    return slice(0, step * sample_size, step)


def words(text: str) -> list[str]:
    return _WORD.findall(text.lower())


def vocabulary_of(texts: Sequence[str]) -> frozenset[str]:
    return frozenset(w for text in texts for w in words(text))


def oov_share(texts: Sequence[str], vocabulary: frozenset[str]) -> list[float]:
    """Share of each text's words that the training data never contained (0 for a text without words)."""
    shares = []
    for text in texts:
        tokens = words(text)
        shares.append(sum(t not in vocabulary for t in tokens) / len(tokens) if tokens else 0.0)
    return shares


def window_frame(observations: Sequence[Observation]) -> pd.DataFrame:
    return pd.DataFrame(
        {
            "request_id": [o.request_id for o in observations],
            "text": [o.text for o in observations],
            "prediction": [o.label for o in observations],
            "confidence": [float(o.confidence) for o in observations],
            "label": [o.true_label for o in observations],
        }
    )


@dataclass
class Analysis:
    """Scores of one window, and the Evidently snapshots they came from."""

    signals: dict[str, float]
    drift_snapshot: Any
    quality_snapshot: Any | None
    labelled: int
    late_labelled: int
    embedding_sample: int
    quality: dict[str, float] = field(default_factory=dict)
    """Accuracy and F1 on the labelled requests and on the reference."""
    seconds: dict[str, float] = field(default_factory=dict)


def _drift_dataset(frame: pd.DataFrame, vocabulary: frozenset[str]) -> Any:
    from evidently import DataDefinition, Dataset
    from evidently.descriptors import NonLetterCharacterPercentage, SentenceCount, TextLength, WordCount

    data = frame[["text", "prediction", "confidence"]].copy()
    data["text"] = data["text"].astype(str)
    data["prediction"] = data["prediction"].astype(str)
    data["oov_share"] = oov_share(data["text"].tolist(), vocabulary)
    definition = DataDefinition(
        text_columns=["text"], categorical_columns=["prediction"], numerical_columns=["confidence", "oov_share"]
    )
    return Dataset.from_pandas(
        data,
        data_definition=definition,
        descriptors=[
            TextLength("text", alias="length"),
            WordCount("text", alias="word_count"),
            SentenceCount("text", alias="sentence_count"),
            NonLetterCharacterPercentage("text", alias="non_letter_share"),
        ],
    )


def embedding_drift(current: np.ndarray, reference: np.ndarray) -> float:
    """ROC AUC of Evidently's domain classifier on the two embedding sets (0.5: indistinguishable)."""
    from evidently.metrics.embeddings import ModelDriftMethod

    columns = [f"e{i}" for i in range(reference.shape[1])]
    score, _, _ = ModelDriftMethod()(pd.DataFrame(current, columns=columns), pd.DataFrame(reference, columns=columns))
    return float(score)


def _classification_scores(true: Sequence[str], predicted: Sequence[str]) -> tuple[float, float]:
    from sklearn.metrics import accuracy_score, f1_score

    return float(accuracy_score(true, predicted)), float(f1_score(true, predicted, average="weighted", zero_division=0))


def analyse(
    observations: Sequence[Observation],
    reference: Reference,
    *,
    encoder: Encoder,
    thresholds: dict[str, float],
    embedding_sample_size: int,
    late_labelled: Sequence[Observation] = (),
    stride: int | None = None,
) -> Analysis:
    """Every signal of a window (descriptors, prediction, confidence, embeddings, quality when labelled)."""
    from evidently import DataDefinition, Dataset, MulticlassClassification, Report
    from evidently.metrics import ValueDrift
    from evidently.presets import ClassificationPreset

    seconds: dict[str, float] = {}
    started = time.perf_counter()
    frame = window_frame(observations)
    drift_metrics = [
        ValueDrift(column=column, method=method, threshold=thresholds.get(column))
        for column, method in COLUMN_METHODS.items()
    ]
    drift_snapshot = Report(drift_metrics).run(
        _drift_dataset(frame, reference.vocabulary), _drift_dataset(reference.frame, reference.vocabulary)
    )
    signals: dict[str, float] = {}
    for metric in drift_snapshot.dict()["metrics"]:
        column = metric.get("config", {}).get("column")
        if column in COLUMN_METHODS and metric.get("value") is not None:
            signals[column] = float(metric["value"])
    seconds["evidently_drift"] = time.perf_counter() - started

    started = time.perf_counter()
    sample = frame["text"].astype(str).iloc[embedding_sample_rows(len(frame), embedding_sample_size, stride=stride)]
    if len(sample) >= MIN_EMBEDDING_SAMPLE:  # the classifier's held-out half needs both sides
        current_embeddings = encoder.encode(sample.tolist())
        seconds["embed"] = time.perf_counter() - started
        started = time.perf_counter()
        signals["embedding"] = embedding_drift(current_embeddings, reference.embeddings)
        seconds["embedding_drift"] = time.perf_counter() - started

    labelled = [o for o in observations if o.true_label is not None] + list(late_labelled)
    quality: dict[str, float] = {}
    quality_snapshot = None
    if labelled:
        started = time.perf_counter()
        ref_accuracy, ref_f1 = _classification_scores(
            reference.frame["label"].astype(str).tolist(), reference.frame["prediction"].astype(str).tolist()
        )
        accuracy, f1 = _classification_scores([str(o.true_label) for o in labelled], [o.label for o in labelled])
        quality = {
            "accuracy": accuracy,
            "f1": f1,
            "reference_accuracy": ref_accuracy,
            "reference_f1": ref_f1,
            "labelled": float(len(labelled)),
        }
        signals["accuracy_drop"] = ref_accuracy - accuracy
        signals["f1_drop"] = ref_f1 - f1
        # Evidently's classification report knows only the reference's labels; feedback may name
        # an intent the model never saw (a new topic). Those rows count in the scores above and
        # in ``new_label_rows``; the human report covers the rest.
        known = set(reference.frame["label"].astype(str))
        in_reference = [o for o in labelled if str(o.true_label) in known]
        quality["new_label_rows"] = float(len(labelled) - len(in_reference))
        if in_reference:
            definition = DataDefinition(
                classification=[MulticlassClassification(target="target", prediction_labels="prediction")],
                categorical_columns=["target", "prediction"],
            )
            current_quality = pd.DataFrame(
                {"target": [str(o.true_label) for o in in_reference], "prediction": [o.label for o in in_reference]}
            )
            reference_quality = pd.DataFrame(
                {
                    "target": reference.frame["label"].astype(str),
                    "prediction": reference.frame["prediction"].astype(str),
                }
            )
            try:
                quality_snapshot = Report([ClassificationPreset()]).run(
                    Dataset.from_pandas(current_quality, data_definition=definition),
                    Dataset.from_pandas(reference_quality, data_definition=definition),
                )
            except Exception as error:  # e.g. Evidently 0.7 takes two labels for a binary task without pos_label
                # The figures above decide; only the human-readable classification report is lost.
                logger.warning("Evidently's classification report failed", extra={"error": repr(error)})
        seconds["evidently_quality"] = time.perf_counter() - started
    return Analysis(
        signals=signals,
        drift_snapshot=drift_snapshot,
        quality_snapshot=quality_snapshot,
        labelled=len(labelled),
        late_labelled=len(late_labelled),
        embedding_sample=len(sample),
        quality=quality,
        seconds=seconds,
    )
