"""Monitoring of generations: report time for a 1k-generation window, false alarms over 20
in-distribution windows, detection delay of a generative quality drop (issue 16; ``make bench``,
benchmark ``generation_monitoring``, which runs this script and reads its JSON).

The generations are **synthetic (recorded-style), no LLM runs**: what is measured is the
monitoring, not the model. The measurements need the service's insides, so they live here:

1. BANKING77 as an instructions snapshot (train CSV split 80/20 into train/validation, test CSV as
   test): a one-line system prompt, the customer's message, the intent name as the answer, the 77
   intent names declared as the output format (``output_format_json``). A causal LM version 1
   whose lineage names it is registered in a scratch artifact store; the service builds that
   version's generation reference as it does in production (2,000 training conversations, MiniLM
   embeddings of their prompts), untimed.
2. **In-distribution generations**: BANKING77 test messages answered with their intent name
   (90 %, about the fine-tuned adapter's measured exact match) or another intent name; finish
   reason ``stop``; time to first token and tokens/s drawn around 150 ms and 25 tokens/s; 10 % get
   a rating (5 when right; 2 and the right intent as a correction when wrong).
3. **The quality drop** (shifted stream): half the messages come from other domains (travel,
   health, tech support, food delivery) and are answered badly: a refusal, a free-text answer
   outside the format (some with an e-mail placeholder, some cut at ``max_tokens``) or a wrong
   intent; 30 % of those get a thumbs-down and half of them a correction.
4. **Report time**: ``MonitoringService.build_generation_report`` on a 1,000-generation
   in-distribution window, its prompts embedded beforehand with the encoder's cache emptied (the
   service embeds them in batches while the window fills; that time is its own row). One untimed
   300-generation report first imports Evidently and Presidio, as a running service has long done.
5. **False alarms**: 20 windows of ``LLMOPS_BENCH_GENERATION_WINDOW`` in-distribution generations
   and their feedback through the service's handlers under the shipped policy
   (``deploy/policies/drift.yaml``, section ``generation``); a false alarm is a training request.
6. **Detection delay**: 2 in-distribution windows, then shifted windows until the service requests
   retraining: the delay is the number of shifted windows reported up to the request.

The handlers publish through a recorder: the figures are the monitoring's own cost and behaviour;
the integration tests run the same code on the broker. Prints progress on stderr and one JSON
object on stdout (``SKIP: reason`` without BANKING77).

Environment:
  LLMOPS_SHARED_DATA                          folder holding ``banking77/{train,test}.csv``
                                              (default: ../shared/data relative to the repository root)
  LLMOPS_BENCH_GENERATION_WINDOW              generations per window (default 1,000)
  LLMOPS_BENCH_GENERATION_IN_DISTRIBUTION_WINDOWS   in-distribution windows for false alarms (default 20)
"""

from __future__ import annotations

import asyncio
import json
import os
import random
import shutil
import sys
import tempfile
import time
import uuid
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

REPO_ROOT = Path(__file__).resolve().parents[3]
WINDOW_ENV = "LLMOPS_BENCH_GENERATION_WINDOW"
WINDOWS_ENV = "LLMOPS_BENCH_GENERATION_IN_DISTRIBUTION_WINDOWS"
DEFAULT_WINDOW = 1000
DEFAULT_IN_DISTRIBUTION_WINDOWS = 20
MAX_SHIFTED_WINDOWS = 6
REPORT_SIZE = 1000
WARM_UP_GENERATIONS = 300
DATASET_ID = "banking77-instructions-bench"
SYSTEM_PROMPT = "Classify the customer's banking message. Answer with the intent name."
RIGHT_ANSWER_SHARE = 0.9
RATED_SHARE = 0.1
SHIFT_SHARE = 0.5
SHIFTED_THUMBS_DOWN_SHARE = 0.3
REFUSALS = (
    "I'm sorry, but I can't help with that.",
    "I am unable to assist with this request.",
    "As an AI assistant for banking, I cannot answer that.",
)
OFF_FORMAT = (
    "You can find that on our website.",
    "Please contact our support team at <EMAIL> for more information.",
    "That depends on many things, for example the time of day, the place and the weather, and "
    "also whether the service you are looking for is open, so it is hard to say exactly",
)


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


