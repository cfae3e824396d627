"""The model kernel: artifact layout and names, manifests, the version registry, snapshots, kinds."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from llmops_models import (
    ArtifactMissing,
    InvalidName,
    ManifestMismatch,
    ModelRegistry,
    build_manifest,
    check_name,
    combined_hash,
    dataset_path,
    evaluation_path,
    hash_folder,
    model_path,
    next_version,
    verify_folder,
    write_manifest,
)
from llmops_models.kinds import CLASSIFIER, KINDS, UnknownKind, kind_for_task, kind_named, kind_of
from llmops_models.kinds.base import ModelKind, ServingOptions
from llmops_models.kinds.classifier import serving
from llmops_models.snapshots import SnapshotReader, write_snapshot
from llmops_storage import ArtifactStore


@pytest.mark.parametrize("name", ["banking77", "tiny-intents", "a.b_c-1", "x" * 128])
def test_safe_names_make_paths(name: str) -> None:
    assert model_path(name, 3) == f"models/{name}/3"
    assert dataset_path(name) == f"datasets/{name}"
    assert evaluation_path(name, 3) == f"evaluations/{name}/3"


@pytest.mark.parametrize("name", ["../victim", "..", ".hidden", "a/b", "a\\b", "", "x" * 129, "a..b", "é", " a"])
def test_a_name_cannot_leave_its_folder(name: str) -> None:
    with pytest.raises(InvalidName):
        check_name(name)
    with pytest.raises(InvalidName):
        model_path(name, 1)
    with pytest.raises(InvalidName):
        dataset_path(name)


@pytest.mark.parametrize("version", [0, -1, True])
def test_versions_start_at_one(version: int) -> None:
    with pytest.raises(InvalidName):
        model_path("m", version)


def test_next_version_is_one_more_than_the_highest_published() -> None:
    assert next_version([]) == 1
    assert next_version(["1", "2", "10", "3"]) == 11
    assert next_version(["1", ".staging-3f2a", "notes.txt"]) == 2


def _artifact(folder: Path, *, kind: str = "classifier", request_id: str = "req-1") -> Path:
    (folder / "adapter").mkdir(parents=True)
    (folder / "adapter" / "weights.bin").write_bytes(b"\x00\x01")
    (folder / "label_map.json").write_text(json.dumps({"labels": ["a", "b", "c"]}))
    manifest = build_manifest(
        model_name="m",
        version=1,
        kind=kind,
        files=hash_folder(folder),
        lineage={"request_id": request_id, "dataset_id": "ds"},
        metrics={"accuracy": 0.9},
        created_at=datetime(2026, 1, 1, tzinfo=UTC),
    )
    write_manifest(folder, manifest)
    return folder


def test_manifest_hashes_every_file_but_itself_in_any_order(tmp_path: Path) -> None:
    folder = _artifact(tmp_path / "v")
    files = hash_folder(folder)
    assert list(files) == ["adapter/weights.bin", "label_map.json"]
    assert all(value.startswith("sha256:") for value in files.values())
    assert combined_hash(files) == combined_hash(dict(reversed(files.items())))
    assert verify_folder(folder)["kind"] == "classifier"


@pytest.mark.parametrize("tamper", ["change", "add", "remove"])
def test_a_tampered_folder_fails_verification_naming_the_file(tmp_path: Path, tamper: str) -> None:
    folder = _artifact(tmp_path / "v")
    if tamper == "change":
        (folder / "adapter" / "weights.bin").write_bytes(b"evil")
    elif tamper == "add":
        (folder / "extra.py").write_text("import os")
    else:
        (folder / "label_map.json").unlink()
    with pytest.raises(ManifestMismatch) as caught:
        verify_folder(folder)
    assert len(caught.value.files) == 1
    assert caught.value.files[0] in {"adapter/weights.bin", "extra.py", "label_map.json"}


def test_registry_counts_published_versions_and_verifies_downloads(tmp_path: Path) -> None:
    store = ArtifactStore(str(tmp_path / "store"))
    registry = ModelRegistry(store)
    assert registry.published_versions("m") == [] and registry.next_version("m") == 1
    registry.publish("m", 1, _artifact(tmp_path / "one", request_id="req-1"))
    registry.publish("m", 2, _artifact(tmp_path / "two", request_id="req-2"))
    (tmp_path / "store" / "models" / "m" / "3").mkdir()  # a crashed write: no _COMPLETE
    assert registry.published_versions("m") == [1, 2] and registry.next_version("m") == 3
    assert registry.model_names() == ["m"]
    assert registry.find_by_request("m", "req-2")["version"] == 1  # the manifest says so (built as 1)
    assert registry.find_by_request("m", "req-9") is None
    with pytest.raises(FileExistsError):
        registry.publish("m", 2, tmp_path / "two")

    manifest = registry.download_verified("m", 1, tmp_path / "down")
    assert manifest["lineage"]["request_id"] == "req-1"
    with pytest.raises(ArtifactMissing):
        registry.download_verified("m", 3, tmp_path / "missing")
    (tmp_path / "store" / "models" / "m" / "2" / "label_map.json").write_text('{"labels": ["x"]}')
    with pytest.raises(ManifestMismatch, match=r"label_map\.json"):
        registry.download_verified("m", 2, tmp_path / "tampered")


def test_snapshots_round_trip_in_a_stable_order(tmp_path: Path) -> None:
    store = ArtifactStore(str(tmp_path))
    frame = pd.DataFrame(
        {
            "record_id": ["r3", "r1", "r2", "r4"],
            "text": ["c", "a", "b", "d"],
            "label": ["y", "x", None, "y"],
            "split": ["train", "train", "validation", "test"],
        }
    )
    now = datetime.now(UTC)
    write_snapshot(store, frame, dataset_id="old", created_at=now - timedelta(days=1))
    write_snapshot(store, frame, dataset_id="new", created_at=now)
    reader = SnapshotReader(store)
    assert reader.latest_dataset_id() == "new"
    assert reader.manifest("new")["row_count"] == 4
    read = reader.frame("new")
    assert list(zip(read["split"], read["record_id"], strict=True)) == [
        ("test", "r4"),
        ("train", "r1"),
        ("train", "r3"),
        ("validation", "r2"),
    ]
    assert reader.labelled("new", "train")["text"].tolist() == ["a", "c"]
    assert reader.labelled("new", "validation").empty  # its only row has no label
    assert not reader.is_complete("../new") and not reader.is_complete("missing")
    with pytest.raises(ArtifactMissing):
        reader.frame("missing")


def test_an_artifact_names_its_kind_and_old_ones_are_classifiers() -> None:
    assert kind_of({}) is CLASSIFIER
    assert kind_of({"kind": "classifier"}) is CLASSIFIER
    assert kind_for_task("sequence-classification") is CLASSIFIER
    with pytest.raises(UnknownKind, match=r"known: .*classifier"):
        kind_of({"kind": "diffusion"})
    with pytest.raises(UnknownKind):
        kind_for_task("image-generation")
    assert kind_named("classifier") is CLASSIFIER


@pytest.mark.parametrize("kind", list(KINDS.values()), ids=list(KINDS))
def test_every_kind_fills_the_whole_seam(kind: ModelKind) -> None:
    assert kind.name and kind.training_task
    assert kind.evaluation_metrics and kind.canary_signals and kind.monitoring_signals
    for member in ("load_predictor", "triton_model", "optimize", "load_optimized_predictor"):
        assert callable(getattr(kind, member))


def test_the_classifier_kind_describes_its_triton_model(tmp_path: Path) -> None:
    folder = _artifact(tmp_path / "v")
    model = CLASSIFIER.triton_model("m__v1", folder, ServingOptions(max_batch_size=8, instance_count=2))
    assert set(model.files) == {"model.py", "network.py", "onnx_runtime.py"}
    assert all(p.is_file() for p in model.files.values())
    config = model.config
    assert config.name == "m__v1" and config.backend == "python" and config.max_batch_size == 8
    assert [i.name for i in config.input] == [serving.TEXT_INPUT]
    assert [o.name for o in config.output] == list(serving.OUTPUTS)
    assert list(config.output[2].dims) == [3]  # one score per label
    assert json.loads(config.parameters[serving.LABELS_PARAMETER].string_value) == ["a", "b", "c"]
    assert config.instance_group[0].count == 2
    assert config.parameters[serving.RUNTIME_PARAMETER].string_value == "torch"  # no ONNX export in this artifact


def test_the_classifier_runtime_is_onnx_on_cpu_when_the_artifact_has_its_export(tmp_path: Path) -> None:
    folder = _artifact(tmp_path / "v")
    with pytest.raises(ValueError, match="no optimized"):
        CLASSIFIER.triton_model("m__v1", folder, ServingOptions(runtime="onnx"))
    (folder / "optimized.json").write_text(json.dumps({"format": "onnx", "file": "onnx/model.int8.onnx"}))
    options = ServingOptions(preferred_batch_sizes=(4, 8, 128), max_batch_size=64)
    config = CLASSIFIER.triton_model("m__v1", folder, options).config
    assert config.parameters[serving.RUNTIME_PARAMETER].string_value == "onnx"
    assert list(config.dynamic_batching.preferred_batch_size) == [4, 8]  # none above the largest batch
    gpu = CLASSIFIER.triton_model("m__v1", folder, ServingOptions(instance_kind="KIND_GPU")).config
    assert gpu.parameters[serving.RUNTIME_PARAMETER].string_value == "torch"  # PyTorch stays the GPU path
    assert gpu.instance_group[0].kind == gpu.instance_group[0].KIND_GPU
    forced = CLASSIFIER.triton_model("m__v1", folder, ServingOptions(runtime="torch")).config
    assert forced.parameters[serving.RUNTIME_PARAMETER].string_value == "torch"
    with pytest.raises(ValueError, match="unknown classifier runtime"):
        CLASSIFIER.triton_model("m__v1", folder, ServingOptions(runtime="tensorrt"))


def test_the_classifier_kind_reads_a_triton_answer() -> None:
    tensors = {
        serving.LABEL_OUTPUT: np.array([[b"b"], [b"a"]], dtype=np.object_),
        serving.CONFIDENCE_OUTPUT: np.array([[0.7], [0.6]], dtype=np.float32),
        serving.SCORES_OUTPUT: np.array([[0.1, 0.7, 0.2], [0.6, 0.3, 0.1]], dtype=np.float32),
    }
    outputs = serving.read_outputs(tensors.__getitem__, ["a", "b", "c"])
    assert [o.label for o in outputs] == ["b", "a"]
    assert outputs[0].confidence == pytest.approx(0.7) and outputs[0].scores["c"] == pytest.approx(0.2)
    unnamed = serving.read_outputs(tensors.__getitem__, ["a"])  # labels do not match: scores by index
    assert set(unnamed[0].scores) == {"0", "1", "2"}
    assert serving.labels_from_config({"config": {"parameters": {"labels": {"string_value": '["x"]'}}}}) == ["x"]
    assert serving.text_batch(["hé"]).tolist() == [["hé".encode()]]
