"""Issue 20, item 4, on the real broker: one training request per poll and one commit per job.

Two requests for one model (one partition) are published before the service starts, so a batching
consumer would fetch both at once. A slow fake trainer holds each job until the test lets it go:
while the second job runs, the group's committed offset must already be just past the first
request, i.e. the first job was committed on its own (before, both shared one commit after the
second job, and a job longer than the poll interval got the member evicted and the work redone).
"""

from __future__ import annotations

import asyncio
import threading
import uuid
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pandas as pd
import pytest
from aiokafka import AIOKafkaConsumer
from aiokafka.admin import AIOKafkaAdminClient
from aiokafka.structs import TopicPartition

from llmops_config import PlatformSettings
from llmops_config.kafka import kafka_client_options
from llmops_events import Envelope, KafkaRecord, decode
from llmops_events.topics import TRAINING
from llmops_events.v1.training import TrainingCompleted, TrainingFailed, TrainingStarted
from llmops_fine_tuning.domain.ports import InstructionData, ProgressCallback, TrainingData, TrainingResult
from llmops_fine_tuning.domain.request import TrainingJob
from llmops_fine_tuning.main import FineTuningRuntime
from llmops_fine_tuning.settings import FineTuningSettings
from llmops_fine_tuning.starter import request_training
from llmops_messaging import create_broker
from llmops_models.snapshots import write_snapshot
from llmops_storage import ArtifactStore

pytestmark = pytest.mark.integration


class SlowFakeTrainer:
    """A stand-in for the LoRA trainer whose jobs for the gated request ids last until released
    (any other request on the topic trains at once). Writes one small file as the model."""

    def __init__(self) -> None:
        self.running: str | None = None
        self._gates: dict[str, threading.Event] = {}

    def gate(self, request_id: str) -> None:
        self._gates[request_id] = threading.Event()

    def release(self, request_id: str) -> None:
        self._gates[request_id].set()

    def release_all(self) -> None:
        for gate in self._gates.values():
            gate.set()

    def train(
        self, job: TrainingJob, data: TrainingData | InstructionData, output: Path, *, on_progress: ProgressCallback
    ) -> TrainingResult:
        gate = self._gates.get(job.request_id)
        self.running = job.request_id
        try:
            if gate is not None and not gate.wait(timeout=120):
                raise TimeoutError(f"the test never released {job.request_id}")
        finally:
            self.running = None
        output.mkdir(parents=True, exist_ok=True)
        (output / "weights.bin").write_bytes(job.request_id.encode())
        return TrainingResult(
            metrics={"accuracy": 1.0},
            trainable_parameter_share=0.01,
            wall_time_seconds=0.1,
            base_model_weights_hash="sha256:fake",
        )


class Topic:
    """Every event on the training topic, and where each was written."""

    def __init__(self, platform: PlatformSettings) -> None:
        self.platform = platform
        self.events: list[Envelope[Any]] = []
        self.positions: dict[str, tuple[int, int]] = {}

    async def read(self) -> None:
        consumer = AIOKafkaConsumer(
            TRAINING,
            **kafka_client_options(self.platform, service="test").aiokafka(),
            auto_offset_reset="earliest",
            group_id=f"reader-{uuid.uuid4().hex}",
        )
        await consumer.start()
        try:
            while True:
                for records in (await consumer.getmany(timeout_ms=200)).values():
                    for m in records:
                        envelope = decode(KafkaRecord(m.key, m.value or b"", tuple(m.headers or ())))
                        self.events.append(envelope)
                        self.positions[envelope.id] = (m.partition, m.offset)
        finally:
            await consumer.stop()

    def of(self, request_id: str, kind: type) -> list[Envelope[Any]]:
        return [
            e for e in self.events if isinstance(e.data, kind) and getattr(e.data, "request_id", None) == request_id
        ]


async def wait_for(predicate: Callable[[], bool], timeout: float = 60) -> None:
    async with asyncio.timeout(timeout):
        while not predicate():
            await asyncio.sleep(0.1)


async def committed_offset(platform: PlatformSettings, group_id: str, partition: int) -> int | None:
    admin = AIOKafkaAdminClient(**kafka_client_options(platform, service="test").aiokafka())
    await admin.start()
    try:
        offsets = await admin.list_consumer_group_offsets(group_id)
    finally:
        await admin.close()
    found = offsets.get(TopicPartition(TRAINING, partition))
    return None if found is None or found.offset < 0 else found.offset


async def test_two_requests_back_to_back_are_committed_one_job_at_a_time(
    kafka_settings: PlatformSettings, tmp_path: Path
) -> None:
    platform = kafka_settings.model_copy(
        update={"var_dir": tmp_path, "artifact_store_uri": str(tmp_path / "artifacts")}
    )
    settings = FineTuningSettings(
        platform=platform,
        group_id=f"fine-tuning-{uuid.uuid4().hex[:8]}",
        min_examples_per_label=1,
        fresh_snapshot_wait_s=0,
        metrics_port=0,
    )
    store = ArtifactStore(platform.resolved_artifact_store_uri)
    dataset_id = f"ds-{uuid.uuid4().hex[:6]}"
    rows = [
        {"text": f"text {label}", "label": label, "split": split} for label in "ab" for split in ("train", "validation")
    ]
    write_snapshot(store, pd.DataFrame(rows), dataset_id=dataset_id)
    model = f"commits-{uuid.uuid4().hex[:6]}"

    topic = Topic(platform)
    reader = asyncio.get_running_loop().create_task(topic.read())
    trainer = SlowFakeTrainer()
    first = await request_training(settings, model, dataset_id)
    second = await request_training(settings, model, dataset_id)
    trainer.gate(first.id)
    trainer.gate(second.id)
    await wait_for(lambda: first.id in topic.positions and second.id in topic.positions)
    partition, first_offset = topic.positions[first.id]
    second_partition, second_offset = topic.positions[second.id]
    assert second_partition == partition and second_offset > first_offset  # one key, one partition

    runtime = FineTuningRuntime(settings, trainer=trainer)
    broker = create_broker(platform, service="fine-tuning-commit-test")
    await runtime.open()
    runtime.attach(broker)
    await broker.start()
    try:
        await wait_for(lambda: trainer.running == first.id)
        before = await committed_offset(platform, settings.group_id, partition)
        assert before is None or before <= first_offset

        trainer.release(first.id)
        await wait_for(lambda: trainer.running == second.id)
        # The first job is reported and committed on its own while the second is still running.
        await wait_for(lambda: bool(topic.of(first.id, TrainingCompleted)), timeout=10)
        committed = await committed_offset(platform, settings.group_id, partition)
        assert committed is not None and first_offset < committed <= second_offset, (committed, first_offset)

        trainer.release(second.id)
        await wait_for(lambda: bool(topic.of(second.id, TrainingCompleted)))
        async with asyncio.timeout(10):
            while (await committed_offset(platform, settings.group_id, partition) or 0) <= second_offset:
                await asyncio.sleep(0.2)
        assert not topic.of(first.id, TrainingFailed) and not topic.of(second.id, TrainingFailed)
        assert len(topic.of(first.id, TrainingStarted)) == len(topic.of(second.id, TrainingStarted)) == 1
    finally:
        trainer.release_all()
        reader.cancel()
        await asyncio.gather(reader, return_exceptions=True)
        await broker.stop()
        await runtime.close()
