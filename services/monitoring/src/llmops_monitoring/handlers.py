"""The monitoring service's handlers: inference logs and feedback fill windows; a full window is
analysed against its reference, reported, and judged by the drift policy.

Classifications and generations (``InferenceLogged.generation`` set: a ``causal_lm`` model) fill
windows of their own per model name and version; a generation window is judged by the policy's
``generation`` section and a request it makes is for the ``causal-lm`` task.

The policy's state (streak, cooldown) is recorded only after the window's events are published: a
retraining request that failed to publish leaves no cooldown behind, so the next window decides
again; one published but not recorded is decided again with the same event ids (see
``PolicyStateStore.request_event_id``), so downstream recognises the duplicate."""

from __future__ import annotations

import asyncio
import logging
import time
import uuid
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from llmops_events import Envelope
from llmops_events.v1 import (
    FeedbackSubmitted,
    InferenceLogged,
    MonitoringDriftDetected,
    MonitoringReportCreated,
    TrainingReason,
    TrainingRequested,
    TrainingTask,
)
from llmops_messaging import EventPublisher
from llmops_monitoring.adapters.generation_reference import GenerationReferences
from llmops_monitoring.adapters.metrics import MonitoringMetrics
from llmops_monitoring.adapters.policy_state import PolicyStateStore
from llmops_monitoring.adapters.reference import ArtifactReferences
from llmops_monitoring.adapters.report_store import write_report
from llmops_monitoring.adapters.workspace import add_window
from llmops_monitoring.domain.analysis import Analysis, analyse, embedding_stride
from llmops_monitoring.domain.generation import (
    GenerationAnalysis,
    GenerationFeedbackJoin,
    GenerationObservation,
    PiiFinder,
    analyse_generations,
    generation_observation,
)
from llmops_monitoring.domain.policy import (
    DRIFT_SIGNALS,
    GENERATION_SIGNALS,
    QUALITY_SIGNALS,
    Decision,
    DriftPolicy,
    PolicyState,
    SignalRules,
    decide,
)
from llmops_monitoring.domain.ports import Encoder
from llmops_monitoring.domain.windows import LabelJoin, Observation, Window, WindowBook, WindowKey
from llmops_monitoring.errors import MonitoringError, ReferenceUnavailable
from llmops_monitoring.settings import MonitoringSettings
from llmops_serving import ChampionTable, FollowedChampions
from llmops_storage import ArtifactStore
from llmops_storage.evidently_workspace import ReportWorkspace

logger = logging.getLogger(__name__)

SERVICE = "monitoring"
CLASSIFICATION = "classification"
GENERATION = "generation"


@dataclass
class WindowReport:
    """One report: what was measured, what was decided, where it was written."""

    summary: dict[str, Any]
    decision: Decision
    analysis: Analysis | GenerationAnalysis
    html_uri: str
    json_uri: str
    policy_state: PolicyState | None = None
    """The model's policy state to record once the report's events are published (None: unchanged)."""


def signal_table(
    policy: DriftPolicy | SignalRules,
    analysis: Analysis | GenerationAnalysis,
    meanings: dict[str, str] | None = None,
) -> dict[str, dict[str, Any]]:
    """Every signal with its score, threshold, whether it decides and whether it is above threshold
    (``policy``: the classifier's rules, or the rules of the window's kind)."""
    rules = policy.rules if isinstance(policy, DriftPolicy) else policy
    meanings = meanings if meanings is not None else {**DRIFT_SIGNALS, **QUALITY_SIGNALS}
    table: dict[str, dict[str, Any]] = {}
    for name, score in sorted(analysis.signals.items()):
        threshold = rules.threshold(name)
        table[name] = {
            "score": round(score, 6),
            "threshold": threshold,
            "decides": rules.decides(name, labelled=analysis.labelled),
            "breached": threshold is not None and score > threshold,
            "meaning": meanings.get(name, ""),
        }
    return table


