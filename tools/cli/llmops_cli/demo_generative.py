"""``make demo`` (generative part; ``make demo KIND=generative`` alone): the closed loop for a causal
LM, as a readable timeline.

The demo plays the enterprise producer and a client application of a bank's support assistant:

1. it publishes instruction examples (a system prompt, the customer's message, the intent name as
   the assistant's answer) for the intents the assistant knows; ingestion cuts an instructions
   snapshot; it asks for a LoRA adapter of the causal LM (task ``causal-lm``);
2. evaluation gates the adapter on generated answers, deployment puts it live on the one base model
   in Triton; the client streams answers through the gateway (``GenerateStream``) and rates a share
   of them through ``SubmitFeedback``: thumbs up when right, thumbs down with the corrected answer
   when wrong;
3. the traffic shifts: customers ask about intents the assistant never learned, it answers them
   wrongly, users correct it; monitoring sees thumbs-down and corrections rise and asks for
   retraining; ingestion turns the corrections into instruction examples and preference pairs;
   fine-tuning runs SFT and DPO on the fresh snapshot; evaluation, canary, promotion follow;
4. the same shifted prompts are asked again, so a person sees what the model answered before and
   after it learned from its users.

Like the classifier demo it talks to Kafka and the gateway like any client and reads only published
artifacts (snapshot manifests), never the services' internals.
"""

from __future__ import annotations

import json
import random
import time
import uuid
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from llmops_cli.demo import (
    EventLog,
    Timeline,
    _deployment_outcome,
    _follow_training,
    _next_report,
    _reports,
    _retraining_request,
)
from llmops_cli.demo_data import DemoRecord, banking77, generated
from llmops_cli.demo_traffic import GatewayClient, GenerationTraffic, generate_traffic
from llmops_config import PlatformSettings
from llmops_events import Envelope
from llmops_events.v1 import (
    ChatTurn,
    DatasetContent,
    DatasetSnapshotted,
    Decision,
    DeploymentCanaryStarted,
    DeploymentPromoted,
    DeploymentRolledBack,
    EvaluationCompleted,
    Hyperparameters,
    InstructionSubmitted,
    MonitoringDriftDetected,
    MonitoringReportCreated,
    TrainingFailed,
    TrainingReason,
    TrainingRequested,
    TrainingStarted,
    TrainingTask,
)
from llmops_messaging import EventPublisher

SYSTEM_PROMPT = "You are a bank's support assistant. Answer with the intent of the customer's message."
MAX_TOKENS = 16  # the longest intent name is 12 tokens
SHOWN_PROMPTS = 4  # prompts whose answers before and after retraining the timeline prints


@dataclass
class GenerativeDemoOptions:
    model_name: str = "banking-assistant"
    known_intents: int = 10
    """Intents of the first training data (BANKING77; the built-in generator has 4)."""
    new_intents: int = 2
    """Intents that only arrive with the shifted traffic: the model answers them wrongly until users correct it."""
    epochs: float = 1.0
    seed: int = 7
    data_dir: Path | None = None
    timeout_s: float = 1500.0
    max_shift_windows: int = 4
    shift_share: float = 0.5
    """Share of the shifted traffic that asks about the new intents."""
    feedback_share: float = 0.5
    """Share of the answers the client rates (a correction with every thumbs-down)."""


@dataclass
class DemoData:
    training: list[DemoRecord]
    serving: list[DemoRecord]
    new: list[DemoRecord]
    origin: str
    known_labels: list[str] = field(default_factory=list)


def conversation(text: str, answer: str | None = None) -> list[ChatTurn]:
    turns = [ChatTurn(role="system", content=SYSTEM_PROMPT), ChatTurn(role="user", content=text)]
    return turns + ([ChatTurn(role="assistant", content=answer)] if answer is not None else [])


def _instruction_threshold() -> int:
    from llmops_ingestion import IngestionSettings

    return IngestionSettings().snapshot_every_n_instructions


def _window_size() -> int:
    from llmops_monitoring import MonitoringSettings

    return MonitoringSettings().window_size


