"""Composition root of the monitoring service; nothing connects or loads at import."""

from __future__ import annotations

import asyncio
import contextlib
import logging
from typing import Any

from faststream import FastStream
from faststream.kafka import KafkaBroker

from llmops_events.topics import DEPLOYMENTS, FEEDBACK, INFERENCE
from llmops_events.v1 import (
    FeedbackSubmitted,
    InferenceLogged,
)
from llmops_messaging import DeadLetterQueue, EventConsumer, EventPublisher, ProcessedEvents, subscribe
from llmops_messaging.app import service_app
from llmops_messaging.lease import ActiveLease
from llmops_monitoring.adapters.encoder import MiniLMEncoder
from llmops_monitoring.adapters.generation_reference import GenerationReferences
from llmops_monitoring.adapters.metrics import MonitoringMetrics
from llmops_monitoring.adapters.pii import RedactorPiiFinder
from llmops_monitoring.adapters.policy_state import PolicyStateStore, open_policy_state
from llmops_monitoring.adapters.reference import ArtifactReferences, PredictorLoader
from llmops_monitoring.domain.generation import PiiFinder
from llmops_monitoring.domain.policy import DriftPolicy, load_policy
from llmops_monitoring.domain.ports import Encoder
from llmops_monitoring.handlers import SERVICE, MonitoringService, WindowReport
from llmops_monitoring.settings import MonitoringSettings
from llmops_serving import FollowedChampions
from llmops_storage import open_store
from llmops_storage.evidently_workspace import ReportWorkspace

logger = logging.getLogger(__name__)


class MonitoringRuntime:
    """The service's resources for one run: opened before the broker starts, closed after it stops.

    ``encoder``, ``predictor_loader``, ``policy`` and ``find_pii`` can be injected (tests, benchmarks);
    by default the MiniLM encoder, the champion's artifacts, ``settings.policy_file`` and
    ``llmops_privacy``'s detectors (built on the first generation report) are used.
    """

    def __init__(
        self,
        settings: MonitoringSettings,
        *,
        metrics: MonitoringMetrics | None = None,
        encoder: Encoder | None = None,
        predictor_loader: PredictorLoader | None = None,
        policy: DriftPolicy | None = None,
        find_pii: PiiFinder | None = None,
    ) -> None:
        self.settings = settings
        self.metrics = metrics or MonitoringMetrics()
        self.publisher = EventPublisher(settings.platform, service=SERVICE)
        self.processed: ProcessedEvents | None = None
        self.service: MonitoringService | None = None
        self._encoder = encoder
        self._predictor_loader = predictor_loader
        self._policy = policy
        self._find_pii = find_pii
        self._ticker: asyncio.Task[None] | None = None
        self.lease: ActiveLease | None = None
        self.policy_state: PolicyStateStore | None = None
        # Every replica reads the whole deployments topic (no consumer group): a standby that takes
        # over knows every champion, whichever machine it runs on.
        self.champions = FollowedChampions(settings.platform, client_id=SERVICE)

    async def open(self) -> MonitoringService:
        settings = self.settings
        if settings.single_active:
            # One replica decides per model (its windows see every inference): the others wait here.
            self.lease = ActiveLease(
                settings.platform,
                service=SERVICE,
                topic=DEPLOYMENTS,
                group_id=f"{settings.group_id}-active",
                session_timeout_ms=int(settings.lease_session_timeout_s * 1000),
            )
            await self.lease.acquire()
        policy = self._policy or load_policy(settings.policy_file)  # a bad policy file fails the start-up
        self.processed = ProcessedEvents(settings.state_db, consumer=settings.group_id)
        self.policy_state = open_policy_state(settings.state_store, self.processed.connection)
        await self.champions.start()
        await self.publisher.start()
        encoder = self._encoder or MiniLMEncoder(settings.encoder_model, batch_size=settings.embedding_batch_size)
        store = open_store(settings.platform.resolved_artifact_store_uri)
        self.service = MonitoringService(
            settings=settings,
            policy=policy,
            store=store,
            references=ArtifactReferences(
                store,
                encoder=encoder,
                cache_dir=settings.reference_cache_dir,
                size=policy.reference_size or settings.reference_size,
                seed=settings.seed,
                predictor_loader=self._predictor_loader,
            ),
            encoder=encoder,
            publisher=self.publisher,
            policy_state=self.policy_state,
            champions=self.champions,
            metrics=self.metrics,
            generation_references=GenerationReferences(
                store,
                encoder=encoder,
                cache_dir=settings.reference_cache_dir,
                size=policy.generation.reference_size or settings.reference_size,
                seed=settings.seed,
            ),
            find_pii=self._find_pii or (RedactorPiiFinder() if settings.detect_output_pii else None),
            workspace=ReportWorkspace(settings.platform.resolved_evidently_workspace),
        )
        return self.service

    def attach(self, broker: KafkaBroker, **options: Any) -> None:
        assert self.service is not None and self.processed is not None, "open() first"
        service = self.service
        consumer = EventConsumer(
            group_id=self.settings.group_id,
            handlers={
                InferenceLogged: service.on_inference,
                FeedbackSubmitted: service.on_feedback,
            },
            dlq=DeadLetterQueue(self.publisher),
            processed=self.processed,
        )
        # A full window's report (first one: building the reference) can take a minute on a CPU.
        options.setdefault("max_poll_interval_ms", 15 * 60 * 1000)
        subscribe(broker, consumer, INFERENCE, FEEDBACK, **options)

    async def begin(self) -> None:
        """After the broker started: close time-based windows on a timer."""
        self._ticker = asyncio.create_task(self._tick_forever())

    async def _tick_forever(self) -> None:
        assert self.service is not None
        while True:
            await asyncio.sleep(self.settings.tick_seconds)
            try:
                await self.service.tick()
            except Exception:  # the ticker must outlive a bad window
                logger.exception("window tick failed")

    async def close(self) -> None:
        if self._ticker is not None:
            self._ticker.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._ticker
        await self.publisher.stop()
        await self.champions.stop()
        if self.policy_state is not None:
            self.policy_state.close()
        if self.processed is not None:
            self.processed.close()
        if self.lease is not None:
            await self.lease.release()


