"""Monitoring: report time per window, detection delay of a 50% shift, false alarms in-distribution
(issue 7; ``make bench``, benchmark ``monitoring``, which runs this script and reads its JSON).

The measurements need the service's insides, so they live here, with the service: the served
model is the stand-in classifier of ``llmops_workloads`` (TF-IDF nearest centroid, trained in a
second), which no model kind loads from the artifact store, so the service is assembled in this
process with that model injected as the reference's predictor, and the report time is the pure
analysis of a fixed window (no bus, no window filling in the clock).

1. A BANKING77 snapshot (train CSV split 80/20 into train/validation, test CSV as test) is written
   to a scratch artifact store. The reference is built as the service builds it (2,000 validation
   examples, MiniLM embeddings), untimed.
2. **Report time**: ``MonitoringService.build_report`` on one in-distribution window of 1,000 and
   one of 10,000 events (BANKING77 test texts drawn with replacement), as it runs when a window
   closes: Evidently descriptors and drift metrics, the classifier drift method on embeddings,
   quality, HTML+JSON. The window's embedding sample (1,000 texts: every event of the 1k window,
   every 10th of the 10k one) is embedded beforehand with the encoder's cache emptied, as the
   service embeds it in batches while the window fills; that time is its own (informational) row.
   One untimed 300-event report first imports Evidently, as a running service has long done.
3. **False alarms**: 20 windows of ``LLMOPS_BENCH_MONITORING_WINDOW`` in-distribution events through
   the service's inference handler, under the shipped policy (``deploy/policies/drift.yaml``); a
   false alarm is a training request.
4. **Detection delay**: 2 in-distribution windows, then traffic where half the texts come from
   other domains or are noised (``shifted_texts``), until the service requests retraining; the
   delay is the events served after the shift began until the request, in events and windows.

The handler publishes through a recorder (what it would publish is kept): the figures are the
monitoring's own cost and behaviour; the integration tests run the same code on the broker.

Prints progress on stderr and one JSON object on stdout (``SKIP: reason`` without BANKING77); a
figure that could not be measured is missing from it, with its reason under ``"unmeasured"``.

Environment:
  LLMOPS_SHARED_DATA               folder holding ``banking77/{train,test}.csv`` (default:
                                   ../shared/data relative to the repository root)
  LLMOPS_BENCH_MONITORING_WINDOW   events per window (default 1,000)
"""

from __future__ import annotations

import asyncio
import json
import os
import shutil
import sys
import tempfile
import time
import uuid
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

REPO_ROOT = Path(__file__).resolve().parents[3]
WINDOW_ENV = "LLMOPS_BENCH_MONITORING_WINDOW"
DEFAULT_WINDOW = 1000
IN_DISTRIBUTION_WINDOWS = 20
MAX_SHIFTED_WINDOWS = 6
REPORT_SIZES = (1000, 10_000)
WARM_UP_EVENTS = 300


def data_dir() -> Path:
    return Path(os.environ.get("LLMOPS_SHARED_DATA", REPO_ROOT / ".." / "shared" / "data")).resolve() / "banking77"


def log(message: str) -> None:
    print(message, file=sys.stderr, flush=True)


class RecordingPublisher:
    """Stands in for ``EventPublisher``: keeps what would be published."""

    source = "/llmops/monitoring-bench"

    def __init__(self) -> None:
        self.published: list[Any] = []

    async def publish(self, data: Any, **_: Any) -> Any:
        self.published.append(data)
        return data