def demo_data(options: GenerativeDemoOptions) -> DemoData:
    """Training examples of the known intents (enough for ingestion's snapshot policy), serving
    prompts of the known intents, and prompts of the new intents; BANKING77 when present."""
    needed = max(1, int(_instruction_threshold() * 1.2))
    folder = options.data_dir / "banking77" if options.data_dir is not None else None
    if folder is not None and (folder / "train.csv").exists() and (folder / "test.csv").exists():
        intents = options.known_intents + options.new_intents
        train = banking77(folder, labels=intents, per_label=10_000, seed=options.seed)
        test = banking77(folder, labels=intents, per_label=10_000, seed=options.seed, split="test")
        labels = sorted({r.label for r in train})
        rng = random.Random(options.seed)
        new_labels = set(rng.sample(labels, options.new_intents))
        known = [r for r in train if r.label not in new_labels]
        # Repeating examples would not help: ingestion drops duplicates before counting them.
        training = known
        origin = f"BANKING77 ({folder})"
        return DemoData(
            training=training,
            serving=[r for r in test if r.label not in new_labels],
            new=[r for r in train + test if r.label in new_labels],
            origin=origin,
            known_labels=sorted(set(labels) - new_labels),
        )
    # The built-in generator has six intents: four known, two new.
    per_label = -(-needed // 4)
    records = generated(labels=6, per_label=per_label + 60, seed=options.seed)
    labels = sorted({r.label for r in records})
    new_labels = set(labels[-2:])
    by_label: dict[str, list[DemoRecord]] = {}
    for record in records:
        by_label.setdefault(record.label, []).append(record)
    training = [r for label in labels if label not in new_labels for r in by_label[label][:per_label]]
    serving = [r for label in labels if label not in new_labels for r in by_label[label][per_label:]]
    random.Random(options.seed).shuffle(training)
    return DemoData(
        training=training,
        serving=serving,
        new=[r for label in new_labels for r in by_label[label]],
        origin="the built-in generator (BANKING77 not found; set LLMOPS_SHARED_DATA)",
        known_labels=sorted(set(labels) - new_labels),
    )


async def run_generative_demo(
    settings: PlatformSettings, options: GenerativeDemoOptions, *, events: EventLog | None = None
) -> int:
    """Run the generative lifecycle; returns the process exit code (0 only when the loop closed)."""
    timeline = Timeline()
    run_id = uuid.uuid4().hex[:8]
    tenant = f"demo-gen-{run_id}"
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
    settings: PlatformSettings,
    options: GenerativeDemoOptions,
    timeline: Timeline,
    events: EventLog,
    run_id: str,
    tenant: str,
) -> int:
    model = options.model_name
    data = demo_data(options)
    correlation = f"demo-gen-{run_id}"

    # 1. The producer publishes instruction examples of the intents the assistant should know.
    async with EventPublisher(settings, service="demo") as publisher:
        for i, record in enumerate(data.training):
            await publisher.publish(
                InstructionSubmitted(
                    tenant=tenant,
                    source="support-playbook",
                    record_id=f"{run_id}-{i}",
                    messages=conversation(record.text, record.label),
                    metadata={"demo_run": run_id},
                ),
                correlationid=correlation,
            )
    timeline.say(
        "producer",
        f"published {len(data.training)} instruction examples from {data.origin}: "
        f"{len(data.known_labels)} intents; {len({r.label for r in data.new})} more intents arrive later",
    )
    timeline.end_stage("produce")

    snapshot = (
        await events.wait_for(
            lambda e: isinstance(e.data, DatasetSnapshotted) and e.data.content == DatasetContent.INSTRUCTIONS,
            timeout=300,
        )
    ).data
    timeline.say("ingestion", f"instructions snapshot {snapshot.dataset_id}: {snapshot.row_count} conversations")
    timeline.end_stage("ingest")

    # 2. The first adapter.
    request = Envelope.wrap(
        TrainingRequested(
            model_name=model,
            dataset_id=snapshot.dataset_id,
            task=TrainingTask.CAUSAL_LM,
            reason=TrainingReason.NEW_DATA,
            requested_by="demo",
            hyperparameters=Hyperparameters(epochs=options.epochs, seed=options.seed),
        ),
        source="/llmops/demo",
        correlationid=correlation,
    )
    async with EventPublisher(settings, service="demo") as publisher:
        await publisher.publish(request)
    timeline.say("training", f"requested a LoRA adapter of the causal LM for {model} on {snapshot.dataset_id}")
    first_training = await _follow_training(events, request.id, timeline, timeout=options.timeout_s)
    if isinstance(first_training, TrainingFailed):
        timeline.say("training", f"[FAILED] {first_training.reason}: {first_training.detail}")
        return 1
    timeline.end_stage("train")
    evaluation = await _generative_evaluation(events, model, first_training.model_version, timeline)
    timeline.end_stage("evaluate")
    if evaluation.decision != Decision.APPROVED:
        timeline.say("demo", "[FAILED] the first adapter was not approved, so nothing can go live")
        return 1
    first = await _deployment_outcome(events, model, evaluation.model_version, timeline, timeout=900)
    if not isinstance(first, DeploymentPromoted):
        timeline.say("demo", "[FAILED] the first adapter did not go live")
        return 1
    timeline.end_stage("deploy")

    from llmops_stack.keys import local_api_key

    window = _window_size()
    rng = random.Random(options.seed)
    shown = rng.sample(data.new, min(SHOWN_PROMPTS, len(data.new)))
    async with GatewayClient(settings, local_api_key(settings), tenant=tenant) as client:
        # 3. The client streams answers and rates some of them.
        await client.wait_until_generating(model, first.model_version, conversation(data.serving[0].text))
        calm = [rng.choice(data.serving) for _ in range(window)]
        traffic = await _traffic(client, calm, model, options, seed=options.seed)
        timeline.say("gateway", f"in-distribution: {traffic.describe()}")
        _say_generation_report(timeline, await _next_report(events, model, first.model_version, seen=0, timeout=600))
        timeline.end_stage("serve")

        # 4. New kinds of questions; users correct the answers; monitoring asks for retraining.
        before = {r.text: await client.generate(conversation(r.text), model, max_tokens=MAX_TOKENS) for r in shown}
        shift_started = len(events.events)
        retrain: Envelope[Any] | None = None
        for round_number in range(1, options.max_shift_windows + 1):
            shifted = [
                rng.choice(data.new) if rng.random() < options.shift_share else rng.choice(data.serving)
                for _ in range(window)
            ]
            # Counted before the traffic: its window may be reported before the traffic call returns.
            seen = len(_reports(events, model, first.model_version))
            traffic = await _traffic(client, shifted, model, options, seed=options.seed + round_number)
            timeline.say("gateway", f"shifted traffic, window {round_number}: {traffic.describe()}")
            _say_generation_report(
                timeline, await _next_report(events, model, first.model_version, seen=seen, timeout=600)
            )
            retrain = _retraining_request(events, model, since=shift_started)
            if retrain is not None:
                break
        if retrain is None:
            timeline.say("demo", f"[FAILED] no retraining request after {options.max_shift_windows} shifted windows")
            return 1
        detection = next(
            (
                e.data
                for e in events.events[shift_started:]
                if isinstance(e.data, MonitoringDriftDetected) and e.data.model_name == model
            ),
            None,
        )
        if detection is not None:
            timeline.say("monitoring", f"{detection.kind.upper()} detected: breached {detection.breached}")
            timeline.say("monitoring", f"report {detection.report_uri}")
        timeline.say(
            "monitoring", f"requested retraining ({retrain.data.reason.value}), correlation {retrain.correlationid}"
        )
        timeline.end_stage("detect")

        # 5. SFT on the corrections, DPO on the preference pairs; gate; canary.
        second_training = await _follow_training(events, retrain.id, timeline, timeout=options.timeout_s)
        if isinstance(second_training, TrainingFailed):
            timeline.say("training", f"[FAILED] {second_training.reason}: {second_training.detail}")
            return 1
        started = next(
            e.data for e in events.events if isinstance(e.data, TrainingStarted) and e.data.request_id == retrain.id
        )
        timeline.say("ingestion", _describe_instructions(events, started.dataset_id))
        timeline.end_stage("retrain")
        second = await _generative_evaluation(events, model, second_training.model_version, timeline)
        timeline.end_stage("re-evaluate")
        decided: Any = second
        if second.decision == Decision.APPROVED:
            decided = await _canary(client, events, model, second.model_version, data, options, timeline, rng)
        timeline.end_stage("canary")

        # 6. What the model answers now.
        if isinstance(decided, DeploymentPromoted):
            await client.wait_until_generating(model, decided.model_version, conversation(shown[0].text))
            print("\nbefore -> after (prompts of intents the first adapter never learned)")
            for record in shown:
                after = await client.generate(conversation(record.text), model, max_tokens=MAX_TOKENS)
                print(
                    f"  {record.text[:70]!r}\n    expected {record.label}: v{first.model_version} said "
                    f"{before[record.text].text!r}, v{after.model_version} says {after.text!r}"
                )

    # The loop closes when what users taught reaches them: the retrained adapter approved, canaried
    # and promoted. A refusal by the gate or a rolled-back canary kept users safe, but the model
    # did not learn: the demo says so and exits non-zero.
    closed = isinstance(decided, DeploymentPromoted)
    if not closed:
        outcome = decided.decision.value if isinstance(decided, EvaluationCompleted) else type(decided).__name__
        timeline.say("demo", f"[FAILED] the retrained adapter v{second.model_version} was not promoted ({outcome})")
    _summary(timeline, events, model, [evaluation, second], correlation=retrain.correlationid, closed=closed)
    return 0 if closed else 1


