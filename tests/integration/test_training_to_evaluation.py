"""The evaluation gate on the real broker, fed by the real fine-tuning service (both in-process):
a first model with no champion is approved; a worse candidate is rejected against the champion;
a corrupt artifact is rejected with that reason; a duplicate event is evaluated once; the decision
validates against its JSON Schema and the report is HTML."""

from __future__ import annotations

import asyncio
import json
import shutil
import tempfile
import uuid
from collections.abc import AsyncIterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import jsonschema
import pandas as pd
import pytest
import torch
from aiokafka import AIOKafkaConsumer
from safetensors.torch import load_file, save_file

from llmops_config import PlatformSettings
from llmops_config.kafka import kafka_client_options
from llmops_evaluation.main import EvaluationRuntime
from llmops_evaluation.settings import EvaluationSettings
from llmops_events import ContentMode, Envelope, KafkaRecord, decode, encode
from llmops_events.schemas import event_schemas
from llmops_events.topics import EVALUATIONS, TRAINING
from llmops_events.v1 import DeploymentPromoted, EvaluationCompleted, TrainingCompleted
from llmops_events.v1.training import Hyperparameters
from llmops_fine_tuning.main import FineTuningRuntime
from llmops_fine_tuning.settings import FineTuningSettings
from llmops_fine_tuning.starter import request_training
from llmops_messaging import EventPublisher, create_broker
from llmops_models import MANIFEST_FILE, hash_folder
from llmops_models.kinds.classifier.network import HEAD_FILE
from llmops_models.snapshots import write_snapshot
from llmops_storage import ArtifactStore

pytestmark = pytest.mark.integration

PHRASES = {
    "card_arrival": [
        "where is my new card",
        "my card has not arrived",
        "when will my card be delivered",
        "card delivery is late",
        "still waiting for the card",
        "has my card been sent",
    ],
    "exchange_rate": [
        "what exchange rate do you use",
        "is your currency rate fair",
        "how is the fx rate set",
        "rate for euros to dollars",
        "why is the exchange rate bad",
        "which rate applies abroad",
    ],
    "lost_card": [
        "i lost my card",
        "my card was stolen",
        "cannot find my bank card",
        "someone took my card",
        "block my missing card",
        "card lost on holiday",
    ],
}
FAST = Hyperparameters(
    epochs=2, batch_size=8, max_length=32, lora_rank=4, target_modules=["query", "value"], learning_rate=5e-3
)
POLICY = "min_examples: 10\nmin_accuracy: 0.6\nmax_accuracy_drop: 0.05\nmax_latency_p95_ms: 2000\n"


def _frame() -> pd.DataFrame:
    rows = []
    for label, phrases in PHRASES.items():
        for i in range(34):  # 16 test examples per label: 24 per tenant, above the 20-example slice floor
            split = "train" if i < 14 else ("validation" if i < 18 else "test")
            rows.append(
                {
                    "text": f"{phrases[i % len(phrases)]} please {i}",
                    "label": label,
                    "split": split,
                    "tenant": "acme" if i % 2 else "globex",
                    "source": "crm",
                }
            )
    return pd.DataFrame(rows)


class Loop:
    """Fine-tuning and evaluation running in this process, and every event they publish."""

    def __init__(self, platform: PlatformSettings, policy_dir: Path) -> None:
        self.platform = platform
        self.store = ArtifactStore(platform.resolved_artifact_store_uri)
        suffix = uuid.uuid4().hex[:8]
        self.training = FineTuningSettings(
            platform=platform,
            group_id=f"fine-tuning-{suffix}",
            min_examples_per_label=8,
            metrics_port=0,
            progress_interval_s=1,
        )
        self.evaluation = EvaluationSettings(
            platform=platform,
            group_id=f"evaluation-{suffix}",
            metrics_port=0,
            policy_dir=policy_dir,
            latency_examples=10,
        )
        self.events: list[Envelope[Any]] = []

    async def read(self) -> None:
        consumer = AIOKafkaConsumer(
            TRAINING,
            EVALUATIONS,
            **kafka_client_options(self.platform, service="test").aiokafka(),
            auto_offset_reset="earliest",
            group_id=f"reader-{uuid.uuid4().hex}",
        )
        await consumer.start()
        try:
            while True:
                for records in (await consumer.getmany(timeout_ms=200)).values():
                    for m in records:
                        self.events.append(decode(KafkaRecord(m.key, m.value or b"", tuple(m.headers or ()))))
        finally:
            await consumer.stop()

    def decisions(self, model: str, version: int) -> list[Envelope[Any]]:
        return [
            e
            for e in self.events
            if isinstance(e.data, EvaluationCompleted)
            and e.data.model_name == model
            and e.data.model_version == version
        ]

    async def decision(self, model: str, version: int, timeout: float = 240) -> EvaluationCompleted:
        async with asyncio.timeout(timeout):
            while not self.decisions(model, version):
                await asyncio.sleep(0.2)
        return self.decisions(model, version)[0].data


