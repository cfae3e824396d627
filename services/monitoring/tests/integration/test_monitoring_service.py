"""The monitoring service on the real broker (in-process), fed BANKING77 traffic: in-distribution
windows request no retraining; a 50% shift requests exactly one within the cooldown, with the
evidence and the correlation id; feedback labels give quality figures; the HTML report opens;
a malformed event goes to the DLQ with its reason while the service carries on."""

from __future__ import annotations

import asyncio
import json
import uuid
from collections.abc import AsyncIterator
from datetime import UTC, datetime
from html.parser import HTMLParser
from pathlib import Path
from typing import Any

import pytest
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer

from llmops_config import PlatformSettings
from llmops_config.kafka import kafka_client_options
from llmops_events import Envelope, KafkaRecord, decode
from llmops_events.topics import INFERENCE, MONITORING, RECORDS_DLQ, TRAINING
from llmops_events.v1 import (
    FeedbackSubmitted,
    InferenceLogged,
    MonitoringDriftDetected,
    MonitoringReportCreated,
    TrainingReason,
    TrainingRequested,
)
from llmops_messaging import EventPublisher, create_broker
from llmops_models.snapshots import write_snapshot
from llmops_monitoring.adapters.encoder import MiniLMEncoder
from llmops_monitoring.domain.policy import DriftPolicy, load_policy
from llmops_monitoring.main import MonitoringRuntime, drift_report_by_hand
from llmops_monitoring.settings import MonitoringSettings
from llmops_storage import ArtifactStore
from llmops_workloads import (
    StandInClassifier,
    banking77,
    sample_texts,
    shifted_texts,
    snapshot_frame,
)

pytestmark = pytest.mark.integration

WINDOW = 250
REPO = Path(__file__).resolve().parents[4]


class World:
    """The monitoring service running in this process on a BANKING77 snapshot, a stand-in served
    model, and every event published on the monitoring, training and DLQ topics."""

    def __init__(self, platform: PlatformSettings, store: ArtifactStore, model: StandInClassifier) -> None:
        self.platform = platform
        self.store = store
        self.model = model
        self.dataset_id = f"banking77-{uuid.uuid4().hex[:6]}"
        self.events: list[Envelope[Any]] = []
        self.dlq: list[KafkaRecord] = []
        self.test_texts: list[str] = []
        self.test_labels: dict[str, str] = {}

    def new_model(self) -> str:
        """A model name of its own (own windows, own cooldown) whose version 1 was trained on the snapshot."""
        name = f"banking-{uuid.uuid4().hex[:6]}"
        self.store.write_json(f"models/{name}/1/manifest.json", {"lineage": {"dataset_id": self.dataset_id}})
        return name

    async def serve(self, model_name: str, texts: list[str]) -> list[str]:
        """Publish one inference event per text (the stand-in model's prediction); returns request ids."""
        labels, confidences = self.model.predict(texts)
        ids = []
        async with EventPublisher(self.platform, service="gateway-test") as publisher:
            for text, label, confidence in zip(texts, labels, confidences, strict=True):
                request_id = uuid.uuid4().hex
                ids.append(request_id)
                await publisher.publish(
                    InferenceLogged(
                        request_id=request_id,
                        model_name=model_name,
                        model_version=1,
                        text=text,
                        label=label,
                        confidence=min(1.0, confidence),
                        latency_ms=5.0,
                        served_at=datetime.now(UTC),
                    )
                )
        return ids

    async def read(self) -> None:
        consumer = AIOKafkaConsumer(
            MONITORING,
            TRAINING,
            RECORDS_DLQ,
            **kafka_client_options(self.platform, service="test").aiokafka(),
            auto_offset_reset="earliest",
            group_id=f"reader-{uuid.uuid4().hex}",
        )
        await consumer.start()
        try:
            while True:
                for records in (await consumer.getmany(timeout_ms=200)).values():
                    for m in records:
                        record = KafkaRecord(m.key, m.value or b"", tuple(m.headers or ()))
                        if m.topic == RECORDS_DLQ:
                            self.dlq.append(record)
                        else:
                            self.events.append(decode(record))
        finally:
            await consumer.stop()

    def of(self, model_name: str, kind: type) -> list[Envelope[Any]]:
        return [
            e for e in self.events if isinstance(e.data, kind) and getattr(e.data, "model_name", None) == model_name
        ]

    async def reports(self, model_name: str, count: int, timeout: float = 400) -> list[MonitoringReportCreated]:
        async with asyncio.timeout(timeout):
            while len(self.of(model_name, MonitoringReportCreated)) < count:
                await asyncio.sleep(0.5)
        await asyncio.sleep(1.0)  # the events published right after the last report
        return [e.data for e in self.of(model_name, MonitoringReportCreated)]


