"""Composition root of the evaluation service; nothing connects or loads at import."""

from __future__ import annotations

import asyncio
from typing import Any

from faststream import FastStream
from faststream.kafka import KafkaBroker

from llmops_evaluation.adapters.metrics import EvaluationMetrics
from llmops_evaluation.handlers import EvaluationService
from llmops_evaluation.settings import EvaluationSettings
from llmops_events.topics import TRAINING
from llmops_events.v1 import TrainingCompleted
from llmops_messaging import (
    DeadLetterQueue,
    EventConsumer,
    EventPublisher,
    ProcessedEvents,
    subscribe,
)
from llmops_messaging.app import service_app
from llmops_models import ModelRegistry
from llmops_serving import FollowedChampions
from llmops_storage import open_store
from llmops_storage.evidently_workspace import ReportWorkspace

SERVICE = "evaluation"


class EvaluationRuntime:
    """The service's resources for one run: opened before the broker starts, closed after it stops."""

    def __init__(self, settings: EvaluationSettings, *, metrics: EvaluationMetrics | None = None) -> None:
        self.settings = settings
        self.metrics = metrics or EvaluationMetrics()
        self.publisher = EventPublisher(settings.platform, service=SERVICE)
        self.processed: ProcessedEvents | None = None
        self.service: EvaluationService | None = None
        # Every replica reads the whole deployments topic itself (no consumer group): with the topic
        # in the group, only the replica holding its partition would know any champion.
        self.champions = FollowedChampions(settings.platform, client_id=SERVICE)

    async def open(self) -> EvaluationService:
        self.processed = ProcessedEvents(self.settings.state_db, consumer=self.settings.group_id)
        await self.champions.start()
        await self.publisher.start()
        self.service = EvaluationService(
            settings=self.settings,
            store=open_store(self.settings.platform.resolved_artifact_store_uri),
            publisher=self.publisher,
            champions=self.champions,
            metrics=self.metrics,
            workspace=ReportWorkspace(self.settings.platform.resolved_evidently_workspace),
        )
        return self.service

    def attach(self, broker: KafkaBroker, **options: Any) -> Any:
        """Subscribe the handler on ``broker`` (before it starts); returns the FastStream subscriber."""
        assert self.service is not None and self.processed is not None, "open() first"
        consumer = EventConsumer(
            group_id=self.settings.group_id,
            handlers={
                TrainingCompleted: self.service.on_training_completed,
            },
            dlq=DeadLetterQueue(self.publisher),
            processed=self.processed,
        )
        # An evaluation takes tens of seconds; the poll interval leaves room for the slowest.
        options.setdefault("max_poll_interval_ms", 15 * 60 * 1000)
        return subscribe(broker, consumer, TRAINING, **options)

    async def close(self) -> None:
        await self.publisher.stop()
        await self.champions.stop()
        if self.processed is not None:
            self.processed.close()


def create_app(settings: EvaluationSettings | None = None) -> FastStream:
    settings = settings or EvaluationSettings()
    return service_app(
        service=SERVICE,
        platform=settings.platform,
        runtime=EvaluationRuntime(settings),
        metrics_port=settings.metrics_port,
    )


async def evaluate_by_hand(
    model_name: str, version: int, *, dataset_id: str | None = None, settings: EvaluationSettings | None = None
) -> Any:
    """``make evaluate``: re-run an evaluation (e.g. after a policy change) and publish the decision."""
    runtime = EvaluationRuntime(settings or EvaluationSettings(), metrics=EvaluationMetrics())
    service = await runtime.open()
    try:
        store = open_store(runtime.settings.platform.resolved_artifact_store_uri)
        if dataset_id is None:
            manifest = ModelRegistry(store).manifest(model_name, version)
            dataset_id = str(manifest.get("lineage", {}).get("dataset_id", ""))
        completed = await asyncio.to_thread(service.evaluate_version, model_name, version, dataset_id=dataset_id)
        await runtime.publisher.publish(completed)
        return completed
    finally:
        await runtime.close()


def main() -> None:
    asyncio.run(create_app().run())
