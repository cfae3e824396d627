"""The fine-tuning service in-process against the real Kafka broker: a request becomes started,
progressed and completed events and a loadable version; a duplicate trains nothing; a bad request
fails fast with its reason and is acknowledged, not dead-lettered."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any

import pandas as pd
import pytest
from aiokafka import AIOKafkaConsumer

from llmops_config import PlatformSettings
from llmops_config.kafka import kafka_client_options
from llmops_events import Envelope, KafkaRecord, decode
from llmops_events.topics import TRAINING
from llmops_events.v1.training import (
    Hyperparameters,
    TrainingCompleted,
    TrainingFailed,
    TrainingProgressed,
    TrainingStarted,
)
from llmops_fine_tuning.main import FineTuningRuntime
from llmops_fine_tuning.settings import FineTuningSettings
from llmops_fine_tuning.starter import request_training
from llmops_messaging import EventPublisher, Outcome, create_broker
from llmops_models import MANIFEST_FILE, ModelRegistry, hash_folder, model_path
from llmops_models.kinds.classifier.network import load_classifier
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
FAST = Hyperparameters(epochs=1, batch_size=8, max_length=32, lora_rank=4, target_modules=["query", "value"])


def snapshot_frame(train_per_label: int, validation_per_label: int = 4) -> pd.DataFrame:
    rows = []
    for label, phrases in PHRASES.items():
        for i in range(train_per_label + validation_per_label):
            split = "train" if i < train_per_label else "validation"
            rows.append({"text": f"{phrases[i % len(phrases)]} please {i}", "label": label, "split": split})
    return pd.DataFrame(rows)


class Service:
    """The service running in this process on its own consumer group and artifact store."""

    def __init__(self, settings: FineTuningSettings) -> None:
        self.settings = settings
        self.store = ArtifactStore(settings.platform.resolved_artifact_store_uri)
        self.outcomes: list[Outcome] = []
        self.events: list[Envelope[Any]] = []
        self._reader_task: asyncio.Task[None] | None = None

    async def read_training_topic(self) -> None:
        consumer = AIOKafkaConsumer(
            TRAINING,
            **kafka_client_options(self.settings.platform, service="test").aiokafka(),
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

    def of(self, request_id: str, kind: type) -> list[Envelope[Any]]:
        return [e for e in self.events if isinstance(e.data, kind) and e.data.request_id == request_id]

    async def wait_for(self, predicate: Callable[[], bool], timeout: float = 120) -> None:
        async with asyncio.timeout(timeout):
            while not predicate():
                await asyncio.sleep(0.2)


@pytest.fixture(scope="module")
async def service(kafka_settings: PlatformSettings, tmp_path_factory: pytest.TempPathFactory) -> AsyncIterator[Service]:
    var_dir = tmp_path_factory.mktemp("fine-tuning")
    platform = kafka_settings.model_copy(update={"var_dir": var_dir, "artifact_store_uri": str(var_dir / "artifacts")})
    settings = FineTuningSettings(
        platform=platform,
        group_id=f"fine-tuning-{uuid.uuid4().hex[:8]}",
        progress_interval_s=0.5,
        min_examples_per_label=8,
        metrics_port=0,
    )
    harness = Service(settings)
    runtime = FineTuningRuntime(settings)
    broker = create_broker(platform, service="fine-tuning-test")
    await runtime.open()
    runtime.attach(broker, on_outcome=harness.outcomes.append)
    await broker.start()
    reader = asyncio.get_running_loop().create_task(harness.read_training_topic())
    try:
        yield harness
    finally:
        reader.cancel()
        await asyncio.gather(reader, return_exceptions=True)
        await broker.stop()
        await runtime.close()


async def test_request_is_trained_reported_and_published_as_a_loadable_version(service: Service, tmp_path: Path):
    dataset_id = f"tiny-{uuid.uuid4().hex[:6]}"
    write_snapshot(service.store, snapshot_frame(train_per_label=12), dataset_id=dataset_id)
    model = f"intents-{uuid.uuid4().hex[:6]}"

    request = await request_training(service.settings, model, dataset_id, hyperparameters=FAST)
    await service.wait_for(lambda: service.of(request.id, TrainingCompleted) or service.of(request.id, TrainingFailed))

    assert not service.of(request.id, TrainingFailed), service.of(request.id, TrainingFailed)
    [started] = service.of(request.id, TrainingStarted)
    progressed = service.of(request.id, TrainingProgressed)
    [completed] = service.of(request.id, TrainingCompleted)
    assert started.data.model_version == completed.data.model_version == 1
    assert started.data.dataset_id == dataset_id
    assert progressed and progressed[-1].data.step == progressed[-1].data.total_steps == 5
    assert all(e.correlationid == request.id for e in [started, *progressed, completed])
    order = [e.id for e in service.events]
    assert order.index(started.id) < order.index(progressed[-1].id) < order.index(completed.id)

    report = completed.data
    lineage = report.lineage
    assert lineage["dataset_id"] == dataset_id and lineage["dataset_content_hash"].startswith("sha256:")
    assert lineage["base_model_weights_hash"].startswith("sha256:") and lineage["code_version"]
    assert lineage["hyperparameters"]["max_length"] == 32 and lineage["hyperparameters"]["learning_rate"] > 0
    assert 0 < report.trainable_parameter_share < 0.05

    folder = service.store.download_folder(model_path(model, 1), tmp_path / "artifact")
    assert report.artifact_uri == service.store.uri(model_path(model, 1))
    manifest = service.store.read_json(f"{model_path(model, 1)}/{MANIFEST_FILE}")
    assert manifest["files"] == hash_folder(folder) and "adapter/adapter_model.safetensors" in manifest["files"]
    validation = snapshot_frame(train_per_label=12).query("split == 'validation'")
    labels, _ = load_classifier(folder).predict(validation["text"].tolist())
    accuracy = sum(p == t for p, t in zip(labels, validation["label"], strict=True)) / len(labels)
    assert accuracy == pytest.approx(report.metrics["accuracy"])

    # The same request again (same event id), as after a producer retry: no second training.
    handled_before = service.outcomes.count(Outcome.DUPLICATE)
    async with EventPublisher(service.settings.platform, service="tests") as publisher:
        await publisher.publish(request)
    await service.wait_for(lambda: service.outcomes.count(Outcome.DUPLICATE) > handled_before, timeout=30)
    assert ModelRegistry(service.store).published_versions(model) == [1]
    assert len(service.of(request.id, TrainingStarted)) == 1


@pytest.mark.parametrize(("train_per_label", "reason"), [(None, "dataset_not_found"), (3, "too_few_examples")])
async def test_bad_request_fails_fast_with_reason_and_is_acknowledged(
    service: Service, train_per_label: int | None, reason: str
) -> None:
    dataset_id = f"bad-{uuid.uuid4().hex[:6]}"
    if train_per_label is not None:
        write_snapshot(service.store, snapshot_frame(train_per_label=train_per_label), dataset_id=dataset_id)
    dead_lettered_before = service.outcomes.count(Outcome.DEAD_LETTERED)

    request = await request_training(service.settings, f"bad-{uuid.uuid4().hex[:6]}", dataset_id)
    await service.wait_for(lambda: bool(service.of(request.id, TrainingFailed)), timeout=60)

    [failed] = service.of(request.id, TrainingFailed)
    assert failed.data.reason == reason and not failed.data.retryable and failed.data.detail
    assert failed.correlationid == request.id
    assert not service.of(request.id, TrainingStarted)
    assert service.outcomes.count(Outcome.DEAD_LETTERED) == dead_lettered_before


async def test_a_request_for_1e9_epochs_fails_fast_with_its_reason_and_the_next_request_is_trained(
    service: Service,
) -> None:
    """Issue 20: ``epochs: 1e9`` used to train (in effect) forever and block the partition."""
    dataset_id = f"bounds-{uuid.uuid4().hex[:6]}"
    write_snapshot(service.store, snapshot_frame(train_per_label=12), dataset_id=dataset_id)
    model = f"bounds-{uuid.uuid4().hex[:6]}"
    dead_lettered_before = service.outcomes.count(Outcome.DEAD_LETTERED)

    runaway = await request_training(
        service.settings, model, dataset_id, hyperparameters=FAST.model_copy(update={"epochs": 1e9})
    )
    following = await request_training(service.settings, model, dataset_id, hyperparameters=FAST)
    await service.wait_for(lambda: bool(service.of(runaway.id, TrainingFailed)), timeout=60)

    [failed] = service.of(runaway.id, TrainingFailed)
    assert failed.data.reason == "hyperparameter_out_of_bounds" and not failed.data.retryable
    assert "epochs" in failed.data.detail and "max_epochs" in failed.data.detail
    assert not service.of(runaway.id, TrainingStarted)

    await service.wait_for(
        lambda: bool(service.of(following.id, TrainingCompleted) or service.of(following.id, TrainingFailed))
    )
    assert not service.of(following.id, TrainingFailed), service.of(following.id, TrainingFailed)
    [completed] = service.of(following.id, TrainingCompleted)
    assert completed.data.model_version == 1
    assert service.outcomes.count(Outcome.DEAD_LETTERED) == dead_lettered_before