@pytest.fixture(scope="module")
async def world(
    kafka_settings: PlatformSettings, shared_data_dir: Path, tmp_path_factory: pytest.TempPathFactory
) -> AsyncIterator[World]:
    var_dir = tmp_path_factory.mktemp("monitoring")
    platform = kafka_settings.model_copy(update={"var_dir": var_dir, "artifact_store_uri": ""})
    store = ArtifactStore(platform.resolved_artifact_store_uri)
    train, test = banking77(shared_data_dir)
    frame = snapshot_frame(train, test)
    train_split = frame[frame["split"] == "train"]
    harness = World(platform, store, StandInClassifier(train_split["text"], train_split["label"]))
    write_snapshot(store, frame, dataset_id=harness.dataset_id)
    harness.test_texts = test["text"].tolist()
    harness.test_labels = dict(zip(test["text"], test["label"], strict=False))

    shipped = load_policy(REPO / "deploy" / "policies" / "drift.yaml")
    settings = MonitoringSettings(
        platform=platform,
        group_id=f"monitoring-{uuid.uuid4().hex[:6]}",
        metrics_port=0,
        window_size=WINDOW,
        window_seconds=None,
        reference_size=800,
        embedding_sample_size=WINDOW,
    )
    harness.encoder = MiniLMEncoder()  # type: ignore[attr-defined]
    runtime = MonitoringRuntime(
        settings,
        encoder=harness.encoder,  # type: ignore[attr-defined]
        predictor_loader=lambda name, version: harness.model,
        policy=shipped,
    )
    broker = create_broker(platform, service="monitoring-test")
    await runtime.open()
    runtime.attach(broker)
    await broker.start()
    reader = asyncio.get_running_loop().create_task(harness.read())
    harness.runtime = runtime  # type: ignore[attr-defined]
    try:
        yield harness
    finally:
        reader.cancel()
        await asyncio.gather(reader, return_exceptions=True)
        await broker.stop()
        await runtime.close()


async def test_in_distribution_traffic_requests_no_retraining(world: World) -> None:
    model = world.new_model()
    windows = 5
    await world.serve(model, sample_texts(world.test_texts, windows * WINDOW, seed=1))
    reports = await world.reports(model, windows)
    assert [r.window_size for r in reports] == [WINDOW] * windows
    assert world.of(model, TrainingRequested) == []
    assert world.of(model, MonitoringDriftDetected) == []
    for report in reports:
        summary = json.loads((Path(report.html_uri).parent / "summary.json").read_text())
        assert summary["decision"]["action"] == "none", summary["decision"]
        assert {"embedding", "prediction", "confidence", "length", "oov_share", "non_letter_share"} <= set(
            report.signals
        )
        assert report.signals["embedding"] < 0.62


async def test_a_shift_requests_exactly_one_retraining_with_the_evidence(world: World) -> None:
    model = world.new_model()
    calm = sample_texts(world.test_texts, 2 * WINDOW, seed=2)
    shifted = shifted_texts(sample_texts(world.test_texts, 4 * WINDOW, seed=3), share=0.5, seed=4)
    # The shift starts after the calm windows were reported: the inference topic has six
    # partitions, so events published together are not consumed in publishing order.
    await world.serve(model, calm)
    await world.reports(model, 2)
    await world.serve(model, shifted)
    reports = await world.reports(model, 6)
    actions = [
        json.loads((Path(r.html_uri).parent / "summary.json").read_text())["decision"]["action"] for r in reports
    ]
    # Two calm windows, then: the first shifted window is debounced, the second requests,
    # the next two fall in the cooldown.
    assert actions == ["none", "none", "debounce", "request", "cooldown", "cooldown"]

    [request] = world.of(model, TrainingRequested)
    [detection] = world.of(model, MonitoringDriftDetected)
    assert request.data.reason is TrainingReason.DRIFT
    assert request.data.requested_by == "monitoring"
    assert request.correlationid == detection.id
    evidence = request.data.evidence
    assert evidence["report_uri"] == reports[3].html_uri == detection.data.report_uri
    assert len(evidence["breached"]) >= 2
    assert set(evidence["breached"]) <= {"embedding", "confidence", "oov_share"}
    # The report alone explains the request: its summary holds scores, thresholds and the decision.
    summary = json.loads((Path(evidence["report_uri"]).parent / "summary.json").read_text())
    for signal in evidence["breached"]:
        item = summary["signals"][signal]
        assert item["breached"] and item["decides"] and item["score"] > item["threshold"]
    assert "retraining requested" in summary["decision"]["explanation"]
    page = Path(evidence["report_uri"]).read_text()
    assert "Decision: request" in page and "BREACH" in page


