"""Monitoring: report time per window, detection delay of a 50% shift, false alarms in-distribution.

Method (issue 7, "Done when"):

1. A BANKING77 snapshot (train CSV split 80/20 into train/validation, test CSV as test) is written
   to a scratch artifact store; the served model is the stand-in classifier of
   ``llmops_workloads`` (TF-IDF nearest centroid, trained in a second), which also gives
   the reference's predictions. The reference is built as the service builds it (2,000 validation
   examples, MiniLM embeddings), untimed.
2. **Report time**: ``MonitoringService.build_report`` on one in-distribution window of 1,000 and
   one of 10,000 events (BANKING77 test texts drawn with replacement), as it runs when a window
   closes: Evidently descriptors and drift metrics, the classifier drift method on embeddings,
   quality, HTML+JSON. The window's embedding sample (1,000 texts: every event of the 1k window,
   every 10th of the 10k one) is embedded beforehand with the encoder's cache emptied, as the
   service embeds it in batches while the window fills; that time is its own (informational) row.
   One untimed 300-event report first imports Evidently, as a running service has long done.
3. **False alarms**: 20 windows of 1,000 in-distribution events through the service's inference
   handler, under the shipped policy (``deploy/policies/drift.yaml``); a false alarm is a
   training request.
4. **Detection delay**: 2 in-distribution windows, then traffic where half the texts come from
   other domains or are noised (``shifted_texts``), until the service requests retraining; the
   delay is the events served after the shift began until the request, in events and windows.

The service runs in-process with a publisher that records what it would publish: the figures
are the monitoring's own cost and behaviour; the integration tests run the same code on the broker.
Environment: ``LLMOPS_BENCH_MONITORING_WINDOW`` (events per window, default 1,000).
"""

from __future__ import annotations

import asyncio
import os
import time
import uuid
from datetime import UTC, datetime
from typing import Any

from bench.framework import BenchContext, Benchmark
from bench.results import BenchResult, Figure, Target

NAME = "monitoring"
WINDOW_ENV = "LLMOPS_BENCH_MONITORING_WINDOW"
DEFAULT_WINDOW = 1000
IN_DISTRIBUTION_WINDOWS = 20
MAX_SHIFTED_WINDOWS = 6

REPORT_1K = Figure(benchmark=NAME, name="report time, 1k-event window", unit="s")
EMBED_10K = Figure(benchmark=NAME, name="embedding a 10k-event window's sample while it fills (1,000 texts)", unit="s")
REPORT_10K = Figure(
    benchmark=NAME,
    name="report time, 10k-event window",
    unit="s",
    target=Target(comparison="<", threshold=10),
)
DELAY_WINDOWS = Figure(
    benchmark=NAME,
    name="detection delay of a 50% shift",
    unit="windows",
    target=Target(comparison="<=", threshold=2),
)
DELAY_EVENTS = Figure(benchmark=NAME, name="detection delay of a 50% shift (events)", unit="events")
FALSE_ALARMS = Figure(
    benchmark=NAME,
    name=f"false alarms over {IN_DISTRIBUTION_WINDOWS} in-distribution windows",
    unit="requests",
    target=Target(comparison="<=", threshold=0),
)
FIGURES = (REPORT_1K, REPORT_10K, EMBED_10K, DELAY_WINDOWS, DELAY_EVENTS, FALSE_ALARMS)


class RecordingPublisher:
    """Stands in for ``EventPublisher``: keeps what would be published."""

    source = "/llmops/monitoring-bench"

    def __init__(self) -> None:
        self.published: list[Any] = []

    async def publish(self, data: Any, **_: Any) -> Any:
        self.published.append(data)
        return data


