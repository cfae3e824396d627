"""A model version's reference, built from the artifact store and cached on disk.

``models/<name>/<version>/manifest.json`` names the training snapshot (``lineage.dataset_id``);
the reference is a seeded sample of that snapshot's validation split (the test split when there
is none), the version's own predictions on it, their sentence embeddings, and the vocabulary of
the training split. Building one costs a model load, a prediction pass and an embedding pass
(tens of seconds on a CPU), so it is done once per version and kept under
``var/monitoring/references/<name>/<version>/``.
"""

from __future__ import annotations

import json
import logging
import shutil
import tempfile
import threading
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pandas as pd

from llmops_models import ArtifactMissing, ModelRegistry, manifest_path
from llmops_models.kinds import kind_of
from llmops_models.snapshots import SnapshotReader
from llmops_monitoring.domain.analysis import vocabulary_of
from llmops_monitoring.domain.ports import Encoder, Predictor, Reference
from llmops_monitoring.errors import ReferenceUnavailable
from llmops_storage import ArtifactStore

logger = logging.getLogger(__name__)

PredictorLoader = Callable[[str, int], Predictor]


def artifact_predictor_loader(store: ArtifactStore) -> PredictorLoader:
    """Loads ``models/<name>/<version>/`` (checked against its manifest) as its kind says."""
    registry = ModelRegistry(store)

    def load(model_name: str, version: int) -> Predictor:
        folder = Path(tempfile.mkdtemp(prefix=f"monitoring-{model_name}-{version}-"))
        try:
            manifest = registry.download_verified(model_name, version, folder)
            return kind_of(manifest).load_predictor(folder, device="cpu")
        except ArtifactMissing as error:
            raise ReferenceUnavailable("artifact_missing", str(error)) from error
        except Exception as error:
            raise ReferenceUnavailable(
                "artifact_corrupt", f"{registry.uri(model_name, version)} cannot be loaded: {error!r}"
            ) from error
        finally:
            shutil.rmtree(folder, ignore_errors=True)

    return load


class ArtifactReferences:
    """References by (model name, version), from memory, the disk cache, or built."""

    def __init__(
        self,
        store: ArtifactStore,
        *,
        encoder: Encoder,
        cache_dir: Path,
        size: int,
        seed: int,
        predictor_loader: PredictorLoader | None = None,
    ) -> None:
        self._store = store
        self._encoder = encoder
        self._cache_dir = cache_dir
        self._size = size
        self._seed = seed
        self._load_predictor = predictor_loader or artifact_predictor_loader(store)
        self._memory: dict[tuple[str, int], Reference] = {}
        self._lock = threading.Lock()

    def get(self, model_name: str, version: int) -> Reference:
        with self._lock:
            key = (model_name, version)
            if key not in self._memory:
                self._memory[key] = self._from_disk(model_name, version) or self._build(model_name, version)
            return self._memory[key]

    def dataset_id(self, model_name: str, version: int) -> str:
        try:
            manifest = ModelRegistry(self._store).manifest(model_name, version)
        except ArtifactMissing as error:
            raise ReferenceUnavailable("artifact_missing", str(error)) from error
        dataset_id = str(manifest.get("lineage", {}).get("dataset_id") or "")
        if not dataset_id:
            where = self._store.uri(manifest_path(model_name, version))
            raise ReferenceUnavailable("lineage_missing", f"{where} names no lineage.dataset_id")
        return dataset_id

    def _folder(self, model_name: str, version: int) -> Path:
        return self._cache_dir / model_name / str(version)

    def _from_disk(self, model_name: str, version: int) -> Reference | None:
        folder = self._folder(model_name, version)
        try:
            meta = json.loads((folder / "reference.json").read_text())
            frame = pd.read_parquet(folder / "frame.parquet")
            embeddings = np.load(folder / "embeddings.npy")
        except (OSError, ValueError):
            return None
        if meta.get("size") != self._size or meta.get("seed") != self._seed:
            return None
        return Reference(
            model_name=model_name,
            model_version=version,
            dataset_id=str(meta["dataset_id"]),
            frame=frame,
            embeddings=embeddings,
            vocabulary=frozenset(meta["vocabulary"]),
        )

    def _build(self, model_name: str, version: int) -> Reference:
        dataset_id = self.dataset_id(model_name, version)
        snapshots = SnapshotReader(self._store)
        if not snapshots.is_complete(dataset_id):
            raise ReferenceUnavailable("dataset_missing", f"snapshot {dataset_id!r} does not exist")
        snapshot = snapshots.frame(dataset_id)
        snapshot = snapshot[snapshot["label"].notna()]
        held_out = snapshot[snapshot["split"] == "validation"]
        if held_out.empty:
            held_out = snapshot[snapshot["split"] == "test"]
        if held_out.empty:
            raise ReferenceUnavailable("dataset_empty", f"snapshot {dataset_id} has no validation or test rows")
        if len(held_out) > self._size:
            held_out = held_out.sample(n=self._size, random_state=self._seed)
        texts = held_out["text"].astype(str).tolist()
        logger.info("building the reference", extra={"model": model_name, "version": version, "dataset_id": dataset_id})
        predictions, confidences = self._load_predictor(model_name, version).predict(texts)
        frame = pd.DataFrame(
            {
                "text": texts,
                "label": held_out["label"].astype(str).tolist(),
                "prediction": predictions,
                "confidence": confidences,
            }
        )
        embeddings = self._encoder.encode(texts)
        train = snapshot[snapshot["split"] == "train"]
        vocabulary = vocabulary_of((train if not train.empty else snapshot)["text"].astype(str).tolist())
        reference = Reference(
            model_name=model_name,
            model_version=version,
            dataset_id=dataset_id,
            frame=frame,
            embeddings=embeddings,
            vocabulary=vocabulary,
        )
        folder = self._folder(model_name, version)
        folder.mkdir(parents=True, exist_ok=True)
        frame.to_parquet(folder / "frame.parquet", index=False)
        np.save(folder / "embeddings.npy", embeddings)
        (folder / "reference.json").write_text(
            json.dumps(
                {"dataset_id": dataset_id, "size": self._size, "seed": self._seed, "vocabulary": sorted(vocabulary)}
            )
        )
        return reference