async def test_feedback_labels_give_quality_figures_and_the_html_opens(world: World) -> None:
    model = world.new_model()
    texts = sample_texts(world.test_texts, WINDOW, seed=5)
    # Labels for the first 100 requests: 40 sent before their inference events (the topics are not ordered).
    early_texts = texts[:40]
    ids = await world.serve(model, texts[40:])
    async with EventPublisher(world.platform, service="feedback-test") as publisher:
        early_ids = [uuid.uuid4().hex for _ in early_texts]
        for request_id, text in zip(early_ids, early_texts, strict=True):
            await publisher.publish(FeedbackSubmitted(request_id=request_id, true_label=world.test_labels[text]))
        for request_id, text in zip(ids[:60], texts[40:100], strict=True):
            await publisher.publish(FeedbackSubmitted(request_id=request_id, true_label=world.test_labels[text]))
    # The early-labelled requests are served last, so every label has arrived when the window fills.
    await asyncio.sleep(2)
    labels, confidences = world.model.predict(early_texts)
    async with EventPublisher(world.platform, service="gateway-test") as publisher:
        for request_id, text, label, confidence in zip(early_ids, early_texts, labels, confidences, strict=True):
            await publisher.publish(
                InferenceLogged(
                    request_id=request_id,
                    model_name=model,
                    model_version=1,
                    text=text,
                    label=label,
                    confidence=min(1.0, confidence),
                    latency_ms=5.0,
                    served_at=datetime.now(UTC),
                )
            )
    [report] = await world.reports(model, 1)
    summary = json.loads((Path(report.html_uri).parent / "summary.json").read_text())
    quality = summary["quality"]
    assert quality["labelled"] == 100
    assert 0.5 < quality["accuracy"] <= 1.0
    assert 0.5 < quality["reference_accuracy"] <= 1.0
    assert {"accuracy_drop", "f1_drop"} <= set(report.signals)
    assert summary["decision"]["action"] == "none"

    class Page(HTMLParser):
        def __init__(self) -> None:
            super().__init__()
            self.tags: set[str] = set()

        def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
            self.tags.add(tag)

    for name in ("report.html", "quality.html"):
        page = Page()
        page.feed((Path(report.html_uri).parent / name).read_text())
        assert {"html", "body", "script"} <= page.tags
    document = json.loads(Path(report.json_uri).read_text())
    assert document["summary"]["report_id"] == report.report_id
    assert document["drift"]["metrics"] and document["quality"]["metrics"]


async def test_malformed_event_goes_to_the_dlq_and_the_service_carries_on(world: World) -> None:
    model = world.new_model()
    producer = AIOKafkaProducer(**kafka_client_options(world.platform, service="test").aiokafka())
    await producer.start()
    try:
        await producer.send_and_wait(INFERENCE, key=b"bad", value=b"{not json")
    finally:
        await producer.stop()
    await world.serve(model, sample_texts(world.test_texts, WINDOW, seed=6))
    await world.reports(model, 1)
    async with asyncio.timeout(30):
        while not any(r.key == b"bad" for r in world.dlq):
            await asyncio.sleep(0.2)
    [dead] = [r for r in world.dlq if r.key == b"bad"]
    headers = dict(dead.headers)
    assert headers["error.stage"] == b"decode"
    assert headers["error.reason"]
    assert headers["error.topic"] == INFERENCE.encode()


async def test_drift_report_on_demand_from_the_latest_traffic(world: World) -> None:
    model = world.new_model()
    await world.serve(model, sample_texts(world.test_texts, 120, seed=7))
    runtime: MonitoringRuntime = world.runtime  # type: ignore[attr-defined]
    on_demand = MonitoringRuntime(
        runtime.settings.model_copy(update={"group_id": "drift-report"}),
        encoder=world.encoder,  # type: ignore[attr-defined]
        predictor_loader=lambda name, version: world.model,
        policy=DriftPolicy(),
    )
    [report] = await drift_report_by_hand(model, last=100, runtime=on_demand)
    assert report.summary["window"]["size"] == 100
    assert report.summary["on_demand"] is True
    assert report.decision.action.value == "insufficient"  # 100 < min_window_size: reported, not decided
    assert Path(report.html_uri).exists() and Path(report.json_uri).exists()
