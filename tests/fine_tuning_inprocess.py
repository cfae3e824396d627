"""The fine-tuning service in this process, without a broker: its handler on real trainers (one
torch thread each), a real dataset reader and registry on an artifact store, and the events it
publishes collected in a list."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from llmops_events.base import EventData
from llmops_events.v1.training import TrainingTask
from llmops_fine_tuning.adapters.causal_lm_trainer import LoraCausalLmTrainer
from llmops_fine_tuning.adapters.datasets import ArtifactDatasetReader
from llmops_fine_tuning.adapters.defaults import load_defaults
from llmops_fine_tuning.adapters.trainer import LoraSequenceClassificationTrainer
from llmops_fine_tuning.domain.request import TrainingDefaults
from llmops_fine_tuning.handlers import FineTuningService, ServiceConfig
from llmops_fine_tuning.settings import FineTuningSettings
from llmops_models import ModelRegistry
from llmops_storage import ArtifactStore


class CollectedEvents:
    """An event publisher that keeps what it is given."""

    def __init__(self) -> None:
        self.published: list[EventData] = []

    async def publish(self, data: EventData, *, correlationid: str | None = None, id: str | None = None) -> Any:
        self.published.append(data)


def in_process_service(
    store: ArtifactStore,
    work_dir: Path,
    events: CollectedEvents,
    defaults: TrainingDefaults | None = None,
    *,
    min_examples_per_label: int = 8,
) -> FineTuningService:
    """The service with ``defaults`` (the shipped defaults file when None) and both trainers."""
    return FineTuningService(
        config=ServiceConfig(
            defaults=defaults or load_defaults(FineTuningSettings().defaults_file),
            min_examples_per_label=min_examples_per_label,
            worker_name="tests",
            work_dir=work_dir,
            code_version="tests",
        ),
        datasets=ArtifactDatasetReader(store),
        registry=ModelRegistry(store),
        trainer={
            TrainingTask.CAUSAL_LM: LoraCausalLmTrainer(num_threads=1, progress_interval_s=0.5),
            TrainingTask.SEQUENCE_CLASSIFICATION: LoraSequenceClassificationTrainer(
                num_threads=1, progress_interval_s=0.5
            ),
        },
        events=events,
    )
