"""The lineage of a model version: what it was made from, enough to train it again."""

from __future__ import annotations

from typing import Any

from llmops_fine_tuning.domain.request import TrainingJob


def build_lineage(
    job: TrainingJob, *, dataset_content_hash: str, base_model_weights_hash: str, code_version: str
) -> dict[str, Any]:
    """What this version was made from: enough to train it again and get the same weights."""
    return {
        "request_id": job.request_id,
        "reason": job.reason,
        "evidence": job.evidence,
        "requested_by": job.requested_by,
        "dataset_id": job.dataset_id,
        "dataset_content_hash": dataset_content_hash,
        "base_model": job.base_model,
        "base_model_weights_hash": base_model_weights_hash,
        "code_version": code_version,
        "task": job.task.value,
        "hyperparameters": job.hyperparameters.model_dump(mode="json"),
        "trainer": job.trainer.model_dump(mode="json"),
    }
