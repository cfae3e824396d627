"""Loading a model version from the artifact store, checked against its manifest, as a ``Scorer``."""

from __future__ import annotations

import tempfile
import time
from collections.abc import Sequence
from pathlib import Path

from llmops_evaluation.errors import ModelUnavailable
from llmops_models import ArtifactMissing, ManifestMismatch, ModelRegistry
from llmops_models.kinds import Predictor, kind_of
from llmops_storage import ArtifactStore


class PredictorScorer:
    """A loaded model version (of any kind) behind the ``Scorer`` interface."""

    def __init__(self, predictor: Predictor) -> None:
        self._predictor = predictor

    def predict(self, texts: Sequence[str]) -> tuple[list[str], list[float]]:
        return self._predictor.predict(texts)

    def latencies_ms(self, texts: Sequence[str]) -> list[float]:
        self._predictor.predict(texts[:2])  # the first calls are slow (warm-up), not the model
        latencies = []
        for text in texts:
            started = time.perf_counter()
            self._predictor.predict([text])
            latencies.append((time.perf_counter() - started) * 1000)
        return latencies


def load_scorer(store: ArtifactStore, model_name: str, version: int, workdir: Path) -> PredictorScorer:
    """Download, verify every file's hash against the manifest, and load; ``ModelUnavailable`` otherwise."""
    registry = ModelRegistry(store)
    folder = Path(tempfile.mkdtemp(prefix=f"{model_name}-{version}-", dir=workdir))
    try:
        manifest = registry.download_verified(model_name, version, folder)
    except ArtifactMissing as error:
        raise ModelUnavailable("artifact_missing", str(error)) from error
    except ManifestMismatch as error:
        raise ModelUnavailable("artifact_corrupt", error.detail) from error
    try:
        return PredictorScorer(kind_of(manifest).load_predictor(folder, device="cpu"))
    except Exception as error:  # a model that hashes right but cannot load is still unusable
        raise ModelUnavailable(
            "artifact_corrupt", f"{registry.uri(model_name, version)} cannot be loaded: {error!r}"
        ) from error
