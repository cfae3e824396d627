"""The artifacts adapter: a version whose kind has no Triton model of its own is refused (a verdict
on the version, not a retry); a causal_lm version's adapter is fetched verified, installed under
its checked name and removed; its smoke prompts come from its validation conversations."""

from __future__ import annotations

import json
from datetime import UTC, datetime
from pathlib import Path

import pandas as pd
import pytest

from llmops_deployment.adapters.artifacts import Artifacts
from llmops_deployment.errors import FailureReason, GoLiveFailed
from llmops_models import InvalidName, ModelRegistry, build_manifest, hash_folder, write_manifest
from llmops_models.kinds import ServingOptions
from llmops_models.snapshots import write_snapshot
from llmops_models.triton_repository import AdapterRepository, ModelRepository
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


# ---- causal_lm versions: adapters in the causal-LM model's adapters folder ----------------------


def _publish_adapter(store: ArtifactStore, folder: Path, *, version: int, dataset_id: str = "chats") -> None:
    (folder / "adapter").mkdir(parents=True)
    (folder / "adapter" / "adapter_config.json").write_text('{"peft_type": "LORA"}')
    (folder / "adapter" / "adapter_model.safetensors").write_bytes(b"weights")
    (folder / "training_config.json").write_text('{"base_model": "smollm2", "base_model_weights_hash": "sha256:b"}')
    manifest = build_manifest(
        model_name="bot",
        version=version,
        kind="causal_lm",
        files=hash_folder(folder),
        lineage={"request_id": "r", "dataset_id": dataset_id},
        metrics={},
        created_at=datetime(2026, 1, 1, tzinfo=UTC),
    )
    write_manifest(folder, manifest)
    ModelRegistry(store).publish("bot", version, folder)


def test_an_adapter_version_is_fetched_verified_and_installed_under_its_name(tmp_path: Path) -> None:
    store = ArtifactStore(str(tmp_path / "store"))
    _publish_adapter(store, tmp_path / "v1", version=1)
    adapters = AdapterRepository(tmp_path / "adapters" / "llmops_causal_lm")
    artifacts = Artifacts(store, ModelRepository(tmp_path / "repository"), adapters)
    assert artifacts.kind("bot", 1) == "causal_lm" and artifacts.kind("bot", 9) is None

    fetched = tmp_path / "fetched"
    assert artifacts.fetch("bot", 1, fetched)["base_model_weights_hash"] == "sha256:b"
    assert not artifacts.adapter_installed("bot__v1")
    artifacts.install_adapter("bot__v1", fetched)
    assert (adapters.root / "bot__v1" / "adapter_model.safetensors").read_bytes() == b"weights"
    assert artifacts.adapter_installed("bot__v1") and artifacts.installed_adapters() == {"bot__v1": ("bot", 1)}
    with pytest.raises(InvalidName):
        artifacts.install_adapter("../bot__v1", fetched)
    artifacts.uninstall_adapter("bot__v1")
    assert artifacts.installed_adapters() == {} and not (adapters.root / "bot__v1").exists()

    with pytest.raises(GoLiveFailed) as missing:
        artifacts.fetch("bot", 2, tmp_path / "nothing")
    assert missing.value.reason is FailureReason.ARTIFACT_MISSING


def test_a_tampered_adapter_is_refused_as_corrupt(tmp_path: Path) -> None:
    store = ArtifactStore(str(tmp_path / "store"))
    _publish_adapter(store, tmp_path / "v1", version=1)
    published = Path(store.uri("models/bot/1/adapter/adapter_model.safetensors").removeprefix("file://"))
    published.write_bytes(b"other weights")
    artifacts = Artifacts(store, ModelRepository(tmp_path / "repository"), AdapterRepository(tmp_path / "adapters"))
    with pytest.raises(GoLiveFailed) as corrupt:
        artifacts.fetch("bot", 1, tmp_path / "fetched")
    assert corrupt.value.reason is FailureReason.ARTIFACT_CORRUPT


def test_smoke_prompts_are_the_validation_conversations_without_their_answers(tmp_path: Path) -> None:
    store = ArtifactStore(str(tmp_path / "store"))
    rows = [
        {
            "text": f"question {i}",
            "label": f"answer {i}",
            "split": "validation" if i < 3 else "train",
            "messages_json": json.dumps(
                [
                    {"role": "system", "content": "Be brief."},
                    {"role": "user", "content": f"question {i}"},
                    {"role": "assistant", "content": f"answer {i}"},
                ]
            ),
            "output_format_json": "",
        }
        for i in range(5)
    ] + [{"text": "bad", "label": "x", "split": "validation", "messages_json": "not json", "output_format_json": ""}]
    write_snapshot(store, pd.DataFrame(rows), dataset_id="chats", content="instructions")
    _publish_adapter(store, tmp_path / "v1", version=1, dataset_id="chats")
    artifacts = Artifacts(store, ModelRepository(tmp_path / "repository"), AdapterRepository(tmp_path / "adapters"))
    prompts = artifacts.conversations("bot", 1, limit=8)
    assert len(prompts) == 3, "the unreadable conversation is left out"
    assert all(p[-1]["role"] == "user" and p[0] == {"role": "system", "content": "Be brief."} for p in prompts)
    assert artifacts.conversations("bot", 1, limit=2) == prompts[:2]
    assert artifacts.conversations("bot", 9, limit=2) == []
