"""Loading a model version from the artifact store, checked against its manifest, as a ``Scorer``."""

from __future__ import annotations

import json
import tempfile
import time
from collections.abc import Sequence
from pathlib import Path

from llmops_evaluation.domain.ports import ModelUnavailable
from llmops_fine_tuning.classifier import MANIFEST_FILE, LoadedClassifier, load_classifier
from llmops_fine_tuning.domain.manifest import hash_folder
from llmops_storage import ArtifactStore


def model_path(model_name: str, version: int) -> str:
    return f"models/{model_name}/{version}"


class ClassifierScorer:
    """A trained classifier behind the ``Scorer`` interface."""

    def __init__(self, classifier: LoadedClassifier) -> None:
        self._classifier = classifier

    def predict(self, texts: Sequence[str]) -> tuple[list[str], list[float]]:
        if not texts:
            return [], []
        probabilities = self._classifier.predict_proba(texts)
        confidences, indices = probabilities.max(dim=-1)
        return [self._classifier.labels[i] for i in indices.tolist()], confidences.tolist()

    def latencies_ms(self, texts: Sequence[str]) -> list[float]:
        self._classifier.predict_proba(texts[:2])  # the first calls are slow (warm-up), not the model
        latencies = []
        for text in texts:
            started = time.perf_counter()
            self._classifier.predict_proba([text])
            latencies.append((time.perf_counter() - started) * 1000)
        return latencies


def load_scorer(store: ArtifactStore, model_name: str, version: int, workdir: Path) -> ClassifierScorer:
    """Download, verify every file's hash against the manifest, and load; ``ModelUnavailable`` otherwise."""
    path = model_path(model_name, version)
    if not store.is_complete(path):
        raise ModelUnavailable("artifact_missing", f"{store.uri(path)} does not exist or was never completely written")
    folder = Path(tempfile.mkdtemp(prefix=f"{model_name}-{version}-", dir=workdir))
    store.download_folder(path, folder)
    try:
        manifest = json.loads((folder / MANIFEST_FILE).read_text())
        expected = dict(manifest["files"])
    except (OSError, ValueError, KeyError) as error:
        raise ModelUnavailable("artifact_corrupt", f"manifest of {store.uri(path)} is unreadable: {error}") from error
    actual = hash_folder(folder)
    mismatched = sorted(name for name in expected.keys() | actual.keys() if expected.get(name) != actual.get(name))
    if mismatched:
        raise ModelUnavailable(
            "artifact_corrupt", f"{store.uri(path)}: files missing or changed since training: {', '.join(mismatched)}"
        )
    try:
        return ClassifierScorer(load_classifier(folder, device="cpu"))
    except Exception as error:  # a model that hashes right but cannot load is still unusable
        raise ModelUnavailable("artifact_corrupt", f"{store.uri(path)} cannot be loaded: {error!r}") from error