def _service(context: BenchContext, window: int) -> tuple[Any, Any, Any, Any, Any]:
    from llmops_config import PlatformSettings
    from llmops_messaging import ProcessedEvents
    from llmops_monitoring import (
        ArtifactReferences,
        MiniLMEncoder,
        MonitoringMetrics,
        MonitoringService,
        MonitoringSettings,
        PolicyStateStore,
        load_policy,
    )
    from llmops_serving import ChampionTable
    from llmops_storage import ArtifactStore
    from llmops_workloads import StandInClassifier, banking77, snapshot_frame

    shared = context.require_shared("banking77/train.csv").parents[1]
    context.require_shared("banking77/test.csv")
    var_dir = context.scratch("monitoring-var")
    settings = MonitoringSettings(
        platform=PlatformSettings(var_dir=var_dir),
        window_size=window,
        window_seconds=None,
        metrics_port=0,
    )
    store = ArtifactStore(settings.platform.resolved_artifact_store_uri)
    train, test = banking77(shared)
    frame = snapshot_frame(train, test)
    from llmops_models.snapshots import write_snapshot

    write_snapshot(store, frame, dataset_id="banking77-bench")
    train_split = frame[frame["split"] == "train"]
    model = StandInClassifier(train_split["text"], train_split["label"])
    policy = load_policy(context.repo_root / "deploy" / "policies" / "drift.yaml")
    encoder = MiniLMEncoder()
    processed = ProcessedEvents(settings.state_db, consumer="bench")
    publisher = RecordingPublisher()
    service = MonitoringService(
        settings=settings,
        policy=policy,
        store=store,
        references=ArtifactReferences(
            store,
            encoder=encoder,
            cache_dir=settings.reference_cache_dir,
            size=settings.reference_size,
            seed=settings.seed,
            predictor_loader=lambda name, version: model,
        ),
        encoder=encoder,
        publisher=publisher,  # type: ignore[arg-type]
        policy_state=PolicyStateStore(processed.connection),
        champions=ChampionTable(processed.connection),
        metrics=MonitoringMetrics(),
    )
    service.test_texts = test["text"].tolist()  # type: ignore[attr-defined]
    return service, store, model, publisher, encoder


def _new_model(store: Any) -> str:
    from llmops_models import manifest_path

    name = f"bench-{uuid.uuid4().hex[:6]}"
    store.write_json(manifest_path(name, 1), {"lineage": {"dataset_id": "banking77-bench"}})
    return name


def _observations(model: Any, texts: list[str]) -> list[Any]:
    from llmops_monitoring import Observation

    labels, confidences = model.predict(texts)
    now = datetime.now(UTC)
    return [
        Observation(uuid.uuid4().hex, text, label, min(1.0, confidence), now)
        for text, label, confidence in zip(texts, labels, confidences, strict=True)
    ]


async def _serve(service: Any, model: Any, model_name: str, texts: list[str]) -> None:
    from llmops_events import Envelope
    from llmops_events.v1 import InferenceLogged

    labels, confidences = model.predict(texts)
    for text, label, confidence in zip(texts, labels, confidences, strict=True):
        event = InferenceLogged(
            request_id=uuid.uuid4().hex,
            model_name=model_name,
            model_version=1,
            text=text,
            label=label,
            confidence=min(1.0, confidence),
            latency_ms=1.0,
            served_at=datetime.now(UTC),
        )
        await service.on_inference(Envelope.wrap(event, source="/bench"))


def _requests(publisher: RecordingPublisher, model_name: str) -> int:
    from llmops_events.v1 import TrainingRequested

    return sum(isinstance(e, TrainingRequested) and e.model_name == model_name for e in publisher.published)


