"""Two evaluation replicas in one consumer group on the real broker (#18): every decision compares
against the real champion, whichever replica the training topic's partition gave the candidate to.

Before, the champion table came from the group's share of the one-partition deployments topic, so
the replica without that partition compared every candidate against no champion. Each model here is
promoted and, at once, announced as trained: the evaluating replica must know the promotion (its
own reader of the whole deployments topic, synced before each evaluation), load the champion and
score both."""

from __future__ import annotations

import asyncio
import shutil
import tempfile
import uuid
from collections.abc import AsyncIterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pandas as pd
import pytest
from aiokafka import AIOKafkaConsumer
from aiokafka.partitioner import murmur2

from llmops_config import PlatformSettings
from llmops_config.kafka import kafka_client_options
from llmops_evaluation.main import EvaluationRuntime
from llmops_evaluation.settings import EvaluationSettings
from llmops_events import KafkaRecord, decode
from llmops_events.topics import EVALUATIONS, TOPICS_BY_NAME, TRAINING
from llmops_events.v1 import DeploymentPromoted, EvaluationCompleted, TrainingCompleted
from llmops_messaging import EventPublisher, create_broker
from llmops_models.snapshots import write_snapshot
from llmops_storage import ArtifactStore

pytestmark = pytest.mark.integration

POLICY = "min_examples: 5\nmin_accuracy: 0.0\nmax_accuracy_drop: 1.0\nmax_latency_p95_ms: 60000\n"
PHRASES = {
    "card_arrival": ["where is my new card", "my card has not arrived", "when will my card be delivered"],
    "exchange_rate": ["what exchange rate do you use", "is your currency rate fair", "how is the fx rate set"],
    "lost_card": ["i lost my card", "my card was stolen", "someone took my bank card"],
}


def _models_on_every_partition(suffix: str) -> list[str]:
    """One model name per partition of the training topic (the key is the model name), so both
    replicas of the group get candidates to evaluate."""
    partitions = TOPICS_BY_NAME[TRAINING].partitions
    chosen: dict[int, str] = {}
    for i in range(1000):
        name = f"replica-{suffix}-{i}"
        chosen.setdefault((murmur2(name.encode()) & 0x7FFFFFFF) % partitions, name)
        if len(chosen) == partitions:
            return [chosen[p] for p in sorted(chosen)]
    raise AssertionError("no names cover every partition")


def _decisions(replica: EvaluationRuntime) -> float:
    return sum(sample.value for metric in replica.metrics.decisions.collect() for sample in metric.samples)


async def _wait_until(predicate: Any, *, timeout: float, what: str) -> None:
    async with asyncio.timeout(timeout):
        while not predicate():
            await asyncio.sleep(0.2)


@pytest.fixture(scope="module")
async def replicas(
    kafka_settings: PlatformSettings, tiny_model: Any, tmp_path_factory: pytest.TempPathFactory
) -> AsyncIterator[list[EvaluationRuntime]]:
    """Two replicas, each with its own broker connection, state and workspace, one group."""
    group = f"evaluation-{uuid.uuid4().hex[:8]}"
    policies = tmp_path_factory.mktemp("replica-policies")
    (policies / "default.yaml").write_text(POLICY)
    runtimes, brokers = [], []
    for replica in range(2):
        platform = kafka_settings.model_copy(
            update={
                "var_dir": tmp_path_factory.mktemp(f"evaluation-replica-{replica}"),
                "artifact_store_uri": kafka_settings.resolved_artifact_store_uri,
            }
        )
        settings = EvaluationSettings(
            platform=platform, group_id=group, metrics_port=0, policy_dir=policies, latency_examples=5
        )
        runtime = EvaluationRuntime(settings)
        broker = create_broker(platform, service=f"evaluation-replica-{replica}")
        await runtime.open()
        subscriber = runtime.attach(broker)
        await broker.start()
        runtimes.append((runtime, subscriber))
        brokers.append(broker)
    try:
        # Both replicas hold partitions of the training topic before anything is announced.
        await _wait_until(
            lambda: all(s.consumer is not None and s.consumer.assignment() for _, s in runtimes),
            timeout=120,
            what="both replicas assigned",
        )
        yield [runtime for runtime, _ in runtimes]
    finally:
        for broker in brokers:
            await broker.stop()
        for runtime, _ in runtimes:
            await runtime.close()


