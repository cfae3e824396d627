"""Monitoring of generations on the real broker (in-process service, real MiniLM encoder, real
Evidently, real PII detectors), fed generation logs of a causal LM version trained on BANKING77
conversations: an in-distribution window requests nothing; each signal family crossing its
thresholds (prompt drift, output quality, timings, feedback) publishes ``drift_detected`` and a
``training.requested`` for the causal-lm task with the reason and the correlation id; the report
(HTML + JSON) shows the generation signals.

One broker and one service for the module, tiny windows (``WINDOW`` generations), and a model
name per test (its own windows, reference and cooldown)."""

from __future__ import annotations

import asyncio
import json
import uuid
from collections.abc import AsyncIterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pandas as pd
import pytest
from aiokafka import AIOKafkaConsumer

from llmops_config import PlatformSettings
from llmops_config.kafka import kafka_client_options
from llmops_events import Envelope, KafkaRecord, decode
from llmops_events.topics import MONITORING, TRAINING
from llmops_events.v1 import (
    ChatTurn,
    FeedbackSubmitted,
    Generation,
    InferenceLogged,
    MonitoringDriftDetected,
    MonitoringReportCreated,
    TrainingReason,
    TrainingRequested,
    TrainingTask,
)
from llmops_messaging import EventPublisher, create_broker
from llmops_models import manifest_path
from llmops_models.snapshots import write_snapshot
from llmops_monitoring.adapters.encoder import MiniLMEncoder
from llmops_monitoring.adapters.pii import RedactorPiiFinder
from llmops_monitoring.domain.policy import DriftPolicy
from llmops_monitoring.main import MonitoringRuntime, drift_report_by_hand
from llmops_monitoring.settings import MonitoringSettings
from llmops_privacy import Redactor
from llmops_storage import ArtifactStore
from llmops_workloads import banking77, out_of_domain_texts, sample_texts, snapshot_frame

pytestmark = pytest.mark.integration

WINDOW = 60
SYSTEM = "Classify the customer's banking message. Answer with the intent name."
# Tiny windows decide at once (no debounce); the thresholds are the shipped ones but for the
# embedding signal, which a 60-prompt window estimates with more noise than a 1,000 one.
POLICY = DriftPolicy.model_validate(
    {
        "consecutive_windows": 1,
        "cooldown_minutes": 360,
        "max_retrains_per_day": 10,
        "generation": {
            "min_window_size": WINDOW,
            "min_feedback": 20,
            "drift_thresholds": {
                "prompt_embedding": 0.75,
                "prompt_length": 0.25,
                "prompt_oov_share": 0.5,
                "output_length": 0.5,
            },
            # The shipped policy reports the timings only; a policy may give them thresholds.
            "output_thresholds": {
                "refusal_share": 0.1,
                "format_invalid_share": 0.2,
                "pii_share": 0.02,
                "length_finish_share": 0.2,
                "ttft_p95_ms": 5000,
                "ms_per_token": 250,
            },
        },
    }
)


