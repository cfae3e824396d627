"""The manifest of a model version: a hash for every file and the lineage that reproduces it."""

from __future__ import annotations

import hashlib
from collections.abc import Mapping
from datetime import datetime
from pathlib import Path
from typing import Any

from llmops_fine_tuning.domain.request import TrainingJob

EXCLUDED_FROM_MANIFEST = frozenset({"manifest.json", "_COMPLETE"})


def sha256_file(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return f"sha256:{digest.hexdigest()}"


def hash_folder(folder: Path) -> dict[str, str]:
    """Relative ``/``-path → sha256 of every file below ``folder``, manifest excluded, sorted."""
    return {
        path.relative_to(folder).as_posix(): sha256_file(path)
        for path in sorted(folder.rglob("*"))
        if path.is_file() and path.name not in EXCLUDED_FROM_MANIFEST
    }


def combined_hash(file_hashes: Mapping[str, str]) -> str:
    """One hash over named file hashes (e.g. a base model's weight files)."""
    digest = hashlib.sha256()
    for name, value in sorted(file_hashes.items()):
        digest.update(f"{name}\0{value}\n".encode())
    return f"sha256:{digest.hexdigest()}"


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


def build_manifest(
    *,
    model_name: str,
    version: int,
    files: Mapping[str, str],
    lineage: Mapping[str, Any],
    metrics: Mapping[str, float],
    created_at: datetime,
) -> dict[str, Any]:
    return {
        "model_name": model_name,
        "version": version,
        "request_id": lineage.get("request_id"),
        "created_at": created_at.isoformat(),
        "files": dict(sorted(files.items())),
        "metrics": dict(metrics),
        "lineage": dict(lineage),
    }