async def _traffic(
    client: GatewayClient, records: list[DemoRecord], model: str, options: GenerativeDemoOptions, *, seed: int
) -> GenerationTraffic:
    return await generate_traffic(
        client,
        [(conversation(r.text), r.label) for r in records],
        model=model,
        feedback_share=options.feedback_share,
        max_tokens=MAX_TOKENS,
        seed=seed,
    )


def _say_generation_report(timeline: Timeline, report: MonitoringReportCreated) -> None:
    breached = sorted(k for k, v in report.drifted.items() if v)
    shown = ("thumbs_down_share", "corrected_share", "prompt_embedding", "refusal_share", "length_finish_share")
    signals = ", ".join(f"{k} {report.signals[k]:.2f}" for k in shown if k in report.signals)
    verdict = f"breached: {', '.join(breached)}" if breached else "nothing breached"
    timeline.say(
        "monitoring", f"window of {report.window_size} generations on v{report.model_version}: {verdict} ({signals})"
    )


async def _generative_evaluation(events: EventLog, model: str, version: int, timeline: Timeline) -> EvaluationCompleted:
    evaluation: EvaluationCompleted = (
        await events.wait_for(
            lambda e: (
                isinstance(e.data, EvaluationCompleted)
                and e.data.model_name == model
                and e.data.model_version == version
            ),
            timeout=900,
        )
    ).data
    metrics = evaluation.candidate_metrics
    shown = ("exact_match", "rouge_l", "format_validity", "pii_leakage", "win_rate", "preference_accuracy")
    figures = ", ".join(f"{k} {metrics[k]:.3f}" for k in shown if isinstance(metrics.get(k), int | float))
    timeline.say(
        "evaluation",
        f"{evaluation.decision.value.upper()} v{version} "
        f"(champion: {evaluation.champion_version or 'none'}): {figures}",
    )
    for reason in evaluation.reasons:
        timeline.say("evaluation", f"  rule {reason.rule}: {reason.message}")
    timeline.say("evaluation", f"report {evaluation.report_uri}")
    return evaluation


