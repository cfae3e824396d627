"""Training without the bus, for ``llmops train`` and the benchmarks (which reach services only
through this tool layer): fine-tuning's own service and trainer, run in this process."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from llmops_events.v1.training import Hyperparameters, TrainingCompleted
from llmops_storage import ArtifactStore


async def train_on_frame(
    store: ArtifactStore, frame: Any, *, model_name: str, hyperparameters: Hyperparameters, work_dir: Path
) -> TrainingCompleted:
    """Snapshot ``frame`` (columns ``text``, ``label``, ``split``) into ``store`` and train one version on it."""
    from llmops_fine_tuning import train_model

    return await train_model(store, frame, model_name=model_name, hyperparameters=hyperparameters, work_dir=work_dir)


async def train_on_snapshot(
    store: ArtifactStore, *, model_name: str, dataset_id: str, hyperparameters: Hyperparameters, work_dir: Path
) -> TrainingCompleted:
    from llmops_fine_tuning import train_offline

    return await train_offline(
        store, model_name=model_name, dataset_id=dataset_id, hyperparameters=hyperparameters, work_dir=work_dir
    )
