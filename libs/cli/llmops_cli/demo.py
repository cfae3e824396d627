"""``make demo``: the lifecycle on the embedded default, as a readable timeline.

The demo acts as the enterprise producer and the operator: it publishes records (some with PII,
some malformed), waits for ingestion to cut a snapshot, asks for a training run, and follows the
events of every service until the evaluation gate decides. It only talks to Kafka, like any
client of the platform, and reads nothing from the services' internals.
"""

from __future__ import annotations

import asyncio
import json
import time
import uuid
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from aiokafka import AIOKafkaConsumer, TopicPartition

from llmops_cli.demo_data import banking77, generated, with_pii
from llmops_config import PlatformSettings
from llmops_events import ContentMode, DecodeError, Envelope, KafkaRecord, decode
from llmops_events.topics import DATASETS, EVALUATIONS, RECORDS_DLQ, RECORDS_RAW, TRAINING
from llmops_events.v1 import (
    DatasetSnapshotted,
    EvaluationCompleted,
    Hyperparameters,
    RecordSubmitted,
    TrainingCompleted,
    TrainingFailed,
    TrainingProgressed,
    TrainingReason,
    TrainingRequested,
    TrainingStarted,
)
from llmops_messaging import EventPublisher
from llmops_messaging.admin import topic_partitions

NOT_YET_IN_THE_LOOP = (
    "deployment to Triton and the gRPC gateway (issue #6)",
    "monitoring with drift-triggered retraining (issue #7)",
)


@dataclass
class DemoOptions:
    model_name: str = "banking-intents"
    labels: int = 20
    per_label: int = 60
    pii_share: float = 0.05
    epochs: float = 3.0
    seed: int = 7
    data_dir: Path | None = None
    timeout_s: float = 1500.0


@dataclass
class Timeline:
    """Prints one line per step, with the time since the demo started."""

    started: float = field(default_factory=time.monotonic)
    stages: dict[str, float] = field(default_factory=dict)
    _stage_started: float = field(default_factory=time.monotonic)

    def say(self, stage: str, message: str) -> None:
        print(f"[{time.monotonic() - self.started:7.1f}s] {stage:<11} {message}", flush=True)

    def end_stage(self, stage: str) -> None:
        now = time.monotonic()
        self.stages[stage] = now - self._stage_started
        self._stage_started = now


class EventLog:
    """Every event published on the platform's topics after the demo started, in arrival order."""

    def __init__(self, settings: PlatformSettings) -> None:
        self._settings = settings
        self.events: list[Envelope[Any]] = []
        self.dead_letters: list[dict[str, str]] = []
        self._consumer: AIOKafkaConsumer | None = None
        self._task: asyncio.Task[None] | None = None
        self._new = asyncio.Event()

    async def start(self) -> None:
        consumer = AIOKafkaConsumer(
            bootstrap_servers=self._settings.kafka_bootstrap_servers,
            group_id=f"demo-{uuid.uuid4().hex[:8]}",
            enable_auto_commit=False,
        )
        await consumer.start()
        partitions = []
        for topic in (DATASETS, TRAINING, EVALUATIONS, RECORDS_DLQ):
            ids = await topic_partitions(self._settings.kafka_bootstrap_servers, topic)
            if not ids:
                raise RuntimeError(f"topic {topic} does not exist; is the stack up (`make status`)?")
            partitions += [TopicPartition(topic, p) for p in ids]
        consumer.assign(partitions)
        await consumer.seek_to_end(*partitions)
        for partition in partitions:  # resolve the end positions now, before anything is published
            await consumer.position(partition)
        self._consumer = consumer
        self._task = asyncio.create_task(self._read())

    async def _read(self) -> None:
        assert self._consumer is not None
        async for message in self._consumer:
            record = KafkaRecord(message.key, message.value or b"", tuple(message.headers or ()))
            if message.topic == RECORDS_DLQ:
                headers = {k: v.decode("utf-8", "replace") for k, v in record.headers if k.startswith("error.")}
                self.dead_letters.append(headers)
            else:
                try:
                    self.events.append(decode(record))
                except DecodeError:
                    continue
            self._new.set()

    async def wait_for(self, predicate: Any, *, timeout: float, on_event: Any = None) -> Envelope[Any]:
        """The first event (old or new) matching ``predicate``; ``on_event`` sees each new one."""
        seen = 0
        deadline = time.monotonic() + timeout
        while True:
            for envelope in self.events[seen:]:
                if on_event is not None:
                    on_event(envelope)
                if predicate(envelope):
                    return envelope
            seen = len(self.events)
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                raise TimeoutError
            self._new.clear()
            try:
                await asyncio.wait_for(self._new.wait(), timeout=min(remaining, 5))
            except TimeoutError:
                continue

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
        if self._consumer is not None:
            await self._consumer.stop()


