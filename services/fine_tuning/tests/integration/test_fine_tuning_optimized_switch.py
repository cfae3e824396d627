"""The trainer policy's ``export_optimized`` switch: off, the published classifier has no ONNX
export (it is served by PyTorch) and the job does not pay for one; on (the default), the export is
in the artifact and its manifest (``tests/integration/test_classifier_onnx.py`` checks that on the
session's model). The real trainer on a tiny snapshot, in-process, no broker."""

from __future__ import annotations

import asyncio
from pathlib import Path

import pandas as pd
import pytest

from llmops_events import Envelope
from llmops_events.v1.training import Hyperparameters, TrainingCompleted, TrainingRequested
from llmops_fine_tuning.adapters.defaults import load_defaults
from llmops_fine_tuning.settings import FineTuningSettings
from llmops_models import MANIFEST_FILE, model_path
from llmops_models.kinds.classifier.network import load_classifier
from llmops_models.kinds.classifier.onnx_runtime import OPTIMIZED_FILE
from llmops_models.snapshots import write_snapshot
from llmops_storage import ArtifactStore
from tests.fine_tuning_inprocess import CollectedEvents, in_process_service

pytestmark = pytest.mark.integration

TEXTS = {"card_lost": "i lost my card", "card_arrival": "where is my new card", "exchange_rate": "what rate do you use"}
FAST = Hyperparameters(epochs=1, batch_size=8, max_length=32, lora_rank=4, target_modules=["query", "value"])


def test_without_the_optimized_export_the_artifact_is_served_by_pytorch(tmp_path: Path) -> None:
    shipped = load_defaults(FineTuningSettings().defaults_file)
    assert shipped.trainer.export_optimized  # the shipped default exports
    defaults = shipped.model_copy(update={"trainer": shipped.trainer.model_copy(update={"export_optimized": False})})
    store = ArtifactStore(str(tmp_path / "store"))
    frame = pd.DataFrame(
        {"text": f"{text} ({i})", "label": label, "split": "train" if i < 10 else "validation"}
        for label, text in TEXTS.items()
        for i in range(13)
    )
    write_snapshot(store, frame, dataset_id="tiny")
    events = CollectedEvents()
    service = in_process_service(store, tmp_path / "work", events, defaults)
    request = TrainingRequested(model_name="intents", dataset_id="tiny", hyperparameters=FAST)
    asyncio.run(service.on_training_requested(Envelope.wrap(request, source="/tests")))
    [completed] = [e for e in events.published if isinstance(e, TrainingCompleted)]

    folder = store.download_folder(model_path("intents", completed.model_version), tmp_path / "artifact")
    manifest = store.read_json(f"{model_path('intents', completed.model_version)}/{MANIFEST_FILE}")
    assert not (folder / OPTIMIZED_FILE).exists() and not (folder / "onnx").exists()
    assert "optimized" not in manifest and not any(name.endswith(".onnx") for name in manifest["files"])
    labels, _ = load_classifier(folder, device="cpu").predict(["my card was stolen"])
    assert len(labels) == 1