def create_app(settings: MonitoringSettings | None = None) -> FastStream:
    settings = settings or MonitoringSettings()
    return service_app(
        service=SERVICE,
        platform=settings.platform,
        runtime=MonitoringRuntime(settings),
        metrics_port=settings.metrics_port,
    )


async def drift_report_by_hand(
    model_name: str,
    *,
    last: int = 1000,
    version: int | None = None,
    settings: MonitoringSettings | None = None,
    runtime: MonitoringRuntime | None = None,
) -> list[WindowReport]:
    """``make drift-report``: a report per model version over the latest ``last`` inference events of
    ``model_name`` on the inference topic (generations for a ``causal_lm`` model). The policy's
    decision is recorded in the report, but nothing is published and the policy state (streak,
    cooldown) is left alone."""
    from llmops_monitoring.adapters.traffic import read_latest_traffic
    from llmops_monitoring.domain.generation import GenerationObservation
    from llmops_monitoring.domain.windows import Observation, WindowKey

    runtime = runtime or MonitoringRuntime(settings or MonitoringSettings())
    settings = runtime.settings
    traffic = await read_latest_traffic(settings.platform, model_name, last=last, version=version)
    service = await runtime.open()
    try:
        reports = []
        for model_version, observations in sorted(traffic.items()):
            key = WindowKey(model_name, model_version)
            if observations and isinstance(observations[0], GenerationObservation):
                generations = [o for o in observations if isinstance(o, GenerationObservation)]
                report = await asyncio.to_thread(service.build_generation_report, key, generations, act=False)
            else:
                classifications = [o for o in observations if isinstance(o, Observation)]
                report = await asyncio.to_thread(service.build_report, key, classifications, act=False)
            reports.append(report)
        return reports
    finally:
        await runtime.close()


def main() -> None:
    asyncio.run(create_app().run())
