"""Test and benchmark helpers: write a dataset snapshot in the ingestion service's format, and
train a model version in-process (no broker) for the services that serve or watch models."""

from __future__ import annotations

import hashlib
import json
import tempfile
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from llmops_events import Envelope
from llmops_events.base import EventData
from llmops_events.v1.training import Hyperparameters, TrainingCompleted, TrainingRequested
from llmops_fine_tuning.adapters.datasets import MANIFEST_FILE, ArtifactDatasetReader, dataset_path
from llmops_fine_tuning.adapters.defaults import load_defaults
from llmops_fine_tuning.adapters.registry import ArtifactModelRegistry
from llmops_fine_tuning.adapters.trainer import LoraSequenceClassificationTrainer
from llmops_fine_tuning.handlers import FineTuningService, ServiceConfig
from llmops_fine_tuning.settings import FineTuningSettings
from llmops_storage import ArtifactStore


def write_snapshot(store: ArtifactStore, frame: Any, *, dataset_id: str, created_at: datetime | None = None) -> str:
    """Publish ``frame`` (columns ``text``, ``label``, ``split``; ``record_id`` added when missing)
    as the snapshot ``datasets/<dataset_id>/``: one Parquet file per split and ``manifest.json``."""
    frame = frame.copy()
    if "record_id" not in frame.columns:
        frame["record_id"] = [f"r-{i:06d}" for i in range(len(frame))]
    rows = frame.sort_values("record_id")[["record_id", "text", "label", "split"]].astype(str).values.tolist()
    content_hash = "sha256:" + hashlib.sha256(json.dumps(rows, ensure_ascii=False).encode()).hexdigest()
    created = created_at or datetime.now(UTC)
    files = {str(split): f"{split}.parquet" for split in sorted(frame["split"].unique())}
    manifest: dict[str, Any] = {
        "dataset_id": dataset_id,
        "created_at": created.isoformat(),
        "row_count": len(frame),
        "content_hash": content_hash,
        "label_counts": {str(k): int(v) for k, v in sorted(frame["label"].value_counts().items())},
        "split_counts": {str(k): int(v) for k, v in sorted(frame["split"].value_counts().items())},
        "files": files,
    }
    with tempfile.TemporaryDirectory(prefix="snapshot-") as staging:
        folder = Path(staging)
        for split, file_name in files.items():
            part = frame[frame["split"] == split].sort_values("record_id").reset_index(drop=True)
            part.to_parquet(folder / file_name, index=False)
        (folder / MANIFEST_FILE).write_text(json.dumps(manifest, indent=2, sort_keys=True))
        return store.publish_folder(folder, dataset_path(dataset_id))


class _CollectedEvents:
    """An event sink that keeps what the service would have published."""

    def __init__(self) -> None:
        self.published: list[EventData] = []

    async def publish(self, data: EventData, *, correlationid: str | None = None) -> Envelope[Any]:
        self.published.append(data)
        return Envelope.wrap(data, source="/llmops/testing")


async def train_model(
    store: ArtifactStore,
    frame: Any,
    *,
    model_name: str,
    hyperparameters: Hyperparameters,
    work_dir: Path,
    dataset_id: str | None = None,
) -> TrainingCompleted:
    """Snapshot ``frame`` and train one version of ``model_name`` on it with the real trainer,
    publishing the artifact to ``store``; raises if training did not complete."""
    dataset_id = dataset_id or f"{model_name}-{datetime.now(UTC):%Y%m%dT%H%M%S%f}"
    write_snapshot(store, frame, dataset_id=dataset_id)
    events = _CollectedEvents()
    service = FineTuningService(
        config=ServiceConfig(
            defaults=load_defaults(FineTuningSettings.model_fields["defaults_file"].default),
            min_examples_per_label=1,
            worker_name="testing",
            work_dir=work_dir,
            code_version="testing",
        ),
        datasets=ArtifactDatasetReader(store),
        registry=ArtifactModelRegistry(store),
        trainer=LoraSequenceClassificationTrainer(progress_interval_s=60),
        events=events,
    )
    request = TrainingRequested(model_name=model_name, dataset_id=dataset_id, hyperparameters=hyperparameters)
    await service.on_training_requested(Envelope.wrap(request, source="/llmops/testing"))
    completed = [event for event in events.published if isinstance(event, TrainingCompleted)]
    if not completed:
        raise RuntimeError(f"training did not complete: {events.published[-1]!r}")
    return completed[-1]