class Bench:
    """The monitoring service assembled in this process on a BANKING77 snapshot and the stand-in model."""

    def __init__(self, folder: Path, var_dir: Path, window: int) -> None:
        from llmops_config import PlatformSettings
        from llmops_messaging import ProcessedEvents
        from llmops_models.snapshots import write_snapshot
        from llmops_monitoring.adapters.encoder import MiniLMEncoder
        from llmops_monitoring.adapters.metrics import MonitoringMetrics
        from llmops_monitoring.adapters.policy_state import PolicyStateStore
        from llmops_monitoring.adapters.reference import ArtifactReferences
        from llmops_monitoring.domain.policy import load_policy
        from llmops_monitoring.handlers import MonitoringService
        from llmops_monitoring.settings import MonitoringSettings
        from llmops_serving import ChampionTable
        from llmops_storage import ArtifactStore
        from llmops_workloads import StandInClassifier, banking77, snapshot_frame

        settings = MonitoringSettings(
            platform=PlatformSettings(var_dir=var_dir), window_size=window, window_seconds=None, metrics_port=0
        )
        self.store = ArtifactStore(settings.platform.resolved_artifact_store_uri)
        train, test = banking77(folder.parent)
        frame = snapshot_frame(train, test)
        write_snapshot(self.store, frame, dataset_id="banking77-bench")
        train_split = frame[frame["split"] == "train"]
        self.model = StandInClassifier(train_split["text"], train_split["label"])
        self.encoder = MiniLMEncoder()
        self.publisher = RecordingPublisher()
        processed = ProcessedEvents(settings.state_db, consumer="bench")
        self.service = MonitoringService(
            settings=settings,
            policy=load_policy(REPO_ROOT / "deploy" / "policies" / "drift.yaml"),
            store=self.store,
            references=ArtifactReferences(
                self.store,
                encoder=self.encoder,
                cache_dir=settings.reference_cache_dir,
                size=settings.reference_size,
                seed=settings.seed,
                predictor_loader=lambda name, version: self.model,
            ),
            encoder=self.encoder,
            publisher=self.publisher,  # type: ignore[arg-type]
            policy_state=PolicyStateStore(processed.connection),
            champions=ChampionTable(processed.connection),
            metrics=MonitoringMetrics(),
        )
        self.test_texts: list[str] = test["text"].tolist()

    def new_model(self) -> str:
        """A model name of its own (own windows, own cooldown) whose version 1 was trained on the snapshot."""
        from llmops_models import manifest_path

        name = f"bench-{uuid.uuid4().hex[:6]}"
        self.store.write_json(manifest_path(name, 1), {"lineage": {"dataset_id": "banking77-bench"}})
        return name

    def observations(self, texts: list[str]) -> list[Any]:
        from llmops_monitoring.domain.windows import Observation

        labels, confidences = self.model.predict(texts)
        now = datetime.now(UTC)
        return [
            Observation(uuid.uuid4().hex, text, label, min(1.0, confidence), now)
            for text, label, confidence in zip(texts, labels, confidences, strict=True)
        ]

    async def serve(self, model_name: str, texts: list[str]) -> None:
        """One ``inference.logged`` event per text (the stand-in's prediction) through the handler."""
        from llmops_events import Envelope
        from llmops_events.v1 import InferenceLogged

        labels, confidences = self.model.predict(texts)
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
            await self.service.on_inference(Envelope.wrap(event, source="/bench"))

    def requests(self, model_name: str) -> int:
        from llmops_events.v1 import TrainingRequested

        return sum(isinstance(e, TrainingRequested) and e.model_name == model_name for e in self.publisher.published)


def report_times(bench: Bench) -> dict[str, float]:
    """Report time of a 1k- and a 10k-event window, and the 10k window's embedding sample time."""
    from llmops_monitoring.domain.analysis import embedding_sample_rows, embedding_stride
    from llmops_monitoring.domain.windows import WindowKey
    from llmops_workloads import sample_texts

    service, texts = bench.service, bench.test_texts
    timing_model = bench.new_model()
    log("building the reference (2,000 validation texts: predictions + embeddings)")
    started = time.perf_counter()
    service.reference(timing_model, 1)
    log(f"reference built in {time.perf_counter() - started:.1f}s (untimed)")
    # The process's first report imports Evidently and warms its code paths (seconds, once).
    warm_up = bench.observations(sample_texts(texts, WARM_UP_EVENTS, seed=WARM_UP_EVENTS))
    service.build_report(WindowKey(timing_model, 1), warm_up, act=False)
    times: dict[str, float] = {}
    sample_size = service.embedding_sample_size
    for size in REPORT_SIZES:
        observations = bench.observations(sample_texts(texts, size, seed=size))
        stride = embedding_stride(size, sample_size)
        bench.encoder.clear_cache()
        # As in the service: the sample is embedded in batches while the window fills (timed apart).
        log(f"embedding the sample of a {size:,}-event window")
        started = time.perf_counter()
        sample = [o.text for o in observations[embedding_sample_rows(size, sample_size, stride=stride)]]
        bench.encoder.encode(sample)
        embed_seconds = time.perf_counter() - started
        log(f"report of a {size:,}-event window")
        started = time.perf_counter()
        report = service.build_report(WindowKey(timing_model, 1), observations, act=False, stride=stride)
        seconds = time.perf_counter() - started
        parts = ", ".join(f"{k} {v:.2f}s" for k, v in report.summary["seconds"].items())
        log(
            f"{size:,}-event window: report {seconds:.2f}s ({parts}); "
            f"its {len(sample):,}-text embedding sample took {embed_seconds:.1f}s while the window filled"
        )
        times[f"report_{size // 1000}k_seconds"] = round(seconds, 3)
        times[f"embed_{size // 1000}k_seconds"] = round(embed_seconds, 3)
        times[f"report_{size // 1000}k_parts"] = report.summary["seconds"]
    return times