def _snapshot_threshold() -> int:
    from llmops_ingestion.settings import IngestionSettings

    return IngestionSettings().snapshot_every_n_labelled


async def run_demo(settings: PlatformSettings, options: DemoOptions) -> int:
    """Run the lifecycle; returns the process exit code (0 when every stage that exists succeeded)."""
    timeline = Timeline()
    run_id = uuid.uuid4().hex[:8]
    tenant = f"demo-{run_id}"  # a fresh tenant per run: de-duplication is per tenant
    events = EventLog(settings)
    await events.start()
    try:
        return await _lifecycle(settings, options, timeline, events, run_id, tenant)
    except TimeoutError:
        timeline.say("demo", "[FAILED] timed out waiting for the next event; see `make logs`")
        return 1
    finally:
        await events.stop()


async def _lifecycle(
    settings: PlatformSettings, options: DemoOptions, timeline: Timeline, events: EventLog, run_id: str, tenant: str
) -> int:
    # 1. An enterprise producer publishes labelled records, some with PII and some malformed.
    def per_label_for(labels: int) -> int:
        # Enough distinct records for ingestion's snapshot policy to fire (20% to spare).
        return max(options.per_label, -(-int(_snapshot_threshold() * 1.2) // labels))

    if options.data_dir is not None and (options.data_dir / "banking77" / "train.csv").exists():
        records = banking77(
            options.data_dir / "banking77",
            labels=options.labels,
            per_label=per_label_for(options.labels),
            seed=options.seed,
        )
        origin = f"BANKING77 ({options.data_dir / 'banking77'})"
    else:
        labels = min(options.labels, 6)
        records = generated(labels=labels, per_label=per_label_for(labels), seed=options.seed)
        origin = "the built-in generator (BANKING77 not found; set LLMOPS_SHARED_DATA)"
    records = with_pii(records, share=options.pii_share, seed=options.seed)
    correlation = f"demo-{run_id}"
    async with EventPublisher(settings, service="demo") as publisher:
        for i, record in enumerate(records):
            data = RecordSubmitted(
                tenant=tenant,
                source="crm" if i % 3 else "chat",
                text=record.text,
                label=record.label,
                metadata={"demo_run": run_id},
            )
            await publisher.publish(
                data, mode=ContentMode.STRUCTURED if i % 2 else ContentMode.BINARY, correlationid=correlation
            )
        malformed = [
            b"{this is not json",
            json.dumps(
                {
                    "specversion": "1.0",
                    "id": uuid.uuid4().hex,
                    "source": "crm",
                    "type": "llmops.record.submitted.v1",
                    "data": {"source": "crm", "text": "no tenant"},
                }
            ).encode(),
            json.dumps(
                {
                    "specversion": "1.0",
                    "id": uuid.uuid4().hex,
                    "source": "crm",
                    "type": "llmops.record.submitted.v1",
                    "data": {"tenant": tenant, "source": "crm", "text": "x" * 9000},
                }
            ).encode(),
        ]
        for value in malformed:
            await publisher.publish_record(RECORDS_RAW, KafkaRecord(key=b"malformed", value=value))
    timeline.say(
        "producer",
        f"published {len(records)} labelled records from {origin}: "
        f"{sum(r.has_pii for r in records)} with PII, {len(malformed)} malformed",
    )
    timeline.end_stage("produce")

    # 2. Ingestion curates them and cuts a snapshot (every N new labelled records).
    snapshot = (await events.wait_for(lambda e: isinstance(e.data, DatasetSnapshotted), timeout=300)).data
    timeline.say(
        "ingestion",
        f"snapshot {snapshot.dataset_id}: {snapshot.row_count} rows, "
        f"splits {snapshot.split_counts}, {len(snapshot.label_counts)} labels",
    )
    deadline = time.monotonic() + 60  # the malformed messages were published last
    while len(events.dead_letters) < len(malformed) and time.monotonic() < deadline:
        await asyncio.sleep(0.5)
    timeline.say(
        "ingestion",
        f"{len(events.dead_letters)} message(s) on the DLQ: "
        + ", ".join(sorted({d.get("error.reason", "?") for d in events.dead_letters})),
    )
    timeline.end_stage("ingest")

    # 3. The first training run.
    request = Envelope.wrap(
        TrainingRequested(
            model_name=options.model_name,
            dataset_id=snapshot.dataset_id,
            reason=TrainingReason.NEW_DATA,
            requested_by="demo",
            hyperparameters=Hyperparameters(epochs=options.epochs, seed=options.seed),
        ),
        source="/llmops/demo",
        correlationid=correlation,
    )
    async with EventPublisher(settings, service="demo") as publisher:
        await publisher.publish(request)
    timeline.say("training", f"requested {options.model_name} on {snapshot.dataset_id} ({options.epochs} epochs)")

    def show_training(envelope: Envelope[Any]) -> None:
        data = envelope.data
        if isinstance(data, TrainingStarted) and data.request_id == request.id:
            timeline.say("training", f"started version {data.model_version} on {data.worker}")
        elif isinstance(data, TrainingProgressed) and data.request_id == request.id:
            timeline.say(
                "training",
                f"step {data.step}/{data.total_steps} epoch {data.epoch:.2f} "
                f"loss {data.loss:.3f} {data.examples_per_second:.0f} ex/s "
                f"ETA {data.eta_seconds:.0f}s",
            )

    outcome = (
        await events.wait_for(
            lambda e: isinstance(e.data, TrainingCompleted | TrainingFailed) and e.data.request_id == request.id,
            timeout=options.timeout_s,
            on_event=show_training,
        )
    ).data
    if isinstance(outcome, TrainingFailed):
        timeline.say("training", f"[FAILED] {outcome.reason}: {outcome.detail}")
        return 1
    metrics = ", ".join(f"{k} {v:.3f}" for k, v in sorted(outcome.metrics.items()) if isinstance(v, float))
    timeline.say(
        "training",
        f"completed version {outcome.model_version} in {outcome.wall_time_seconds:.0f}s: "
        f"{metrics}; artifact {outcome.artifact_uri}",
    )
    timeline.end_stage("train")

    # 4. The evaluation gate.
    evaluation = (
        await events.wait_for(
            lambda e: (
                isinstance(e.data, EvaluationCompleted)
                and e.data.model_name == options.model_name
                and e.data.model_version == outcome.model_version
            ),
            timeout=600,
        )
    ).data
    quality = evaluation.candidate_metrics
    timeline.say(
        "evaluation",
        f"{evaluation.decision.value.upper()} version {evaluation.model_version} "
        f"(champion: {evaluation.champion_version or 'none'}): accuracy "
        f"{quality.get('accuracy', 0):.3f}, macro-F1 {quality.get('macro_f1', 0):.3f}, "
        f"p95 {quality.get('latency_p95_ms', 0):.1f} ms",
    )
    for reason in evaluation.reasons:
        timeline.say("evaluation", f"  rule {reason.rule}: {reason.message}")
    timeline.say("evaluation", f"report {evaluation.report_uri}")
    timeline.end_stage("evaluate")

    # 5. Summary.
    print("\nsummary")
    print(f"  model {options.model_name} version {evaluation.model_version}: {evaluation.decision.value}")
    print(
        f"  dataset {snapshot.dataset_id} ({snapshot.row_count} rows), DLQ entries this run: {len(events.dead_letters)}"
    )
    print("  stage durations: " + ", ".join(f"{k} {v:.0f}s" for k, v in timeline.stages.items()))
    print("  not yet in the loop: " + "; ".join(NOT_YET_IN_THE_LOOP))
    print("  the stack keeps running: `make status`, `make logs`, `make down`")
    return 0
