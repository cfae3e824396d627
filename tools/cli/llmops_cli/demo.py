"""``make demo``: the lifecycle on the embedded default, as a readable timeline.

The demo acts as the enterprise producer, the operator and a client application: it publishes
records (some with PII, some malformed), asks for the first training run once ingestion cut a
snapshot, then calls the gateway over gRPC once the model is live, sends feedback, and shifts its
traffic until monitoring asks for retraining; it follows every service's events until the new
version is promoted, rolled back or rejected. It talks to Kafka and the gateway like any client
and reads only published artifacts (snapshot files), never the services' internals.
"""

from __future__ import annotations

import asyncio
import json
import random
import time
import uuid
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from aiokafka import AIOKafkaConsumer, TopicPartition

from llmops_cli.demo_data import OUT_OF_SCOPE, DemoRecord, banking77, drifted, generated, with_pii
from llmops_cli.demo_traffic import GatewayClient, send_traffic
from llmops_config import PlatformSettings
from llmops_config.kafka import kafka_client_options
from llmops_events import ContentMode, DecodeError, Envelope, KafkaRecord, decode
from llmops_events.topics import DATASETS, DEPLOYMENTS, EVALUATIONS, MONITORING, RECORDS_DLQ, RECORDS_RAW, TRAINING
from llmops_events.v1 import (
    DatasetSnapshotted,
    Decision,
    DeploymentCanaryStarted,
    DeploymentPromoted,
    DeploymentRequested,
    DeploymentRolledBack,
    EvaluationCompleted,
    Hyperparameters,
    MonitoringDriftDetected,
    MonitoringReportCreated,
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
    max_drift_windows: int = 4


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
        options = kafka_client_options(self._settings, service="demo")
        consumer = AIOKafkaConsumer(
            **options.aiokafka(),
            group_id=f"demo-{uuid.uuid4().hex[:8]}",
            enable_auto_commit=False,
        )
        await consumer.start()
        partitions = []
        for topic in (DATASETS, TRAINING, EVALUATIONS, DEPLOYMENTS, MONITORING, RECORDS_DLQ):
            ids = await topic_partitions(options, topic)
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
    from llmops_ingestion import IngestionSettings

    return IngestionSettings().snapshot_every_n_labelled


async def run_demo(settings: PlatformSettings, options: DemoOptions, *, events: EventLog | None = None) -> int:
    """Run the lifecycle; returns the process exit code (0 only when the loop closed). Pass
    ``events`` to keep every event the demo saw (the end-to-end test asserts on them)."""
    timeline = Timeline()
    run_id = uuid.uuid4().hex[:8]
    tenant = f"demo-{run_id}"  # a fresh tenant per run: de-duplication is per tenant
    events = events or EventLog(settings)
    await events.start()
    try:
        return await _lifecycle(settings, options, timeline, events, run_id, tenant)
    except TimeoutError as error:
        timeline.say("demo", f"[FAILED] timed out waiting for the next step{f' ({error})' if str(error) else ''}")
        timeline.say("demo", "see `make logs` and `make status`")
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
    snapshotted = await events.wait_for(lambda e: isinstance(e.data, DatasetSnapshotted), timeout=300)
    snapshot = snapshotted.data
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
        # Training on this snapshot continues its trace: one trace from the records to deployment.
        traceparent=snapshotted.traceparent,
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

    if evaluation.decision != Decision.APPROVED:
        timeline.say("demo", "[FAILED] the first version was not approved, so nothing can go live")
        _summary(timeline, events, [evaluation], snapshot, closed=False)
        return 1

    # 5. Deployment puts it live on Triton.
    first = await _deployment_outcome(events, options.model_name, evaluation.model_version, timeline, timeout=900)
    if not isinstance(first, DeploymentPromoted):
        timeline.say("demo", "[FAILED] the first version did not go live")
        return 1
    timeline.end_stage("deploy")

    serving = _serving_records(options, records)
    window = _monitoring_window_size()
    from llmops_stack.keys import local_api_key

    async with (
        GatewayClient(settings, local_api_key(settings), tenant=tenant) as client,
        EventPublisher(settings, service="demo-client") as publisher,
    ):
        # 6. A client sends traffic through the gateway, with feedback for part of it.
        await client.wait_until_serving(options.model_name, first.model_version, serving[0].text)
        rng = random.Random(options.seed)
        calm = [rng.choice(serving) for _ in range(window)]
        report = await send_traffic(
            client, publisher, calm, model=options.model_name, feedback_share=0.3, seed=options.seed
        )
        timeline.say("gateway", f"in-distribution traffic: {report.describe()}")
        calm_report = await _next_report(events, options.model_name, first.model_version, seen=0, timeout=600)
        _say_report(timeline, calm_report)
        timeline.end_stage("serve")

        # 7. The traffic drifts; monitoring detects it and asks for retraining with the evidence.
        drift_started = len(events.events)
        retrain: Envelope[Any] | None = None
        for round_number in range(1, options.max_drift_windows + 1):
            shifted = drifted([rng.choice(serving) for _ in range(window)], seed=options.seed + round_number)
            # Counted before the traffic: its window may be reported before the traffic call returns.
            reports_so_far = _reports(events, options.model_name, first.model_version)
            report = await send_traffic(
                client, publisher, shifted, model=options.model_name, feedback_share=0.8, seed=round_number
            )
            timeline.say("gateway", f"drifted traffic, window {round_number}: {report.describe()}")
            _say_report(
                timeline,
                await _next_report(
                    events, options.model_name, first.model_version, seen=len(reports_so_far), timeout=600
                ),
            )
            retrain = _retraining_request(events, options.model_name, since=drift_started)
            if retrain is not None:
                break
        if retrain is None:
            timeline.say("demo", f"[FAILED] no retraining request after {options.max_drift_windows} drifted windows")
            return 1
        detection = next(
            (
                e.data
                for e in events.events[drift_started:]
                if isinstance(e.data, MonitoringDriftDetected) and e.data.model_name == options.model_name
            ),
            None,
        )
        if detection is not None:
            evidence = ", ".join(f"{k} {v:.3f}" if isinstance(v, float) else f"{k} {v}" for k, v in _flat(detection))
            timeline.say("monitoring", f"{detection.kind.upper()} detected: breached {detection.breached}; {evidence}")
            timeline.say("monitoring", f"report {detection.report_uri}")
        timeline.say(
            "monitoring",
            f"requested retraining ({retrain.data.reason.value}), correlation {retrain.correlationid}",
        )
        timeline.end_stage("drift")

        # 8. The retraining learns from the new data; evaluation gates it; deployment canaries it.
        outcome = await _follow_training(events, retrain.id, timeline, timeout=options.timeout_s)
        if isinstance(outcome, TrainingFailed):
            timeline.say("training", f"[FAILED] {outcome.reason}: {outcome.detail}")
            return 1
        started = next(
            e.data for e in events.events if isinstance(e.data, TrainingStarted) and e.data.request_id == retrain.id
        )
        timeline.say("ingestion", _describe_snapshot(events, started.dataset_id))
        timeline.end_stage("retrain")
        second = await _evaluation_of(events, options.model_name, outcome.model_version, timeline)
        timeline.end_stage("re-evaluate")
        decided: Any = second
        if second.decision == Decision.APPROVED:
            decided = await _canary(
                events, client, publisher, options, serving, second.model_version, timeline, rng, timeout=900
            )
        timeline.end_stage("canary")

    closed = isinstance(decided, DeploymentPromoted | DeploymentRolledBack) or (
        isinstance(decided, EvaluationCompleted) and decided.decision == Decision.REJECTED
    )
    _summary(timeline, events, [evaluation, second], snapshot, closed=closed, correlation=retrain.correlationid)
    return 0 if closed else 1


def _serving_records(options: DemoOptions, training: list[DemoRecord]) -> list[DemoRecord]:
    """In-distribution requests for the client: BANKING77's test split for the same intents when
    present, else generated requests (another seed than the training data)."""
    labels = sorted({r.label for r in training})
    if options.data_dir is not None and (options.data_dir / "banking77" / "test.csv").exists():
        records = banking77(
            options.data_dir / "banking77", labels=options.labels, per_label=40, seed=options.seed, split="test"
        )
        return [r for r in records if r.label in labels] or training
    return generated(labels=len(labels), per_label=30, seed=options.seed + 1000) or training


def _monitoring_window_size() -> int:
    from llmops_monitoring import MonitoringSettings

    return MonitoringSettings().window_size


def _reports(events: EventLog, model: str, version: int) -> list[MonitoringReportCreated]:
    return [
        e.data
        for e in events.events
        if isinstance(e.data, MonitoringReportCreated)
        and e.data.model_name == model
        and e.data.model_version == version
    ]


async def _next_report(
    events: EventLog, model: str, version: int, *, seen: int, timeout: float
) -> MonitoringReportCreated:
    async with asyncio.timeout(timeout):
        while len(reports := _reports(events, model, version)) <= seen:
            await asyncio.sleep(0.5)
    return reports[seen]


def _say_report(timeline: Timeline, report: MonitoringReportCreated) -> None:
    drifted_signals = sorted(k for k, v in report.drifted.items() if v)
    signals = ", ".join(f"{k} {v:.2f}" for k, v in sorted(report.signals.items()))
    verdict = f"drifted: {', '.join(drifted_signals)}" if drifted_signals else "no drift"
    timeline.say("monitoring", f"window of {report.window_size} on v{report.model_version}: {verdict} ({signals})")
    timeline.say("monitoring", f"report {report.html_uri}")


def _retraining_request(events: EventLog, model: str, *, since: int) -> Envelope[Any] | None:
    for envelope in events.events[since:]:
        data = envelope.data
        if (
            isinstance(data, TrainingRequested)
            and data.model_name == model
            and data.reason in (TrainingReason.DRIFT, TrainingReason.QUALITY)
        ):
            return envelope
    return None


def _flat(detection: MonitoringDriftDetected) -> list[tuple[str, Any]]:
    signals = detection.evidence.get("signals", {})
    if isinstance(signals, dict):
        return sorted((k, v) for k, v in signals.items() if k in detection.breached)
    return []


async def _follow_training(
    events: EventLog, request_id: str, timeline: Timeline, *, timeout: float
) -> TrainingCompleted | TrainingFailed:
    def show(envelope: Envelope[Any]) -> None:
        data = envelope.data
        if isinstance(data, TrainingStarted) and data.request_id == request_id:
            timeline.say("training", f"started version {data.model_version} on {data.dataset_id}")
        elif isinstance(data, TrainingProgressed) and data.request_id == request_id:
            timeline.say(
                "training",
                f"step {data.step}/{data.total_steps} loss {data.loss:.3f} "
                f"{data.examples_per_second:.0f} ex/s ETA {data.eta_seconds:.0f}s",
            )

    outcome = (
        await events.wait_for(
            lambda e: isinstance(e.data, TrainingCompleted | TrainingFailed) and e.data.request_id == request_id,
            timeout=timeout,
            on_event=show,
        )
    ).data
    if isinstance(outcome, TrainingCompleted):
        metrics = ", ".join(f"{k} {v:.3f}" for k, v in sorted(outcome.metrics.items()) if isinstance(v, float))
        timeline.say(
            "training", f"completed version {outcome.model_version} in {outcome.wall_time_seconds:.0f}s: {metrics}"
        )
    return outcome  # type: ignore[no-any-return]


def _describe_snapshot(events: EventLog, dataset_id: str) -> str:
    snapshot = next(
        (e.data for e in events.events if isinstance(e.data, DatasetSnapshotted) and e.data.dataset_id == dataset_id),
        None,
    )
    if snapshot is None:
        return f"retrained on {dataset_id} (cut before the demo started)"
    feedback = _feedback_rows(snapshot)
    new_intent = snapshot.label_counts.get(OUT_OF_SCOPE, 0)
    return f"retrained on snapshot {dataset_id}: {snapshot.row_count} rows, {feedback} from traffic feedback" + (
        f"; {new_intent} labelled {OUT_OF_SCOPE} (an intent the first version never saw)" if new_intent else ""
    )


def _feedback_rows(snapshot: DatasetSnapshotted) -> str:
    try:
        import pandas as pd

        frames = [
            pd.read_parquet(f"{snapshot.uri.rstrip('/')}/{split}.parquet", columns=["source"])
            for split in snapshot.split_counts
        ]
        return str(int(sum((frame["source"] == "feedback").sum() for frame in frames)))
    except Exception:
        return "an unknown number"


async def _evaluation_of(events: EventLog, model: str, version: int, timeline: Timeline) -> EvaluationCompleted:
    evaluation = (
        await events.wait_for(
            lambda e: (
                isinstance(e.data, EvaluationCompleted)
                and e.data.model_name == model
                and e.data.model_version == version
            ),
            timeout=900,
        )
    ).data
    quality = evaluation.candidate_metrics
    timeline.say(
        "evaluation",
        f"{evaluation.decision.value.upper()} version {version} (champion: {evaluation.champion_version or 'none'}): "
        f"accuracy {quality.get('accuracy', 0):.3f}, macro-F1 {quality.get('macro_f1', 0):.3f}",
    )
    for reason in evaluation.reasons:
        timeline.say("evaluation", f"  rule {reason.rule}: {reason.message}")
    timeline.say("evaluation", f"report {evaluation.report_uri}")
    return evaluation  # type: ignore[no-any-return]


async def _deployment_outcome(
    events: EventLog, model: str, version: int, timeline: Timeline, *, timeout: float
) -> DeploymentPromoted | DeploymentRolledBack | DeploymentCanaryStarted:
    """The first decisive deployment event for ``version`` (promoted, rolled back or canary started)."""

    def show(envelope: Envelope[Any]) -> None:
        data = envelope.data
        if isinstance(data, DeploymentRequested) and data.model_name == model and data.model_version == version:
            timeline.say("deployment", f"writing version {version} into Triton's repository, loading, smoke test")

    outcome = (
        await events.wait_for(
            lambda e: (
                isinstance(e.data, DeploymentPromoted | DeploymentRolledBack | DeploymentCanaryStarted)
                and e.data.model_name == model
                and e.data.model_version == version
            ),
            timeout=timeout,
            on_event=show,
        )
    ).data
    if isinstance(outcome, DeploymentPromoted):
        timeline.say("deployment", f"version {version} is the champion: {outcome.reason or 'promoted'}")
    elif isinstance(outcome, DeploymentRolledBack):
        timeline.say("deployment", f"version {version} rolled back: {outcome.reason}")
    else:
        timeline.say(
            "deployment",
            f"version {version} is a canary at {outcome.traffic_share:.0%} of traffic "
            f"(champion v{outcome.champion_version})",
        )
    return outcome  # type: ignore[no-any-return]


async def _canary(
    events: EventLog,
    client: GatewayClient,
    publisher: EventPublisher,
    options: DemoOptions,
    serving: list[DemoRecord],
    version: int,
    timeline: Timeline,
    rng: random.Random,
    *,
    timeout: float,
) -> DeploymentPromoted | DeploymentRolledBack:
    """Keep the client's traffic flowing while the canary is judged, until it is promoted or rolled back."""
    outcome: Any = await _deployment_outcome(events, options.model_name, version, timeline, timeout=timeout)
    deadline = time.monotonic() + timeout
    round_number = 0
    while isinstance(outcome, DeploymentCanaryStarted) and time.monotonic() < deadline:
        round_number += 1
        mixed = drifted([rng.choice(serving) for _ in range(200)], seed=options.seed + 100 + round_number)
        report = await send_traffic(
            client, publisher, mixed, model=options.model_name, feedback_share=0.0, seed=round_number
        )
        timeline.say("gateway", f"traffic during the canary: {report.describe()}")
        decided = [
            e.data
            for e in events.events
            if isinstance(e.data, DeploymentPromoted | DeploymentRolledBack)
            and e.data.model_name == options.model_name
            and e.data.model_version == version
        ]
        if decided:
            outcome = decided[0]
            verb = "promoted" if isinstance(outcome, DeploymentPromoted) else "rolled back"
            timeline.say("deployment", f"canary v{version} {verb}: {outcome.reason}")
    if isinstance(outcome, DeploymentCanaryStarted):
        raise TimeoutError
    return outcome  # type: ignore[no-any-return]


def _summary(
    timeline: Timeline,
    events: EventLog,
    evaluations: list[EvaluationCompleted],
    snapshot: DatasetSnapshotted,
    *,
    closed: bool,
    correlation: str | None = None,
) -> None:
    print("\nsummary")
    for evaluation in evaluations:
        quality = evaluation.candidate_metrics
        print(
            f"  {evaluation.model_name} v{evaluation.model_version}: {evaluation.decision.value}, "
            f"accuracy {quality.get('accuracy', 0):.3f}, macro-F1 {quality.get('macro_f1', 0):.3f}; "
            f"report {evaluation.report_uri}"
        )
    model = evaluations[0].model_name
    deployments = [
        e.data
        for e in events.events
        if isinstance(e.data, DeploymentPromoted | DeploymentRolledBack) and e.data.model_name == model
    ]
    if deployments:
        last = deployments[-1]
        serving = last.model_version if isinstance(last, DeploymentPromoted) else last.restored_version
        print(f"  serving now: {model} v{serving}")
    monitoring = [e.data for e in events.events if isinstance(e.data, MonitoringReportCreated)]
    if monitoring:
        print(f"  monitoring reports: {len(monitoring)}, latest {monitoring[-1].html_uri}")
    if correlation:
        chain = [e for e in events.events if e.correlationid == correlation]
        kinds = " -> ".join(dict.fromkeys(e.type.removeprefix("llmops.").removesuffix(".v1") for e in chain))
        print(f"  retraining chain (correlation {correlation}): {kinds}")
    print(f"  first dataset {snapshot.dataset_id} ({snapshot.row_count} rows), DLQ entries: {len(events.dead_letters)}")
    print("  stage durations: " + ", ".join(f"{k} {v:.0f}s" for k, v in timeline.stages.items()))
    print(f"  the loop {'closed' if closed else 'did NOT close'}")
    print("  the stack keeps running: `make status`, `make logs`, `make down`")