def _describe_instructions(events: EventLog, dataset_id: str) -> str:
    snapshot = next(
        (e.data for e in events.events if isinstance(e.data, DatasetSnapshotted) and e.data.dataset_id == dataset_id),
        None,
    )
    if snapshot is None:
        return f"retrained on {dataset_id} (cut before the demo started)"
    pairs: Any = "?"
    try:
        manifest = json.loads(Path(snapshot.manifest_uri.removeprefix("file://")).read_text())
        pairs = sum(manifest.get("preference_counts", {}).values())
    except (OSError, ValueError):
        pass
    return f"retrained on snapshot {dataset_id}: {snapshot.row_count} conversations, {pairs} preference pairs"


async def _canary(
    client: GatewayClient,
    events: EventLog,
    model: str,
    version: int,
    data: DemoData,
    options: GenerativeDemoOptions,
    timeline: Timeline,
    rng: random.Random,
) -> DeploymentPromoted | DeploymentRolledBack:
    """Keep the client's traffic flowing while the canary adapter is judged."""
    outcome: Any = await _deployment_outcome(events, model, version, timeline, timeout=900)
    deadline = time.monotonic() + 900
    round_number = 0
    while isinstance(outcome, DeploymentCanaryStarted) and time.monotonic() < deadline:
        round_number += 1
        mixed = [rng.choice(data.new) if rng.random() < 0.5 else rng.choice(data.serving) for _ in range(100)]
        traffic = await _traffic(client, mixed, model, options, seed=options.seed + 100 + round_number)
        timeline.say("gateway", f"traffic during the canary: {traffic.describe()}")
        decided = [
            e.data
            for e in events.events
            if isinstance(e.data, DeploymentPromoted | DeploymentRolledBack)
            and e.data.model_name == model
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
    model: str,
    evaluations: list[EvaluationCompleted],
    *,
    correlation: str | None,
    closed: bool,
) -> None:
    print("\nsummary (generative loop)")
    for evaluation in evaluations:
        metrics = evaluation.candidate_metrics
        print(
            f"  {model} v{evaluation.model_version}: {evaluation.decision.value}, exact match "
            f"{metrics.get('exact_match', 0):.3f}; report {evaluation.report_uri}"
        )
    if correlation:
        chain = [e for e in events.events if e.correlationid == correlation]
        kinds = " -> ".join(dict.fromkeys(e.type.removeprefix("llmops.").removesuffix(".v1") for e in chain))
        print(f"  retraining chain (correlation {correlation}): {kinds}")
    print("  stage durations: " + ", ".join(f"{k} {v:.0f}s" for k, v in timeline.stages.items()))
    print(f"  the generative loop {'closed' if closed else 'did NOT close'}")