@pytest.fixture(scope="module")
async def loop(kafka_settings: PlatformSettings, tmp_path_factory: pytest.TempPathFactory) -> AsyncIterator[Loop]:
    var_dir = tmp_path_factory.mktemp("evaluation")
    (var_dir / "policies").mkdir()
    (var_dir / "policies" / "default.yaml").write_text(POLICY)
    platform = kafka_settings.model_copy(update={"var_dir": var_dir, "artifact_store_uri": ""})
    harness = Loop(platform, var_dir / "policies")
    training, evaluation = FineTuningRuntime(harness.training), EvaluationRuntime(harness.evaluation)
    broker = create_broker(platform, service="evaluation-test")
    await training.open()
    await evaluation.open()
    training.attach(broker)
    evaluation.attach(broker)
    await broker.start()
    reader = asyncio.get_running_loop().create_task(harness.read())
    try:
        yield harness
    finally:
        reader.cancel()
        await asyncio.gather(reader, return_exceptions=True)
        await broker.stop()
        await training.close()
        await evaluation.close()


@pytest.fixture(scope="module")
async def first_model(loop: Loop) -> tuple[str, EvaluationCompleted]:
    dataset_id = f"eval-{uuid.uuid4().hex[:6]}"
    write_snapshot(loop.store, _frame(), dataset_id=dataset_id)
    model = f"intents-{uuid.uuid4().hex[:6]}"
    await request_training(loop.training, model, dataset_id, hyperparameters=FAST)
    return model, await loop.decision(model, 1)


def _derived_version(loop: Loop, model: str, version: int, *, damage: str) -> Path:
    """Copy version 1 to ``version``: with a useless head (rehashed: valid but worse) or a changed
    file left unhashed (corrupt). Published atomically like any version."""
    staging = Path(tempfile.mkdtemp())
    loop.store.download_folder(f"models/{model}/1", staging / "v")
    folder = staging / "v"
    (folder / "_COMPLETE").unlink()
    head = load_file(str(folder / HEAD_FILE))
    save_file({k: torch.zeros_like(v) for k, v in head.items()}, str(folder / HEAD_FILE))
    if damage == "worse":
        manifest = json.loads((folder / MANIFEST_FILE).read_text())
        manifest["files"] = hash_folder(folder)
        (folder / MANIFEST_FILE).write_text(json.dumps(manifest))
    loop.store.publish_folder(folder, f"models/{model}/{version}")
    shutil.rmtree(staging)
    return folder


async def _announce(loop: Loop, model: str, version: int, dataset_id: str) -> Envelope[Any]:
    completed = TrainingCompleted(
        model_name=model,
        request_id=f"test-{uuid.uuid4().hex}",
        model_version=version,
        artifact_uri=loop.store.uri(f"models/{model}/{version}"),
        metrics={},
        trainable_parameter_share=0.01,
        wall_time_seconds=1,
        lineage={"dataset_id": dataset_id},
        completed_at=datetime.now(UTC),
    )
    async with EventPublisher(loop.platform, service="tests") as publisher:
        return await publisher.publish(completed)


async def test_first_model_without_champion_is_approved_with_report(loop: Loop, first_model) -> None:
    model, decision = first_model
    assert decision.decision.value == "approved", decision.reasons
    assert decision.champion_version is None
    assert decision.candidate_metrics["accuracy"] >= 0.6
    assert {
        "macro_f1",
        "expected_calibration_error",
        "latency_p95_ms",
        "robust_accuracy",
        "slice_accuracy",
    } <= decision.candidate_metrics.keys()
    assert set(decision.candidate_metrics["slice_accuracy"]["tenant"]) == {"acme", "globex"}
    html = Path(decision.report_uri or "").read_text()
    assert "<html" in html.lower()
    assert (Path(decision.report_uri).parent / "predictions.parquet").exists()
    [envelope] = loop.decisions(model, 1)
    document = json.loads(encode(envelope, ContentMode.STRUCTURED).value)
    jsonschema.validate(document, event_schemas()["llmops.evaluation.completed.v1"])


async def test_worse_candidate_is_rejected_against_the_champion(loop: Loop, first_model) -> None:
    model, first = first_model
    async with EventPublisher(loop.platform, service="tests") as publisher:
        await publisher.publish(DeploymentPromoted(model_name=model, model_version=1))
    dataset_id = str(first.candidate_metrics.get("test_set", "")).split(" of ")[-1]
    _derived_version(loop, model, 2, damage="worse")
    await asyncio.sleep(1)  # the promotion reaches the evaluation service first (same consumer, earlier offset)
    await _announce(loop, model, 2, dataset_id)

    decision = await loop.decision(model, 2)
    assert decision.decision.value == "rejected"
    assert decision.champion_version == 1
    rules = {reason.rule for reason in decision.reasons}
    assert {"min_accuracy", "max_accuracy_drop", "significantly_worse"} <= rules
    assert all(reason.message for reason in decision.reasons)


async def test_corrupt_artifact_is_rejected_and_duplicate_is_evaluated_once(loop: Loop, first_model) -> None:
    model, first = first_model
    dataset_id = str(first.candidate_metrics.get("test_set", "")).split(" of ")[-1]
    _derived_version(loop, model, 3, damage="corrupt")
    announced = await _announce(loop, model, 3, dataset_id)

    decision = await loop.decision(model, 3)
    assert decision.decision.value == "rejected"
    assert [reason.rule for reason in decision.reasons] == ["artifact_corrupt"]
    assert HEAD_FILE in decision.reasons[0].message

    async with EventPublisher(loop.platform, service="tests") as publisher:
        await publisher.publish(announced)  # the very same event again
    missing = await _announce(loop, model, 99, dataset_id)  # and a version that was never written
    assert missing.data.model_version == 99
    decision_missing = await loop.decision(model, 99)
    assert [reason.rule for reason in decision_missing.reasons] == ["artifact_missing"]
    assert len(loop.decisions(model, 3)) == 1