async def _read_decisions(platform: PlatformSettings, models: set[str], found: dict[str, EvaluationCompleted]) -> None:
    consumer = AIOKafkaConsumer(
        EVALUATIONS,
        **kafka_client_options(platform, service="test").aiokafka(),
        auto_offset_reset="earliest",
        group_id=f"reader-{uuid.uuid4().hex}",
    )
    await consumer.start()
    try:
        while True:
            for records in (await consumer.getmany(timeout_ms=300)).values():
                for m in records:
                    data = decode(KafkaRecord(m.key, m.value or b"", tuple(m.headers or ()))).data
                    if isinstance(data, EvaluationCompleted) and data.model_name in models:
                        found[data.model_name] = data
    finally:
        await consumer.stop()


async def test_every_decision_of_two_replicas_compares_against_the_real_champion(
    replicas: list[EvaluationRuntime], kafka_settings: PlatformSettings, tiny_model: Any
) -> None:
    store = ArtifactStore(kafka_settings.resolved_artifact_store_uri)
    suffix = uuid.uuid4().hex[:6]
    models = _models_on_every_partition(suffix)
    dataset_id = f"replicas-{suffix}"
    rows = [
        {"text": f"{phrase} please {i}", "label": label, "split": "test", "tenant": "acme", "source": "crm"}
        for label, phrases in PHRASES.items()
        for i, phrase in enumerate(phrases * 2)
    ]
    write_snapshot(store, pd.DataFrame(rows), dataset_id=dataset_id)
    with tempfile.TemporaryDirectory() as scratch:
        folder = Path(scratch) / "model"
        store.download_folder(f"models/{tiny_model.model_name}/{tiny_model.model_version}", folder)
        (folder / "_COMPLETE").unlink(missing_ok=True)
        for model in models:
            for version in (1, 2):  # the champion and the candidate: the same weights, both scored
                copy = Path(scratch) / f"{model}-{version}"
                shutil.copytree(folder, copy)
                store.publish_folder(copy, f"models/{model}/{version}")

    decisions: dict[str, EvaluationCompleted] = {}
    reader = asyncio.get_running_loop().create_task(_read_decisions(kafka_settings, set(models), decisions))
    try:
        async with EventPublisher(kafka_settings, service="tests") as publisher:
            for model in models:
                # The promotion and the candidate back to back: no pause for the replicas to catch up.
                await publisher.publish(DeploymentPromoted(model_name=model, model_version=1))
                await publisher.publish(
                    TrainingCompleted(
                        model_name=model,
                        request_id=f"test-{uuid.uuid4().hex}",
                        model_version=2,
                        artifact_uri=store.uri(f"models/{model}/2"),
                        metrics={},
                        trainable_parameter_share=0.01,
                        wall_time_seconds=1,
                        lineage={"dataset_id": dataset_id},
                        completed_at=datetime.now(UTC),
                    )
                )
        await _wait_until(lambda: len(decisions) == len(models), timeout=600, what="every decision")
    finally:
        reader.cancel()
        await asyncio.gather(reader, return_exceptions=True)

    for model in models:
        decision = decisions[model]
        assert decision.champion_version == 1, (model, decision.reasons)
        # The champion was loaded and scored on the same test set, not only named.
        assert decision.champion_metrics.get("accuracy") is not None, decision.champion_metrics
    # Both replicas decided some of them (one holds two of the three partitions, the other one).
    assert all(_decisions(replica) >= 1 for replica in replicas), [_decisions(r) for r in replicas]
