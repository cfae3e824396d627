"""Installing a version whose kind Triton cannot serve yet is a verdict on the version, not a retry."""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path

import pytest

from llmops_deployment.adapters.artifacts import Artifacts
from llmops_deployment.errors import FailureReason, GoLiveFailed
from llmops_models import ModelRegistry, build_manifest, hash_folder, write_manifest
from llmops_models.kinds import ServingOptions
from llmops_models.triton_repository import ModelRepository
from llmops_storage import ArtifactStore


def _publish(store: ArtifactStore, folder: Path, *, kind: str) -> None:
    folder.mkdir()
    (folder / "adapter_config.json").write_text("{}")
    manifest = build_manifest(
        model_name="m",
        version=1,
        kind=kind,
        files=hash_folder(folder),
        lineage={"request_id": "r", "dataset_id": "d"},
        metrics={},
        created_at=datetime(2026, 1, 1, tzinfo=UTC),
    )
    write_manifest(folder, manifest)
    ModelRegistry(store).publish("m", 1, folder)


@pytest.mark.parametrize("kind", ["causal_lm", "diffusion"])
def test_a_kind_triton_cannot_serve_is_refused_with_a_reason(tmp_path: Path, kind: str) -> None:
    store = ArtifactStore(str(tmp_path / "store"))
    _publish(store, tmp_path / "v1", kind=kind)
    artifacts = Artifacts(store, ModelRepository(tmp_path / "repository"))
    with pytest.raises(GoLiveFailed) as caught:
        artifacts.install("m", 1, ServingOptions())
    assert caught.value.reason is FailureReason.KIND_NOT_SERVABLE
    assert kind in caught.value.detail
    assert not artifacts.installed("m", 1)