async def behaviour(bench: Bench, window: int) -> dict[str, Any]:
    """False alarms over a long in-distribution replay, then the detection delay of a 50% shift."""
    from llmops_workloads import sample_texts, shifted_texts

    texts, publisher = bench.test_texts, bench.publisher
    found: dict[str, Any] = {"unmeasured": {}}

    calm_model = bench.new_model()
    before = len(publisher.published)
    for index in range(IN_DISTRIBUTION_WINDOWS):
        log(f"in-distribution window {index + 1}/{IN_DISTRIBUTION_WINDOWS}")
        await bench.serve(calm_model, sample_texts(texts, window, seed=1000 + index))
    calm = [e for e in publisher.published[before:] if getattr(e, "model_name", None) == calm_model]
    worst = max((r.signals.get("embedding", 0.0) for r in calm if hasattr(r, "signals")), default=None)
    found["false_alarms"] = bench.requests(calm_model)
    found["largest_in_distribution_embedding_score"] = worst
    log(
        f"{IN_DISTRIBUTION_WINDOWS} in-distribution windows of {window:,}: {found['false_alarms']} request(s); "
        f"largest embedding drift score {worst}"
    )

    shift_model = bench.new_model()
    await bench.serve(shift_model, sample_texts(texts, 2 * window, seed=7))
    if bench.requests(shift_model):
        reason = "a request came before the shift began (a false alarm)"
        found["unmeasured"].update(delay_windows=reason, delay_events=reason)
        return found
    served = 0
    for index in range(MAX_SHIFTED_WINDOWS):
        log(f"shifted window {index + 1}")
        shifted = shifted_texts(sample_texts(texts, window, seed=2000 + index), share=0.5, seed=index)
        for text in shifted:
            await bench.serve(shift_model, [text])
            served += 1
            if bench.requests(shift_model):
                break
        if bench.requests(shift_model):
            break
    if bench.requests(shift_model):
        log(f"retraining requested {served:,} events ({served / window:g} windows) after the shift began")
        found["delay_windows"] = served / window
        found["delay_events"] = served
    else:
        reason = f"no request within {MAX_SHIFTED_WINDOWS} shifted windows"
        found["unmeasured"].update(delay_windows=reason, delay_events=reason)
    return found


def run() -> dict[str, Any] | None:
    folder = data_dir()
    if not (folder / "train.csv").exists() or not (folder / "test.csv").exists():
        print(f"SKIP: BANKING77 not found at {folder} (set LLMOPS_SHARED_DATA to the folder holding banking77/)")
        return None
    window = int(os.environ.get(WINDOW_ENV, DEFAULT_WINDOW))
    var_dir = Path(tempfile.mkdtemp(prefix="llmops-bench-monitoring-"))
    try:
        log("BANKING77 snapshot, stand-in model, encoder")
        bench = Bench(folder, var_dir, window)
        summary: dict[str, Any] = {"window": window, "in_distribution_windows": IN_DISTRIBUTION_WINDOWS}
        summary.update(report_times(bench))
        summary.update(asyncio.run(behaviour(bench, window)))
    finally:
        shutil.rmtree(var_dir, ignore_errors=True)
    print(json.dumps(summary, indent=2))
    return summary


if __name__ == "__main__":
    run()