def instructions_frame(train: Any, test: Any) -> Any:
    """BANKING77 as conversations with the 77 intent names declared as the output format."""
    from llmops_workloads import snapshot_frame

    frame = snapshot_frame(train, test)
    intents = sorted(frame["label"].astype(str).unique())
    output_format = json.dumps({"labels": intents, "json_schema": None})
    frame["messages_json"] = [
        json.dumps(
            [
                {"role": "system", "content": SYSTEM_PROMPT},
                {"role": "user", "content": str(text)},
                {"role": "assistant", "content": str(label)},
            ]
        )
        for text, label in zip(frame["text"], frame["label"], strict=True)
    ]
    frame["output_format_json"] = output_format
    return frame


class Bench:
    """The monitoring service assembled in this process on a BANKING77 instructions snapshot."""

    def __init__(self, folder: Path, var_dir: Path, window: int) -> None:
        from llmops_config import PlatformSettings
        from llmops_messaging import ProcessedEvents
        from llmops_models.snapshots import write_snapshot
        from llmops_monitoring.adapters.encoder import MiniLMEncoder
        from llmops_monitoring.adapters.generation_reference import GenerationReferences
        from llmops_monitoring.adapters.metrics import MonitoringMetrics
        from llmops_monitoring.adapters.pii import RedactorPiiFinder
        from llmops_monitoring.adapters.policy_state import PolicyStateStore
        from llmops_monitoring.domain.policy import load_policy
        from llmops_monitoring.handlers import MonitoringService
        from llmops_monitoring.settings import MonitoringSettings
        from llmops_serving import ChampionTable
        from llmops_storage import ArtifactStore
        from llmops_workloads import banking77

        settings = MonitoringSettings(
            platform=PlatformSettings(var_dir=var_dir), window_size=window, window_seconds=None, metrics_port=0
        )
        self.store = ArtifactStore(settings.platform.resolved_artifact_store_uri)
        train, test = banking77(folder.parent)
        write_snapshot(self.store, instructions_frame(train, test), dataset_id=DATASET_ID, content="instructions")
        self.encoder = MiniLMEncoder()
        self.publisher = RecordingPublisher()
        self.policy = load_policy(REPO_ROOT / "deploy" / "policies" / "drift.yaml")
        processed = ProcessedEvents(settings.state_db, consumer="bench")
        self.service = MonitoringService(
            settings=settings,
            policy=self.policy,
            store=self.store,
            references=None,  # type: ignore[arg-type]  # no classifier window here
            encoder=self.encoder,
            publisher=self.publisher,  # type: ignore[arg-type]
            policy_state=PolicyStateStore(processed.connection),
            champions=ChampionTable(processed.connection),
            metrics=MonitoringMetrics(),
            generation_references=GenerationReferences(
                self.store,
                encoder=self.encoder,
                cache_dir=settings.reference_cache_dir,
                size=settings.reference_size,
                seed=settings.seed,
            ),
            find_pii=RedactorPiiFinder(),
        )
        self.test_rows: list[tuple[str, str]] = list(zip(test["text"], test["label"], strict=True))
        self.intents = sorted(set(train["label"].astype(str)))

    def new_model(self) -> str:
        """A model name of its own (own windows, own cooldown) whose version 1 was trained on the snapshot."""
        from llmops_models import manifest_path

        name = f"bench-{uuid.uuid4().hex[:6]}"
        self.store.write_json(manifest_path(name, 1), {"kind": "causal_lm", "lineage": {"dataset_id": DATASET_ID}})
        return name

    def generations(self, count: int, *, shifted: bool, seed: int) -> list[dict[str, Any]]:
        """Synthetic generation logs with their feedback (see the module docstring)."""
        from llmops_workloads import out_of_domain_texts

        rng = random.Random(seed)
        foreign = iter(out_of_domain_texts(count, seed=seed))
        items = []
        for _ in range(count):
            text, intent = self.test_rows[rng.randrange(len(self.test_rows))]
            finish, rating, correction = "stop", None, None
            if shifted and rng.random() < SHIFT_SHARE:
                text = next(foreign)
                roll = rng.random()
                if roll < 0.4:
                    answer = rng.choice(REFUSALS)
                elif roll < 0.7:
                    answer = rng.choice(OFF_FORMAT)
                    finish = "length" if answer == OFF_FORMAT[-1] else "stop"
                else:
                    answer = rng.choice(self.intents)
                if rng.random() < SHIFTED_THUMBS_DOWN_SHARE:
                    rating = 1
                    correction = "I can only help with banking questions." if rng.random() < 0.5 else None
            else:
                right = rng.random() < RIGHT_ANSWER_SHARE
                answer = intent if right else rng.choice([i for i in self.intents if i != intent])
                if rng.random() < RATED_SHARE:
                    rating = 5 if right else 2
                    correction = None if right else intent
            items.append(
                {
                    "prompt": text,
                    "output": answer,
                    "finish_reason": finish,
                    "ttft": max(20.0, rng.gauss(150.0, 30.0)),
                    "rate": max(2.0, rng.gauss(25.0, 4.0)),
                    "rating": rating,
                    "correction": correction,
                }
            )
        return items

    def observations(self, items: list[dict[str, Any]]) -> list[Any]:
        from llmops_monitoring.domain.generation import GenerationObservation

        now = datetime.now(UTC)
        return [
            GenerationObservation(
                request_id=uuid.uuid4().hex,
                prompt=item["prompt"],
                output=item["output"],
                finish_reason=item["finish_reason"],
                prompt_tokens=20,
                completion_tokens=8,
                time_to_first_token_ms=item["ttft"],
                tokens_per_s=item["rate"],
                served_at=now,
                rating=item["rating"],
                corrected_answer=item["correction"],
            )
            for item in items
        ]

    async def serve(self, model_name: str, items: list[dict[str, Any]]) -> None:
        """One ``inference.logged`` event per generation through the handler, its feedback right after."""
        from llmops_events import Envelope
        from llmops_events.v1 import ChatTurn, FeedbackSubmitted, Generation, InferenceLogged

        for item in items:
            request_id = uuid.uuid4().hex
            event = InferenceLogged(
                request_id=request_id,
                model_name=model_name,
                model_version=1,
                text=item["prompt"],
                label="",
                confidence=0.0,
                latency_ms=300.0,
                served_at=datetime.now(UTC),
                generation=Generation(
                    messages=[
                        ChatTurn(role="system", content=SYSTEM_PROMPT),
                        ChatTurn(role="user", content=item["prompt"]),
                    ],
                    output=item["output"],
                    finish_reason=item["finish_reason"],
                    prompt_tokens=20,
                    completion_tokens=8,
                    time_to_first_token_ms=item["ttft"],
                    tokens_per_s=item["rate"],
                ),
            )
            # Feedback first: it waits for its generation ("early"), so it is in the window even
            # when this generation closes it.
            if item["rating"] is not None or item["correction"] is not None:
                feedback = FeedbackSubmitted(
                    request_id=request_id, rating=item["rating"], corrected_answer=item["correction"]
                )
                await self.service.on_feedback(Envelope.wrap(feedback, source="/bench"))
            await self.service.on_inference(Envelope.wrap(event, source="/bench"))

    def requests(self, model_name: str) -> list[Any]:
        from llmops_events.v1 import TrainingRequested

        return [e for e in self.publisher.published if isinstance(e, TrainingRequested) and e.model_name == model_name]

    def reports(self, model_name: str) -> list[Any]:
        from llmops_events.v1 import MonitoringReportCreated

        return [
            e for e in self.publisher.published if isinstance(e, MonitoringReportCreated) and e.model_name == model_name
        ]


