"""Asking for a training run from outside the service (``make retrain MODEL=... [DATASET=...]``)."""

from __future__ import annotations

import getpass
from typing import Any

from llmops_events import Envelope
from llmops_events.v1.training import Hyperparameters, TrainingReason, TrainingRequested, TrainingTask
from llmops_fine_tuning.settings import FineTuningSettings
from llmops_messaging import EventPublisher


async def request_training(
    settings: FineTuningSettings,
    model_name: str,
    dataset_id: str | None = None,
    *,
    base_model: str | None = None,
    hyperparameters: Hyperparameters | None = None,
    reason: TrainingReason = TrainingReason.MANUAL,
    evidence: dict[str, Any] | None = None,
    requested_by: str | None = None,
    task: TrainingTask = TrainingTask.SEQUENCE_CLASSIFICATION,
) -> Envelope[TrainingRequested]:
    """Publish a ``training.requested`` event and return it; its id is the job's request id and
    its correlation id. ``dataset_id=None`` trains on the latest snapshot of what ``task`` trains
    on (records for a classifier, instructions for ``causal-lm``)."""
    request = TrainingRequested(
        model_name=model_name,
        task=task,
        dataset_id=dataset_id,
        base_model=base_model,
        hyperparameters=hyperparameters or Hyperparameters(),
        reason=reason,
        evidence=evidence or {},
        requested_by=requested_by or _user(),
    )
    envelope: Envelope[TrainingRequested] = Envelope.wrap(request, source="/llmops/cli")
    envelope = envelope.model_copy(update={"correlationid": envelope.id})
    async with EventPublisher(settings.platform, service="cli") as publisher:
        await publisher.publish(envelope)
    return envelope


def _user() -> str:
    try:
        return f"cli:{getpass.getuser()}"
    except (KeyError, OSError):
        return "cli"