class MonitoringService:
    """Windows per model version, reports per window, and retraining requests under the policy."""

    def __init__(
        self,
        *,
        settings: MonitoringSettings,
        policy: DriftPolicy,
        store: ArtifactStore,
        references: ArtifactReferences,
        encoder: Encoder,
        publisher: EventPublisher,
        policy_state: PolicyStateStore,
        champions: ChampionTable | FollowedChampions,
        metrics: MonitoringMetrics,
        clock: Callable[[], float] = time.monotonic,
        wall_clock: Callable[[], float] = time.time,
        generation_references: GenerationReferences | None = None,
        find_pii: PiiFinder | None = None,
        workspace: ReportWorkspace | None = None,
    ) -> None:
        self._settings = settings
        self._workspace = workspace
        self.policy = policy
        self._store = store
        self._references = references
        self._encoder = encoder
        self._publisher = publisher
        self._policy_state = policy_state
        self._champions = champions
        self._metrics = metrics
        self._clock = clock
        self._wall_clock = wall_clock
        self._book: WindowBook[Observation] = WindowBook(
            max_events=settings.window_size, max_seconds=settings.window_seconds
        )
        self._labels = LabelJoin(max_tracked=settings.max_tracked_requests)
        self._generation_references = generation_references
        self._find_pii = find_pii
        self._generations: WindowBook[GenerationObservation] = WindowBook(
            max_events=settings.window_size, max_seconds=settings.window_seconds
        )
        self._generation_feedback = GenerationFeedbackJoin(max_tracked=settings.max_tracked_requests)
        # One analysis at a time: two would fight over the two CPU cores and the encoder.
        self._lock = asyncio.Lock()
        self.last_report: WindowReport | None = None
        self._stride = embedding_stride(settings.window_size, settings.embedding_sample_size)
        self._to_embed: list[str] = []

    @property
    def embedding_sample_size(self) -> int:
        return self._settings.embedding_sample_size

    def reference(self, model_name: str, version: int) -> Any:
        """The version's reference (built and cached on first use; blocking)."""
        return self._references.get(model_name, version)

    # -- handlers ---------------------------------------------------------------------------

    async def on_inference(self, envelope: Envelope[Any]) -> None:
        event: InferenceLogged = envelope.data
        if event.generation is not None:
            await self._on_generation(event)
            return
        key = WindowKey(event.model_name, event.model_version)
        observation = Observation(
            request_id=event.request_id,
            text=event.text,
            label=event.label,
            confidence=event.confidence,
            served_at=event.served_at,
        )
        window, closed = self._book.add(key, observation, now=self._clock())
        self._labels.served(window, observation)
        await self._embed_while_filling(window.size - 1, observation.text, closed=closed is not None)
        self._metrics.open_window_size.labels(key.model_name, str(key.model_version)).set(
            0 if closed is not None else window.size
        )
        if closed is not None:
            await self.report_window(closed)

    async def _on_generation(self, event: InferenceLogged) -> None:
        key = WindowKey(event.model_name, event.model_version)
        observation = generation_observation(event)
        window, closed = self._generations.add(key, observation, now=self._clock())
        self._generation_feedback.served(window, observation)
        await self._embed_while_filling(window.size - 1, observation.prompt, closed=closed is not None)
        self._metrics.open_window_size.labels(key.model_name, str(key.model_version)).set(
            0 if closed is not None else window.size
        )
        if closed is not None:
            await self.report_window(closed)

    async def _embed_while_filling(self, index: int, text: str, *, closed: bool) -> None:
        """Embed the window's sample (every ``stride``-th text) in batches while the window fills, so
        the report at the window's end finds the embeddings in the encoder's cache."""
        if index % self._stride == 0 and index // self._stride < self._settings.embedding_sample_size:
            self._to_embed.append(text)
        if self._to_embed and (len(self._to_embed) >= self._settings.embedding_batch_size or closed):
            batch, self._to_embed = self._to_embed, []
            try:
                await asyncio.to_thread(self._encoder.encode, batch)
            except Exception:  # the event is fine; the report will embed (or fail and say so) later
                logger.exception("embedding a batch of the window's sample failed")

    async def on_feedback(self, envelope: Envelope[Any]) -> None:
        event: FeedbackSubmitted = envelope.data
        if event.rating is not None or event.corrected_answer is not None:
            # About a generation (or a rating of a classification, which stays "early" until forgotten).
            joined = self._generation_feedback.feedback(
                event.request_id,
                rating=event.rating,
                corrected_answer=event.corrected_answer,
                book=self._generations,
            )
            self._metrics.feedback.labels(f"generation_{joined}").inc()
        if event.true_label is None:
            return  # a rating or correction alone says nothing about classification quality
        joined = self._labels.feedback(event.request_id, event.true_label, book=self._book)
        self._metrics.feedback.labels(joined).inc()

    async def on_deployment(self, envelope: Envelope[Any]) -> None:
        """Deployments delivered by the consumer group (the table's way); a followed topic feeds itself."""
        if isinstance(self._champions, ChampionTable):
            self._champions.apply(envelope.data)

    async def tick(self) -> None:
        """Close and report the windows that reached their time limit."""
        for window in self._book.expired(now=self._clock()):
            await self.report_window(window)
        for generations in self._generations.expired(now=self._clock()):
            await self.report_window(generations)

    async def flush(self, model_name: str | None = None) -> list[WindowReport]:
        """Report every open window now (of one model, or all), whatever its size."""
        reports = []
        books: tuple[WindowBook[Any], ...] = (self._book, self._generations)
        for book in books:
            for window in book.open_windows():
                if model_name is None or window.key.model_name == model_name:
                    closed = book.close(window.key)
                    if closed is not None:
                        report = await self.report_window(closed)
                        if report is not None:
                            reports.append(report)
        return reports

    # -- reports ----------------------------------------------------------------------------

    async def report_window(self, window: Window[Any]) -> WindowReport | None:
        """Analyse, write, decide and publish; never raises (a failed report is logged and counted)."""
        key = window.key
        generations = bool(window.observations) and isinstance(window.observations[0], GenerationObservation)
        champion = self._champions.champion(key.model_name)
        actionable = champion is None or champion == key.model_version
        async with self._lock:  # held until the state is recorded: the next window decides on it
            try:
                if generations:
                    report = await asyncio.to_thread(
                        self.build_generation_report,
                        key,
                        window.observations,
                        late=self._generation_feedback.take_late(key),
                        actionable=actionable,
                        act=True,
                        stride=self._stride,
                    )
                else:
                    report = await asyncio.to_thread(
                        self.build_report,
                        key,
                        window.observations,
                        late=self._labels.take_late(key),
                        actionable=actionable,
                        act=True,
                        stride=self._stride,
                    )
            except ReferenceUnavailable as error:
                logger.warning(
                    "no reference for the window; not reported",
                    extra={"model": str(key), "reason": error.reason, "detail": error.detail},
                )
                self._metrics.reports.labels(key.model_name, f"failed:{error.reason}").inc()
                return None
            except Exception:
                logger.exception("window report failed", extra={"model": str(key), "size": window.size})
                self._metrics.reports.labels(key.model_name, "failed:error").inc()
                return None
            try:
                await self._publish(report)
                if report.policy_state is not None:
                    # Only now that the request (if any) is on the bus: a cooldown for a request
                    # nobody received would silence the model for a whole cooldown.
                    self._policy_state.save(key.model_name, report.policy_state)
            except Exception:
                logger.exception(
                    "publishing the window's report failed; the policy state is left as it was",
                    extra={"model": str(key), "action": report.decision.action.value},
                )
                self._metrics.reports.labels(key.model_name, "failed:publish").inc()
                return None
        self.last_report = report
        return report

    def build_report(
        self,
        key: WindowKey,
        observations: Sequence[Observation],
        *,
        late: Sequence[Observation] = (),
        actionable: bool = True,
        act: bool = True,
        stride: int | None = None,
    ) -> WindowReport:
        """The report of one window (blocking: run it in a thread). ``act=False`` (``make drift-report``)
        decides for the record but leaves the policy state alone; otherwise the new state is in the
        report's ``policy_state``, for the caller to record once the report is published. ``stride``:
        the embedding sample's step (the service's, whose sample was embedded while the window filled;
        None: fit to the window)."""
        started = time.perf_counter()
        policy = self.policy
        reference = self._references.get(key.model_name, key.model_version)
        analysis = analyse(
            observations,
            reference,
            encoder=self._encoder,
            thresholds=policy.drift_thresholds,
            embedding_sample_size=self._settings.embedding_sample_size,
            late_labelled=late,
            stride=stride,
        )
        state = self._policy_state.load(key.model_name)
        decision = decide(
            policy,
            signals=analysis.signals,
            window_size=len(observations),
            labelled=analysis.labelled,
            state=state,
            now=self._wall_clock(),
            actionable=actionable and act,
        )
        report_id = f"{datetime.now(UTC):%Y%m%dT%H%M%SZ}-{uuid.uuid4().hex[:8]}"
        served = [o.served_at for o in observations]
        summary: dict[str, Any] = {
            "report_id": report_id,
            "kind": CLASSIFICATION,
            "model_name": key.model_name,
            "model_version": key.model_version,
            "created_at": datetime.now(UTC).isoformat(),
            "on_demand": not act,
            "window": {
                "size": len(observations),
                "start": min(served).isoformat() if served else "",
                "end": max(served).isoformat() if served else "",
                "labelled": analysis.labelled,
                "late_labelled": analysis.late_labelled,
            },
            "reference": {
                "dataset_id": reference.dataset_id,
                "model_version": reference.model_version,
                "size": reference.size,
                "description": f"{reference.size} validation examples of snapshot {reference.dataset_id}",
            },
            "embedding_sample": analysis.embedding_sample,
            "signals": signal_table(policy, analysis),
            "quality": analysis.quality,
            "decision": {**decision.as_record(), "actionable": actionable and act},
            "policy": policy.model_dump(),
            "seconds": {k: round(v, 3) for k, v in analysis.seconds.items()},
        }
        return self._written(summary, analysis, decision, state, act=act, started=started)

    def build_generation_report(
        self,
        key: WindowKey,
        observations: Sequence[GenerationObservation],
        *,
        late: Sequence[GenerationObservation] = (),
        actionable: bool = True,
        act: bool = True,
        stride: int | None = None,
    ) -> WindowReport:
        """The report of one window of generations (blocking: run it in a thread), judged by the
        policy's ``generation`` section; otherwise as ``build_report``."""
        if self._generation_references is None:
            raise MonitoringError("generation windows need generation references (none configured)")
        started = time.perf_counter()
        policy = self.policy
        rules = policy.generation.rules
        reference = self._generation_references.get(key.model_name, key.model_version)
        analysis = analyse_generations(
            observations,
            reference,
            encoder=self._encoder,
            thresholds=rules.drift_thresholds,
            embedding_sample_size=self._settings.embedding_sample_size,
            find_pii=self._find_pii,
            late_feedback=late,
            stride=stride,
        )
        state = self._policy_state.load(key.model_name)
        decision = decide(
            policy,
            signals=analysis.signals,
            window_size=len(observations),
            labelled=analysis.labelled,
            state=state,
            now=self._wall_clock(),
            actionable=actionable and act,
            rules=rules,
        )
        served = [o.served_at for o in observations]
        output_format = reference.output_format
        summary: dict[str, Any] = {
            "report_id": f"{datetime.now(UTC):%Y%m%dT%H%M%SZ}-{uuid.uuid4().hex[:8]}",
            "kind": GENERATION,
            "model_name": key.model_name,
            "model_version": key.model_version,
            "created_at": datetime.now(UTC).isoformat(),
            "on_demand": not act,
            "window": {
                "size": len(observations),
                "start": min(served).isoformat() if served else "",
                "end": max(served).isoformat() if served else "",
                "labelled": analysis.with_feedback,
                "late_labelled": analysis.late_feedback,
            },
            "reference": {
                "dataset_id": reference.dataset_id,
                "model_version": reference.model_version,
                "size": reference.size,
                "output_format": (
                    None
                    if output_format is None
                    else {"labels": list(output_format[0] or []) or None, "json_schema": output_format[1]}
                ),
                "description": (
                    f"{reference.size} held-out conversations of instructions snapshot {reference.dataset_id}"
                    f" (output format {'declared' if output_format is not None else 'not declared'})"
                ),
            },
            "embedding_sample": analysis.embedding_sample,
            "signals": signal_table(rules, analysis, GENERATION_SIGNALS),
            "quality": analysis.quality,
            "decision": {**decision.as_record(), "actionable": actionable and act},
            "policy": policy.model_dump(),
            "seconds": {k: round(v, 3) for k, v in analysis.seconds.items()},
        }
        return self._written(summary, analysis, decision, state, act=act, started=started)

    def _written(
        self,
        summary: dict[str, Any],
        analysis: Analysis | GenerationAnalysis,
        decision: Decision,
        state: PolicyState,
        *,
        act: bool,
        started: float,
    ) -> WindowReport:
        """Write the report's files; the report, with the policy state to record when acting."""
        html_uri, json_uri = write_report(
            self._store,
            summary=summary,
            drift_snapshot=analysis.drift_snapshot,
            quality_snapshot=analysis.quality_snapshot,
        )
        if self._workspace is not None:
            add_window(
                self._workspace,
                summary=summary,
                drift_snapshot=analysis.drift_snapshot,
                quality_snapshot=analysis.quality_snapshot,
                html_uri=html_uri,
            )
        summary["seconds"]["total"] = round(time.perf_counter() - started, 3)
        self._metrics.report_duration.observe(time.perf_counter() - started)
        logger.info(
            "window reported",
            extra={
                "model": f"{summary['model_name']}/v{summary['model_version']}",
                "kind": summary["kind"],
                "size": summary["window"]["size"],
                "action": decision.action.value,
                "breached": decision.breached,
                "report": html_uri,
            },
        )
        return WindowReport(
            summary=summary,
            decision=decision,
            analysis=analysis,
            html_uri=html_uri,
            json_uri=json_uri,
            policy_state=decision.state if act and decision.state != state else None,
        )

    async def _publish(self, report: WindowReport) -> None:
        summary = report.summary
        model, version = summary["model_name"], summary["model_version"]
        for name, item in summary["signals"].items():
            self._metrics.drift_score.labels(model, str(version), name).set(item["score"])
        self._metrics.window_size.labels(model, str(version)).set(summary["window"]["size"])
        self._metrics.last_report_time.labels(model).set(self._wall_clock())
        window = summary["window"]
        await self._publisher.publish(
            MonitoringReportCreated(
                model_name=model,
                model_version=version,
                report_id=summary["report_id"],
                window_start=window["start"] or datetime.now(UTC),
                window_end=window["end"] or datetime.now(UTC),
                window_size=window["size"],
                signals={name: item["score"] for name, item in summary["signals"].items()},
                drifted={name: bool(item["breached"]) for name, item in summary["signals"].items()},
                html_uri=report.html_uri,
                json_uri=report.json_uri,
            )
        )
        decision = report.decision
        if decision.requested:
            await self._request_retraining(report)
        self._metrics.reports.labels(model, decision.action.value).inc()

    async def _request_retraining(self, report: WindowReport) -> None:
        summary, decision, window = report.summary, report.decision, report.summary["window"]
        model, version = summary["model_name"], summary["model_version"]
        generation = summary.get("kind") == GENERATION
        signals = {name: item["score"] for name, item in summary["signals"].items()}
        thresholds = {name: item["threshold"] for name, item in summary["signals"].items() if name in decision.breached}
        # Named after the request's number, not drawn at random: decided again after a crash between
        # publishing and recording, the request is re-published under the same ids.
        number = decision.state.requests
        detection_id = self._policy_state.request_event_id(model, number, "drift_detected")
        await self._publisher.publish(
            MonitoringDriftDetected(
                model_name=model,
                model_version=version,
                report_id=summary["report_id"],
                kind=decision.kind or "drift",
                breached=decision.breached,
                evidence={
                    "window_kind": summary.get("kind", CLASSIFICATION),
                    "signals": signals,
                    "thresholds": thresholds,
                    "explanation": decision.explanation,
                    "window": window,
                    "json_uri": report.json_uri,
                },
                report_uri=report.html_uri,
            ),
            id=detection_id,
            correlationid=detection_id,
        )
        reason = TrainingReason.QUALITY if decision.kind == "quality" else TrainingReason.DRIFT
        await self._publisher.publish(
            TrainingRequested(
                model_name=model,
                reason=reason,
                evidence={
                    "report_uri": report.html_uri,
                    "report_json_uri": report.json_uri,
                    "report_id": summary["report_id"],
                    "breached": decision.breached,
                    "signals": signals,
                    "thresholds": thresholds,
                    "model_version": version,
                    "detection_id": detection_id,
                    "window_kind": summary.get("kind", CLASSIFICATION),
                },
                task=TrainingTask.CAUSAL_LM if generation else TrainingTask.SEQUENCE_CLASSIFICATION,
                requested_by=SERVICE,
            ),
            id=self._policy_state.request_event_id(model, number, "training_requested"),
            correlationid=detection_id,
        )
        self._metrics.retrains_requested.labels(model, reason.value).inc()
        logger.warning(
            "retraining requested",
            extra={"model": model, "version": version, "reason": reason.value, "breached": decision.breached},
        )