def report_time(bench: Bench) -> dict[str, Any]:
    from llmops_monitoring.domain.analysis import embedding_sample_rows, embedding_stride
    from llmops_monitoring.domain.windows import WindowKey

    model = bench.new_model()
    key = WindowKey(model, 1)
    settings = bench.service._settings
    log("building the generation reference and warming up (Evidently, Presidio), untimed")
    started = time.perf_counter()
    bench.service.build_generation_report(
        key, bench.observations(bench.generations(WARM_UP_GENERATIONS, shifted=False, seed=99)), act=False
    )
    log(f"  warm-up done in {time.perf_counter() - started:.1f}s")
    observations = bench.observations(bench.generations(REPORT_SIZE, shifted=False, seed=7))
    stride = embedding_stride(REPORT_SIZE, settings.embedding_sample_size)
    sample = [o.prompt for o in observations][embedding_sample_rows(REPORT_SIZE, settings.embedding_sample_size)]
    bench.encoder.clear_cache()
    started = time.perf_counter()
    for start in range(0, len(sample), settings.embedding_batch_size):
        bench.encoder.encode(sample[start : start + settings.embedding_batch_size])
    embed_seconds = time.perf_counter() - started
    started = time.perf_counter()
    report = bench.service.build_generation_report(key, observations, act=False, stride=stride)
    seconds = time.perf_counter() - started
    log(f"  1k-generation window: report {seconds:.2f}s (+ {embed_seconds:.2f}s embedding while it fills)")
    return {
        "report_1k_seconds": seconds,
        "embed_1k_seconds": embed_seconds,
        "report_1k_breakdown": report.summary["seconds"],
        "report_1k_signals": {name: item["score"] for name, item in report.summary["signals"].items()},
    }


