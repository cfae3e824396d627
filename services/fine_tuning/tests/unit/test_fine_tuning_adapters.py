"""Adapters on a local artifact store and a tiny training run: snapshot reading, versions,
determinism and the artifact round trip through ``load_classifier``."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from llmops_events.v1.training import TrainingRequested
from llmops_fine_tuning.adapters.datasets import ArtifactDatasetReader
from llmops_fine_tuning.adapters.trainer import LoraSequenceClassificationTrainer
from llmops_fine_tuning.adapters.training_loop import bucketed_batches
from llmops_fine_tuning.domain.ports import TrainingData, TrainingProgress
from llmops_fine_tuning.domain.request import ResolvedHyperparameters, TrainerPolicy, TrainingDefaults, resolve_job
from llmops_models import ModelRegistry
from llmops_models.kinds.classifier.network import load_classifier
from llmops_models.snapshots import write_snapshot
from llmops_storage import ArtifactStore

TEXTS = {
    "card_arrival": ["where is my new card", "my card has not arrived yet", "when will the card be delivered"],
    "exchange_rate": ["what exchange rate do you use", "is the currency rate fair", "how is the fx rate set"],
    "lost_card": ["i lost my card", "my card was stolen", "cannot find my bank card anywhere"],
}


def tiny_frame(per_label: int = 8) -> pd.DataFrame:
    rows = []
    for label, texts in TEXTS.items():
        for i in range(per_label + 2):
            split = "validation" if i >= per_label else "train"
            rows.append({"text": f"{texts[i % len(texts)]} {i}", "label": label, "split": split})
    return pd.DataFrame(rows)


def test_latest_snapshot_is_the_newest_complete_one(tmp_path: Path) -> None:
    store = ArtifactStore(str(tmp_path))
    now = datetime.now(UTC)
    write_snapshot(store, tiny_frame(), dataset_id="ds-old", created_at=now - timedelta(days=1))
    write_snapshot(store, tiny_frame(), dataset_id="ds-new", created_at=now)
    store.write_json("datasets/ds-half-written/manifest.json", {"created_at": (now + timedelta(days=1)).isoformat()})
    reader = ArtifactDatasetReader(store)
    assert reader.latest_dataset_id() == "ds-new"
    assert reader.summary("ds-half-written") is None
    assert reader.summary("does-not-exist") is None
    summary = reader.summary("ds-new")
    assert summary is not None and summary.counts["train"]["lost_card"] == 8
    data = reader.load("ds-new")
    assert isinstance(data, TrainingData)
    assert len(data.train) == 24 and len(data.validation) == 6
    assert data.labels == sorted(TEXTS)


def test_versions_count_only_published_folders(tmp_path: Path) -> None:
    store = ArtifactStore(str(tmp_path))
    registry = ModelRegistry(store)
    assert registry.next_version("intents") == 1
    folder = tmp_path / "local"
    folder.mkdir()
    (folder / "manifest.json").write_text('{"request_id": "req-1", "version": 1}')
    registry.publish("intents", 1, folder)
    store.write_bytes("models/intents/2/adapter/partial.bin", b"crashed mid-write")  # never completed
    assert registry.next_version("intents") == 2
    assert registry.find_by_request("intents", "req-1") == {"request_id": "req-1", "version": 1}
    assert registry.find_by_request("intents", "req-2") is None
    with pytest.raises(FileExistsError):
        registry.publish("intents", 1, folder)


def test_bucketed_batches_cover_every_example_once_with_similar_lengths() -> None:
    import torch

    lengths = [5, 50, 6, 49, 7, 48, 8, 47] * 4
    batches = bucketed_batches(lengths, batch_size=4, bucket_batches=8, generator=torch.Generator().manual_seed(1))
    assert sorted(i for batch in batches for i in batch) == list(range(len(lengths)))
    assert all(max(lengths[i] for i in b) - min(lengths[i] for i in b) <= 3 for b in batches)
    again = bucketed_batches(lengths, batch_size=4, bucket_batches=8, generator=torch.Generator().manual_seed(1))
    assert again == batches


def _job(**trainer: object):
    defaults = TrainingDefaults(
        base_model="sentence-transformers/all-MiniLM-L6-v2",
        hyperparameters=ResolvedHyperparameters(
            lora_rank=4,
            lora_alpha=8,
            lora_dropout=0.1,
            target_modules=["query", "value"],
            learning_rate=5e-3,
            epochs=1,
            batch_size=8,
            max_length=16,
            seed=7,
        ),
        trainer=TrainerPolicy(**trainer),  # type: ignore[arg-type]
    )
    request = TrainingRequested(model_name="tiny", dataset_id="ds")
    return resolve_job(request, request_id="req", correlation_id=None, defaults=defaults)


def test_training_is_deterministic_and_the_artifact_reproduces_its_metrics(tmp_path: Path) -> None:
    store = ArtifactStore(str(tmp_path / "store"))
    write_snapshot(store, tiny_frame(), dataset_id="ds")
    data = ArtifactDatasetReader(store).load("ds")
    assert isinstance(data, TrainingData)
    trainer = LoraSequenceClassificationTrainer(num_threads=2, progress_interval_s=0.0)
    progress: list[TrainingProgress] = []
    first = trainer.train(_job(), data, tmp_path / "one", on_progress=progress.append)
    second = trainer.train(_job(), data, tmp_path / "two", on_progress=lambda _: None)

    assert [p.step for p in progress] == [1, 2, 3] and progress[-1].eta_seconds == 0
    for key in ("accuracy", "macro_f1", "loss"):
        assert first.metrics[key] == second.metrics[key]
    assert (tmp_path / "one" / "head.safetensors").read_bytes() == (tmp_path / "two" / "head.safetensors").read_bytes()
    assert 0 < first.trainable_parameter_share < 0.05
    assert first.base_model_weights_hash.startswith("sha256:")

    classifier = load_classifier(tmp_path / "one")
    labels, probabilities = classifier.predict(list(data.validation.texts))
    accuracy = sum(p == t for p, t in zip(labels, data.validation.labels, strict=True)) / len(labels)
    assert accuracy == pytest.approx(first.metrics["accuracy"])
    assert all(abs(sum(row) - 1) < 1e-5 for row in probabilities)


def test_full_fine_tuning_trains_every_encoder_weight_and_the_artifact_carries_the_encoder(tmp_path: Path) -> None:
    """``method: full``: no adapter, the whole encoder in the artifact; it loads, predicts as the
    training run measured, and exports to ONNX like a LoRA model."""
    from safetensors.torch import load_file

    from llmops_models.kinds.classifier import CLASSIFIER
    from llmops_models.kinds.classifier.network import load_encoder
    from llmops_models.kinds.classifier.onnx_runtime import OnnxClassifier

    store = ArtifactStore(str(tmp_path / "store"))
    write_snapshot(store, tiny_frame(), dataset_id="ds")
    data = ArtifactDatasetReader(store).load("ds")
    assert isinstance(data, TrainingData)
    job = _job(method="full")
    assert job.trainer.method == "full"  # type: ignore[union-attr]
    result = LoraSequenceClassificationTrainer(num_threads=2, progress_interval_s=0.0).train(
        job, data, tmp_path / "full", on_progress=lambda _: None
    )

    folder = tmp_path / "full"
    assert result.trainable_parameter_share == 1.0
    assert (folder / "encoder" / "model.safetensors").is_file() and not (folder / "adapter").exists()
    base = load_encoder(job.base_model).state_dict()
    trained = load_file(folder / "encoder" / "model.safetensors")
    assert trained.keys() == base.keys()
    assert [name for name, weight in trained.items() if (weight == base[name]).all()] == []  # every tensor moved

    texts = list(data.validation.texts)
    labels, probabilities = load_classifier(folder).predict(texts)
    accuracy = sum(p == t for p, t in zip(labels, data.validation.labels, strict=True)) / len(labels)
    assert accuracy == pytest.approx(result.metrics["accuracy"])

    assert CLASSIFIER.optimize(folder) is not None
    exported = OnnxClassifier(folder, variant="float").predict_proba(texts)
    assert abs(exported - np.asarray(probabilities)).max() < 1e-4


def test_lora_top_layers_selects_the_upper_decoder_layers() -> None:
    from types import SimpleNamespace

    from llmops_fine_tuning.adapters.causal_lm_trainer import top_layers

    model = SimpleNamespace(config=SimpleNamespace(num_hidden_layers=30))
    assert top_layers(model, 20) == list(range(10, 30))
    assert top_layers(model, 1) == [29]
    assert top_layers(model, None) is None
    assert top_layers(model, 30) is None and top_layers(model, 64) is None  # every layer


def test_importing_the_training_loop_leaves_subnormal_floats_alone() -> None:
    # Flushing them is process state for a training process's entry point, not an import's side
    # effect: code sharing the process (Hypothesis in the tests) relies on IEEE subnormals.
    import torch

    import llmops_fine_tuning.adapters.causal_lm_trainer
    import llmops_fine_tuning.adapters.training_loop  # noqa: F401

    assert float(torch.tensor(1e-39, dtype=torch.float32) * 1.0) > 0
