"""Train a model version in-process, without the bus (``llmops train``, tests, benchmarks): the
same service, trainer and registry as on the bus, with the events collected instead of published."""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from llmops_events import Envelope
from llmops_events.base import EventData
from llmops_events.v1.training import Hyperparameters, TrainingCompleted, TrainingRequested, TrainingTask
from llmops_fine_tuning.adapters.causal_lm_trainer import LoraCausalLmTrainer
from llmops_fine_tuning.adapters.code_version import code_version
from llmops_fine_tuning.adapters.datasets import ArtifactDatasetReader
from llmops_fine_tuning.adapters.defaults import load_defaults
from llmops_fine_tuning.adapters.trainer import LoraSequenceClassificationTrainer
from llmops_fine_tuning.handlers import FineTuningService, ServiceConfig
from llmops_fine_tuning.settings import FineTuningSettings
from llmops_models import ModelRegistry
from llmops_models.snapshots import write_snapshot
from llmops_storage import ArtifactStore


class _CollectedEvents:
    """An event sink that keeps what the service would have published."""

    def __init__(self) -> None:
        self.published: list[EventData] = []

    async def publish(
        self, data: EventData, *, correlationid: str | None = None, id: str | None = None
    ) -> Envelope[Any]:
        self.published.append(data)
        return Envelope.wrap(data, source="/llmops/offline", id=id)


async def train_offline(
    store: ArtifactStore,
    *,
    model_name: str,
    dataset_id: str,
    hyperparameters: Hyperparameters,
    work_dir: Path,
    task: TrainingTask = TrainingTask.SEQUENCE_CLASSIFICATION,
    base_model: str | None = None,
) -> TrainingCompleted:
    """Train one version of ``model_name`` on the snapshot ``dataset_id`` with the real trainer of
    ``task`` and publish it to ``store``; raises if training did not complete (``llmops train``,
    tests, benchmarks)."""
    events = _CollectedEvents()
    service = FineTuningService(
        config=ServiceConfig(
            defaults=load_defaults(FineTuningSettings.model_fields["defaults_file"].default),
            min_examples_per_label=1,
            worker_name="offline",
            work_dir=work_dir,
            code_version=code_version(),
            max_job_seconds=FineTuningSettings.model_fields["max_job_seconds"].default,
        ),
        datasets=ArtifactDatasetReader(store),
        registry=ModelRegistry(store),
        trainer={
            TrainingTask.SEQUENCE_CLASSIFICATION: LoraSequenceClassificationTrainer(progress_interval_s=60),
            TrainingTask.CAUSAL_LM: LoraCausalLmTrainer(progress_interval_s=60),
        },
        events=events,
    )
    request = TrainingRequested(
        model_name=model_name,
        dataset_id=dataset_id,
        hyperparameters=hyperparameters,
        task=task,
        base_model=base_model,
    )
    await service.on_training_requested(Envelope.wrap(request, source="/llmops/offline"))
    completed = [event for event in events.published if isinstance(event, TrainingCompleted)]
    if not completed:
        raise RuntimeError(f"training did not complete: {events.published[-1]!r}")
    return completed[-1]


async def train_model(
    store: ArtifactStore,
    frame: Any,
    *,
    model_name: str,
    hyperparameters: Hyperparameters,
    work_dir: Path,
    dataset_id: str | None = None,
) -> TrainingCompleted:
    """Snapshot ``frame`` (columns ``text``, ``label``, ``split``) and train one version on it."""
    dataset_id = dataset_id or f"{model_name}-{datetime.now(UTC):%Y%m%dT%H%M%S%f}"
    write_snapshot(store, frame, dataset_id=dataset_id)
    return await train_offline(
        store, model_name=model_name, dataset_id=dataset_id, hyperparameters=hyperparameters, work_dir=work_dir
    )
