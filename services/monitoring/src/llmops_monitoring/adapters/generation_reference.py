"""A causal LM version's reference, built from the artifact store and cached on disk.

``models/<name>/<version>/manifest.json`` names the instructions snapshot the adapter was trained
on (``lineage.dataset_id``, as for classifiers); the reference is a seeded sample of its held-out
conversations (the validation split, else the test split, else the training split): the last user
turns (the prompts), the final assistant turns (the answers), the prompts' MiniLM embeddings, the
vocabulary of the training split's prompts, and the output format the task declares
(``output_format_json``). No model is loaded: the snapshot's answers are the reference
for the outputs. Kept under ``var/monitoring/references/generations/<name>/<version>/``.
"""

from __future__ import annotations

import json
import logging
import threading
from collections import Counter
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from llmops_models import ArtifactMissing, ModelRegistry, manifest_path
from llmops_models.kinds.causal_lm.conversations import (
    INSTRUCTIONS_CONTENT,
    OUTPUT_FORMAT_COLUMN,
    parse_output_format,
    snapshot_content,
)
from llmops_models.snapshots import SnapshotReader
from llmops_monitoring.domain.analysis import vocabulary_of
from llmops_monitoring.domain.ports import Encoder, GenerationReference
from llmops_monitoring.errors import ReferenceUnavailable
from llmops_storage import ArtifactStore

logger = logging.getLogger(__name__)


def declared_format(values: list[Any]) -> tuple[tuple[str, ...] | None, Any | None] | None:
    """The task's output format: the most common format the conversations declare, when at least
    half of them declare one (a task mixing formats has none to check a window against)."""
    declared: Counter[str] = Counter()
    for value in values:
        parsed = parse_output_format(value)
        if parsed is not None and parsed.declared:
            declared[json.dumps([parsed.labels, parsed.json_schema], sort_keys=True)] += 1
    if not declared:
        return None
    key, count = declared.most_common(1)[0]
    if count * 2 < len(values):
        return None
    labels, schema = json.loads(key)
    return (tuple(labels) if labels is not None else None, schema)


class GenerationReferences:
    """Generation references by (model name, version), from memory, the disk cache, or built."""

    def __init__(
        self,
        store: ArtifactStore,
        *,
        encoder: Encoder,
        cache_dir: Path,
        size: int,
        seed: int,
    ) -> None:
        self._store = store
        self._encoder = encoder
        self._cache_dir = cache_dir
        self._size = size
        self._seed = seed
        self._memory: dict[tuple[str, int], GenerationReference] = {}
        self._lock = threading.Lock()

    def get(self, model_name: str, version: int) -> GenerationReference:
        with self._lock:
            key = (model_name, version)
            if key not in self._memory:
                self._memory[key] = self._from_disk(model_name, version) or self._build(model_name, version)
            return self._memory[key]

    def _dataset_id(self, model_name: str, version: int) -> str:
        try:
            manifest = ModelRegistry(self._store).manifest(model_name, version)
        except ArtifactMissing as error:  # version 0 (the base model alone) has no manifest either
            raise ReferenceUnavailable("artifact_missing", str(error)) from error
        dataset_id = str(manifest.get("lineage", {}).get("dataset_id") or "")
        if not dataset_id:
            where = self._store.uri(manifest_path(model_name, version))
            raise ReferenceUnavailable("lineage_missing", f"{where} names no lineage.dataset_id")
        return dataset_id

    def _folder(self, model_name: str, version: int) -> Path:
        return self._cache_dir / "generations" / model_name / str(version)

    def _from_disk(self, model_name: str, version: int) -> GenerationReference | None:
        folder = self._folder(model_name, version)
        try:
            meta = json.loads((folder / "reference.json").read_text())
            frame = pd.read_parquet(folder / "frame.parquet")
            embeddings = np.load(folder / "embeddings.npy")
        except (OSError, ValueError):
            return None
        if meta.get("size") != self._size or meta.get("seed") != self._seed:
            return None
        output_format = meta.get("output_format")
        return GenerationReference(
            model_name=model_name,
            model_version=version,
            dataset_id=str(meta["dataset_id"]),
            prompts=frame["prompt"].astype(str).tolist(),
            answers=frame["answer"].astype(str).tolist(),
            embeddings=embeddings,
            vocabulary=frozenset(meta["vocabulary"]),
            output_format=(
                (tuple(output_format[0]) if output_format[0] is not None else None, output_format[1])
                if output_format is not None
                else None
            ),
        )

    def _build(self, model_name: str, version: int) -> GenerationReference:
        dataset_id = self._dataset_id(model_name, version)
        snapshots = SnapshotReader(self._store)
        if not snapshots.is_complete(dataset_id):
            raise ReferenceUnavailable("dataset_missing", f"snapshot {dataset_id!r} does not exist")
        if snapshot_content(snapshots.manifest(dataset_id)) != INSTRUCTIONS_CONTENT:
            raise ReferenceUnavailable(
                "dataset_not_instructions", f"snapshot {dataset_id} is not an instructions snapshot"
            )
        snapshot = snapshots.frame(dataset_id).dropna(subset=["text", "label"])
        if snapshot.empty:
            raise ReferenceUnavailable("dataset_empty", f"snapshot {dataset_id} has no conversations")
        train = snapshot[snapshot["split"] == "train"]
        if train.empty:
            train = snapshot
        # As for classifiers: the held-out conversations (validation, else test) against the training
        # vocabulary, so the reference's own OOV share is what unseen in-distribution prompts have
        # (a sample of the training prompts would have none, and any traffic would look drifted).
        held_out = snapshot[snapshot["split"] == "validation"]
        if held_out.empty:
            held_out = snapshot[snapshot["split"] == "test"]
        if held_out.empty:
            held_out = train
        sample = held_out.sample(n=self._size, random_state=self._seed) if len(held_out) > self._size else held_out
        prompts = sample["text"].astype(str).tolist()
        answers = sample["label"].astype(str).tolist()
        formats = train[OUTPUT_FORMAT_COLUMN].tolist() if OUTPUT_FORMAT_COLUMN in train.columns else []
        output_format = declared_format(formats) if formats else None
        logger.info(
            "building the generation reference",
            extra={"model": model_name, "version": version, "dataset_id": dataset_id},
        )
        embeddings = self._encoder.encode(prompts)
        vocabulary = vocabulary_of(train["text"].astype(str).tolist())
        reference = GenerationReference(
            model_name=model_name,
            model_version=version,
            dataset_id=dataset_id,
            prompts=prompts,
            answers=answers,
            embeddings=embeddings,
            vocabulary=vocabulary,
            output_format=output_format,
        )
        folder = self._folder(model_name, version)
        folder.mkdir(parents=True, exist_ok=True)
        pd.DataFrame({"prompt": prompts, "answer": answers}).to_parquet(folder / "frame.parquet", index=False)
        np.save(folder / "embeddings.npy", embeddings)
        (folder / "reference.json").write_text(
            json.dumps(
                {
                    "dataset_id": dataset_id,
                    "size": self._size,
                    "seed": self._seed,
                    "vocabulary": sorted(vocabulary),
                    "output_format": [
                        list(output_format[0]) if output_format[0] is not None else None,
                        output_format[1],
                    ]
                    if output_format is not None
                    else None,
                }
            )
        )
        return reference