async def run(context: BenchContext) -> list[BenchResult]:
    from llmops_monitoring import WindowKey, embedding_sample_rows, embedding_stride
    from llmops_workloads import sample_texts, shifted_texts

    reporter = context.reporter
    window = int(os.environ.get(WINDOW_ENV, DEFAULT_WINDOW))
    reporter.status("BANKING77 snapshot, stand-in model, encoder")
    service, store, model, publisher, encoder = await asyncio.to_thread(_service, context, window)
    texts: list[str] = service.test_texts

    # Report time (the reference is built first, untimed, as it is once per model version).
    timing_model = _new_model(store)
    reporter.status("building the reference (2,000 validation texts: predictions + embeddings)")
    started = time.perf_counter()
    await asyncio.to_thread(service.reference, timing_model, 1)
    reporter.step(f"  reference built in {time.perf_counter() - started:.1f}s (untimed)")
    # The process's first report imports Evidently and warms its code paths (seconds, once).
    warm_up = _observations(model, sample_texts(texts, 300, seed=300))
    await asyncio.to_thread(service.build_report, WindowKey(timing_model, 1), warm_up, act=False)
    rows: list[BenchResult] = []
    sample_size = service.embedding_sample_size
    for size, figure in ((1000, REPORT_1K), (10_000, REPORT_10K)):
        observations = _observations(model, sample_texts(texts, size, seed=size))
        stride = embedding_stride(size, sample_size)
        encoder.clear_cache()
        # As in the service: the sample is embedded in batches while the window fills (timed apart).
        reporter.status(f"embedding the sample of a {size:,}-event window")
        started = time.perf_counter()
        sample = [o.text for o in observations[embedding_sample_rows(size, sample_size, stride=stride)]]
        await asyncio.to_thread(encoder.encode, sample)
        embed_seconds = time.perf_counter() - started
        reporter.status(f"report of a {size:,}-event window")
        started = time.perf_counter()
        report = await asyncio.to_thread(
            service.build_report, WindowKey(timing_model, 1), observations, act=False, stride=stride
        )
        seconds = time.perf_counter() - started
        reporter.step(
            f"  {size:,}-event window: report {seconds:.2f}s "
            f"({', '.join(f'{k} {v:.2f}s' for k, v in report.summary['seconds'].items())}); "
            f"its {len(sample):,}-text embedding sample took {embed_seconds:.1f}s while the window filled"
        )
        rows.append(figure.measured(seconds))
        if size == 10_000:
            rows.append(EMBED_10K.measured(embed_seconds))

    # False alarms over a long in-distribution replay.
    calm_model = _new_model(store)
    reports_before = len(publisher.published)
    for index in range(IN_DISTRIBUTION_WINDOWS):
        reporter.status(f"in-distribution window {index + 1}/{IN_DISTRIBUTION_WINDOWS}")
        await _serve(service, model, calm_model, sample_texts(texts, window, seed=1000 + index))
    calm_reports = [e for e in publisher.published[reports_before:] if getattr(e, "model_name", None) == calm_model]
    worst = max((r.signals.get("embedding", 0.0) for r in calm_reports if hasattr(r, "signals")), default=float("nan"))
    false_alarms = _requests(publisher, calm_model)
    reporter.step(
        f"  {IN_DISTRIBUTION_WINDOWS} in-distribution windows of {window:,}: {false_alarms} request(s); "
        f"largest embedding drift score {worst:.3f}"
    )
    rows.append(FALSE_ALARMS.measured(false_alarms))

    # Detection delay of a 50% shift.
    shift_model = _new_model(store)
    await _serve(service, model, shift_model, sample_texts(texts, 2 * window, seed=7))
    if _requests(publisher, shift_model):
        rows.append(DELAY_WINDOWS.unmeasured("a request came before the shift began (a false alarm)"))
        return rows
    served = 0
    for index in range(MAX_SHIFTED_WINDOWS):
        reporter.status(f"shifted window {index + 1}")
        shifted = shifted_texts(sample_texts(texts, window, seed=2000 + index), share=0.5, seed=index)
        for text in shifted:
            await _serve(service, model, shift_model, [text])
            served += 1
            if _requests(publisher, shift_model):
                break
        if _requests(publisher, shift_model):
            break
    if _requests(publisher, shift_model):
        reporter.step(f"  retraining requested {served:,} events ({served / window:g} windows) after the shift began")
        rows.append(DELAY_WINDOWS.measured(served / window))
        rows.append(DELAY_EVENTS.measured(served))
    else:
        reason = f"no request within {MAX_SHIFTED_WINDOWS} shifted windows"
        rows += [DELAY_WINDOWS.unmeasured(reason), DELAY_EVENTS.unmeasured(reason)]
    return rows


BENCHMARK = Benchmark(
    name=NAME,
    title="report time per window, detection delay of a 50% shift, false alarms in-distribution",
    figures=FIGURES,
    run=run,
    time_limit_s=1500,
)