class World:
    """The service on a BANKING77 instructions snapshot, and what it published on the monitoring
    and training topics."""

    def __init__(self, platform: PlatformSettings, store: ArtifactStore) -> None:
        self.platform = platform
        self.store = store
        self.dataset_id = f"instructions-{uuid.uuid4().hex[:6]}"
        self.events: list[Envelope[Any]] = []
        self.test_rows: list[tuple[str, str]] = []
        self.runtime: MonitoringRuntime | None = None
        self.encoder: MiniLMEncoder | None = None
        self.find_pii: RedactorPiiFinder | None = None

    def new_model(self) -> str:
        """A causal LM name of its own whose adapter version 1 was trained on the snapshot."""
        name = f"assistant-{uuid.uuid4().hex[:6]}"
        self.store.write_json(manifest_path(name, 1), {"kind": "causal_lm", "lineage": {"dataset_id": self.dataset_id}})
        return name

    async def generate(self, model: str, items: list[dict[str, Any]]) -> list[str]:
        """One generation log per item (prompt, output; optional finish reason and timings)."""
        ids = []
        async with EventPublisher(self.platform, service="gateway-test") as publisher:
            for item in items:
                request_id = item.get("request_id") or uuid.uuid4().hex
                ids.append(request_id)
                await publisher.publish(
                    InferenceLogged(
                        request_id=request_id,
                        model_name=model,
                        model_version=1,
                        text=item["prompt"],
                        label="",
                        confidence=0.0,
                        latency_ms=200.0,
                        served_at=datetime.now(UTC),
                        generation=Generation(
                            messages=[
                                ChatTurn(role="system", content=SYSTEM),
                                ChatTurn(role="user", content=item["prompt"]),
                            ],
                            output=item["output"],
                            finish_reason=item.get("finish_reason", "stop"),
                            prompt_tokens=30,
                            completion_tokens=6,
                            time_to_first_token_ms=item.get("ttft", 120.0),
                            tokens_per_s=item.get("rate", 30.0),
                        ),
                    )
                )
        return ids

    def calm(self, count: int, seed: int) -> list[dict[str, Any]]:
        """BANKING77 test messages answered with their intent name."""
        rows = sample_texts(self.test_rows, count, seed=seed)  # type: ignore[arg-type]
        return [{"prompt": text, "output": intent} for text, intent in rows]

    async def read(self) -> None:
        consumer = AIOKafkaConsumer(
            MONITORING,
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
                        self.events.append(decode(KafkaRecord(m.key, m.value or b"", tuple(m.headers or ()))))
        finally:
            await consumer.stop()

    def of(self, model: str, kind: type) -> list[Envelope[Any]]:
        return [e for e in self.events if isinstance(e.data, kind) and getattr(e.data, "model_name", None) == model]

    async def reports(self, model: str, count: int, timeout: float = 300) -> list[MonitoringReportCreated]:
        async with asyncio.timeout(timeout):
            while len(self.of(model, MonitoringReportCreated)) < count:
                await asyncio.sleep(0.5)
        await asyncio.sleep(1.0)  # the events published right after the last report
        return [e.data for e in self.of(model, MonitoringReportCreated)]

    async def requested(self, model: str, timeout: float = 60) -> tuple[Envelope[Any], Envelope[Any]]:
        """The one drift detection and training request of ``model``, checked to be correlated."""
        async with asyncio.timeout(timeout):
            while not (self.of(model, TrainingRequested) and self.of(model, MonitoringDriftDetected)):
                await asyncio.sleep(0.2)
        [request] = self.of(model, TrainingRequested)
        [detection] = self.of(model, MonitoringDriftDetected)
        assert request.correlationid == detection.id
        assert request.data.task is TrainingTask.CAUSAL_LM
        assert request.data.requested_by == "monitoring"
        assert request.data.evidence["window_kind"] == "generation"
        assert request.data.evidence["report_uri"] == detection.data.report_uri
        return detection, request


def summary_of(report: MonitoringReportCreated) -> dict[str, Any]:
    return dict(json.loads((Path(report.html_uri).parent / "summary.json").read_text()))


@pytest.fixture(scope="module")
async def world(
    kafka_settings: PlatformSettings,
    shared_data_dir: Path,
    redactor: Redactor,
    tmp_path_factory: pytest.TempPathFactory,
) -> AsyncIterator[World]:
    var_dir = tmp_path_factory.mktemp("monitoring-generations")
    platform = kafka_settings.model_copy(update={"var_dir": var_dir, "artifact_store_uri": ""})
    store = ArtifactStore(platform.resolved_artifact_store_uri)
    harness = World(platform, store)
    train, test = banking77(shared_data_dir)
    frame = snapshot_frame(train, test)
    intents = sorted(frame["label"].astype(str).unique())
    frame["messages_json"] = [
        json.dumps(
            [
                {"role": "system", "content": SYSTEM},
                {"role": "user", "content": str(text)},
                {"role": "assistant", "content": str(label)},
            ]
        )
        for text, label in zip(frame["text"], frame["label"], strict=True)
    ]
    frame["output_format_json"] = json.dumps({"labels": intents, "json_schema": None})
    write_snapshot(store, pd.DataFrame(frame), dataset_id=harness.dataset_id, content="instructions")
    harness.test_rows = list(zip(test["text"], test["label"], strict=True))

    settings = MonitoringSettings(
        platform=platform,
        group_id=f"monitoring-{uuid.uuid4().hex[:6]}",
        metrics_port=0,
        window_size=WINDOW,
        window_seconds=None,
        reference_size=300,
        embedding_sample_size=WINDOW,
    )
    harness.encoder, harness.find_pii = MiniLMEncoder(), RedactorPiiFinder(redactor)
    runtime = harness.runtime = MonitoringRuntime(
        settings, encoder=harness.encoder, policy=POLICY, find_pii=harness.find_pii
    )
    broker = create_broker(platform, service="monitoring-generations-test")
    await runtime.open()
    runtime.attach(broker)
    await broker.start()
    reader = asyncio.get_running_loop().create_task(harness.read())
    try:
        yield harness
    finally:
        reader.cancel()
        await asyncio.gather(reader, return_exceptions=True)
        await broker.stop()
        await runtime.close()


async def test_an_in_distribution_window_requests_nothing(world: World) -> None:
    model = world.new_model()
    await world.generate(model, world.calm(WINDOW, seed=1))
    [report] = await world.reports(model, 1)
    summary = summary_of(report)
    assert summary["kind"] == "generation"
    assert summary["decision"]["action"] == "none", summary["decision"]
    assert summary["reference"]["output_format"]["labels"]  # the snapshot declares the 77 intents
    assert report.signals["refusal_share"] == 0.0 and report.signals["format_invalid_share"] == 0.0
    assert world.of(model, TrainingRequested) == []


async def test_prompt_drift_requests_retraining(world: World) -> None:
    model = world.new_model()
    # Other domains' requests, answered in format: only the prompts moved.
    prompts = out_of_domain_texts(WINDOW, seed=2)
    answers = [item["output"] for item in world.calm(WINDOW, seed=3)]
    await world.generate(model, [{"prompt": p, "output": a} for p, a in zip(prompts, answers, strict=True)])
    detection, request = await world.requested(model)
    assert request.data.reason is TrainingReason.DRIFT
    assert set(detection.data.breached) == {"prompt_embedding", "prompt_oov_share"}
    assert detection.data.kind == "drift"


async def test_output_quality_requests_retraining_and_the_report_shows_it(world: World) -> None:
    model = world.new_model()
    items = world.calm(WINDOW, seed=4)
    for index, item in enumerate(items):
        if index % 4 == 0:
            item["output"] = "I'm sorry, but I can't help with that."
        elif index % 4 == 1:
            # PII the gateway missed (the detectors find it) and a rambling answer cut at max_tokens.
            item["output"] = "Write to jane.doe@example.com and we will see what can be done about"
            item["finish_reason"] = "length"
    await world.generate(model, items)
    detection, request = await world.requested(model)
    assert request.data.reason is TrainingReason.QUALITY
    assert {"refusal_share", "format_invalid_share", "pii_share", "length_finish_share"} <= set(detection.data.breached)
    signals = request.data.evidence["signals"]
    assert signals["refusal_share"] == pytest.approx(0.25) and signals["pii_share"] == pytest.approx(0.25)
    assert signals["format_invalid_share"] == pytest.approx(0.5)
    summary = json.loads((Path(detection.data.report_uri).parent / "summary.json").read_text())
    assert summary["signals"]["refusal_share"]["breached"] and summary["signals"]["refusal_share"]["decides"]
    page = Path(detection.data.report_uri).read_text()
    assert "refusal_share" in page and "BREACH" in page and "(generation)" in page
    document = json.loads(Path(request.data.evidence["report_json_uri"]).read_text())
    names = [metric["metric_name"] for metric in document["drift"]["metrics"]]
    assert any(name.startswith("ValueDrift(column=prompt_length") for name in names)
    assert any(name.startswith("MeanValue(column=refusal") for name in names)


async def test_slow_generation_breaches_the_latency_thresholds_a_policy_sets(world: World) -> None:
    model = world.new_model()
    items = [{**item, "ttft": 9000.0, "rate": 2.0} for item in world.calm(WINDOW, seed=5)]
    await world.generate(model, items)
    detection, request = await world.requested(model)
    assert request.data.reason is TrainingReason.QUALITY
    assert set(detection.data.breached) == {"ttft_p95_ms", "ms_per_token"}


async def test_feedback_requests_retraining(world: World) -> None:
    model = world.new_model()
    items = world.calm(WINDOW, seed=6)
    for item in items:
        item["request_id"] = uuid.uuid4().hex
    # The feedback is published first (the topics are not ordered): it waits for its generation.
    async with EventPublisher(world.platform, service="feedback-test") as publisher:
        for index, item in enumerate(items[:30]):
            corrected = "Block the card in the app, then order a new one." if index % 2 == 0 else None
            await publisher.publish(
                FeedbackSubmitted(request_id=item["request_id"], rating=1, corrected_answer=corrected)
            )
    await asyncio.sleep(2)
    await world.generate(model, items)
    detection, request = await world.requested(model)
    assert request.data.reason is TrainingReason.QUALITY
    assert set(detection.data.breached) == {"thumbs_down_share", "corrected_share", "correction_mismatch_share"}
    summary = json.loads((Path(detection.data.report_uri).parent / "summary.json").read_text())
    assert summary["window"]["labelled"] == 30
    assert summary["quality"]["corrected"] == 15 and summary["quality"]["corrected_exact_match"] == 0.0


async def test_drift_report_on_demand_of_a_causal_lm(world: World) -> None:
    model = world.new_model()
    await world.generate(model, world.calm(30, seed=7))
    assert world.runtime is not None
    on_demand = MonitoringRuntime(
        world.runtime.settings.model_copy(update={"group_id": "drift-report"}),
        encoder=world.encoder,
        policy=POLICY,
        find_pii=world.find_pii,
    )
    [report] = await drift_report_by_hand(model, last=25, runtime=on_demand)
    assert report.summary["kind"] == "generation" and report.summary["window"]["size"] == 25
    assert report.summary["on_demand"] is True
    assert report.decision.action.value == "insufficient"  # 25 < min_window_size: reported, not decided
    assert "refusal_share" in report.summary["signals"]
    assert Path(report.html_uri).exists() and Path(report.json_uri).exists()