async def false_alarms(bench: Bench, window: int, windows: int) -> dict[str, Any]:
    model = bench.new_model()
    log(f"false alarms: {windows} in-distribution windows of {window}")
    for index in range(windows):
        await bench.serve(model, bench.generations(window, shifted=False, seed=1000 + index))
        log(f"  window {index + 1}/{windows}: {len(bench.requests(model))} request(s) so far")
    reports = bench.reports(model)
    highest = {name: max(r.signals.get(name, 0.0) for r in reports) for name in reports[0].signals} if reports else {}
    return {
        "false_alarms": len(bench.requests(model)),
        "in_distribution_windows": len(reports),
        "in_distribution_max_signals": highest,
    }


async def detection_delay(bench: Bench, window: int) -> dict[str, Any]:
    model = bench.new_model()
    log("detection delay: 2 in-distribution windows, then the quality drop")
    for index in range(2):
        await bench.serve(model, bench.generations(window, shifted=False, seed=2000 + index))
    calm = len(bench.reports(model))
    for index in range(MAX_SHIFTED_WINDOWS):
        await bench.serve(model, bench.generations(window, shifted=True, seed=3000 + index))
        requests = bench.requests(model)
        log(f"  shifted window {index + 1}: {len(requests)} request(s)")
        if requests:
            shifted_reports = bench.reports(model)[calm:]
            return {
                "detected": True,
                "detection_delay_windows": len(shifted_reports),
                "detection_delay_generations": len(shifted_reports) * window,
                "detection_reason": requests[0].reason.value,
                "detection_task": requests[0].task.value,
                "detection_breached": requests[0].evidence.get("breached"),
                "shifted_first_signals": shifted_reports[0].signals,
            }
    return {"detected": False, "shifted_windows": MAX_SHIFTED_WINDOWS}


async def main_async(folder: Path) -> dict[str, Any]:
    window = int(os.environ.get(WINDOW_ENV, DEFAULT_WINDOW))
    windows = int(os.environ.get(WINDOWS_ENV, DEFAULT_IN_DISTRIBUTION_WINDOWS))
    var_dir = Path(tempfile.mkdtemp(prefix="bench-generation-monitoring-"))
    try:
        bench = Bench(folder, var_dir, window)
        summary: dict[str, Any] = {"window": window, "outputs": "synthetic (recorded-style), no LLM run"}
        summary.update(report_time(bench))
        summary.update(await false_alarms(bench, window, windows))
        summary.update(await detection_delay(bench, window))
        summary["policy_generation"] = bench.policy.generation.model_dump()
        return summary
    finally:
        shutil.rmtree(var_dir, ignore_errors=True)


def main() -> int:
    folder = data_dir()
    if not (folder / "train.csv").exists() or not (folder / "test.csv").exists():
        print(f"SKIP: BANKING77 not found at {folder} (set LLMOPS_SHARED_DATA to the folder holding banking77/)")
        return 0
    summary = asyncio.run(main_async(folder))
    print(json.dumps(summary, indent=2, default=str))
    return 0


if __name__ == "__main__":
    sys.exit(main())
