"""Composition root: settings → adapters → handlers → FastStream app. Nothing runs at import."""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Callable, Sequence
from datetime import timedelta
from typing import Any

from faststream import FastStream
from faststream.kafka import KafkaBroker

from llmops_events.topics import FEEDBACK, INFERENCE, PRIVACY, RECORDS_RAW, TRAINING
from llmops_events.v1 import (
    DatasetContent,
    DatasetSnapshotted,
    ErasureRequested,
    FeedbackSubmitted,
    InferenceLogged,
    InstructionSubmitted,
    RecordSubmitted,
    TrainingRequested,
)
from llmops_ingestion.adapters.consumer import MeteredConsumer, MeteredDeadLetterQueue
from llmops_ingestion.adapters.feast_store import FeastCuratedStore
from llmops_ingestion.adapters.metrics import IngestionMetrics
from llmops_ingestion.adapters.state import IngestionState
from llmops_ingestion.adapters.tokenizer import ChatTokenizer
from llmops_ingestion.domain.snapshot import SplitRatios
from llmops_ingestion.domain.validation import ValidationRules
from llmops_ingestion.errors import NothingToSnapshot
from llmops_ingestion.handlers import CurationConfig, IngestionService
from llmops_ingestion.settings import IngestionSettings
from llmops_messaging import EventPublisher, Outcome, ProcessedEvents, open_processed_events, subscribe
from llmops_messaging.app import service_app
from llmops_privacy.redaction import Redactor
from llmops_storage import open_store

SERVICE = "ingestion"
logger = logging.getLogger(__name__)


class IngestionRuntime:
    """Owns the service's resources for one run: built in ``start``, released in ``stop``."""

    def __init__(self, settings: IngestionSettings, *, metrics: IngestionMetrics | None = None) -> None:
        self.settings = settings
        self.metrics = metrics or IngestionMetrics()
        self.service: IngestionService | None = None
        self._processed: ProcessedEvents | None = None
        self._publisher: EventPublisher | None = None
        self._pusher: asyncio.Task[None] | None = None
        self.consumer: MeteredConsumer | None = None
        self._features: FeastCuratedStore | None = None

    async def open(self) -> IngestionService:
        """Load the redactor and language model, open the state store (SQLite or PostgreSQL) and Feast,
        connect the producer."""
        settings = self.settings
        redactor = await asyncio.to_thread(
            Redactor, phone_regions=settings.phone_regions, detect_names=settings.redact_names
        )
        self._processed = open_processed_events(settings.state_store, settings.state_db, consumer=settings.group_id)
        state = IngestionState(self._processed)
        features = FeastCuratedStore(
            settings.feast_repo_dir,
            languages=settings.languages if settings.detect_language else None,
            online_store=settings.feast,
        )
        await asyncio.to_thread(features.open)
        if settings.feast_push_in_worker_process:
            await asyncio.to_thread(features.start_push_worker)
        self._features = features
        self._publisher = EventPublisher(settings.platform, service=SERVICE)
        await self._publisher.start()
        self.service = IngestionService(
            config=CurationConfig(
                rules=ValidationRules(
                    max_text_length=settings.max_text_length,
                    allowed_labels=frozenset(settings.allowed_labels),
                    max_instruction_tokens=settings.max_instruction_tokens,
                ),
                split_ratios=SplitRatios(
                    train=settings.split_train_percent, validation=settings.split_validation_percent
                ),
                snapshot_every_n_labelled=settings.snapshot_every_n_labelled,
                dataset_name=settings.dataset_name,
                push_batch_size=settings.feast_push_batch_size,
                flywheel_retention=timedelta(days=settings.flywheel_retention_days),
                snapshot_every_n_instructions=settings.snapshot_every_n_instructions,
                max_rated_answers_per_prompt=settings.max_rated_answers_per_prompt,
            ),
            redact=redactor.redact,
            processed=self._processed,
            state=state,
            features=features,
            artifacts=open_store(settings.platform.resolved_artifact_store_uri),
            events=self._publisher,
            metrics=self.metrics,
            # Loaded on the first instruction example, in this (the validating) process.
            tokens=ChatTokenizer(settings.instruction_tokenizer, cache_dir=settings.tokenizer_cache_dir),
        )
        return self.service

    def attach(
        self, broker: KafkaBroker, *, on_outcome: Callable[[Outcome], None] | None = None, **subscriber_options: Any
    ) -> Any:
        """Subscribe the handlers to their topics on ``broker`` (before the broker starts); returns
        the FastStream subscriber."""
        if self.service is None or self._publisher is None or self._processed is None:
            raise RuntimeError("open() first")
        consumer = MeteredConsumer(
            metrics=self.metrics,
            group_id=self.settings.group_id,
            handlers={
                InferenceLogged: self.service.on_inference,
                FeedbackSubmitted: self.service.on_feedback,
                TrainingRequested: self.service.on_training_requested,
                ErasureRequested: self.service.on_erasure,
            },
            # Records come by the thousand: curated and stored a FastStream batch at a time.
            batch_handlers={
                RecordSubmitted: self.service.on_records,
                InstructionSubmitted: self.service.on_instructions,
            },
            dlq=MeteredDeadLetterQueue(self._publisher, metrics=self.metrics),
            processed=self._processed,
            max_attempts=self.settings.max_attempts,
        )
        self.consumer = consumer
        return subscribe(
            broker,
            consumer,
            RECORDS_RAW,
            INFERENCE,
            FEEDBACK,
            TRAINING,
            PRIVACY,
            on_outcome=on_outcome,
            **subscriber_options,
        )

    async def begin(self) -> None:
        """After the broker started: background pushes, pending snapshot events, metrics."""
        assert self.service is not None
        await self.service.publish_pending_snapshots()
        self._pusher = asyncio.get_running_loop().create_task(
            self.service.run_pusher(self.settings.feast_push_interval_s)
        )
        self.metrics.up.set(1)

    async def close(self) -> None:
        """After the broker stopped: a last push so nothing waits in the outbox, then release."""
        self.metrics.up.set(0)
        if self._pusher is not None:
            self._pusher.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._pusher
        if self.service is not None:
            with contextlib.suppress(Exception):
                await self.service.wait_for_snapshot()
            try:
                await self.service.push_pending()
            except Exception:
                logger.exception("final push to Feast failed; the rows stay in the outbox for the next start")
        if self._features is not None:
            await asyncio.to_thread(self._features.close)
        if self._publisher is not None:
            await self._publisher.stop()
        if self._processed is not None:
            self._processed.close()


def create_app(settings: IngestionSettings | None = None) -> FastStream:
    """The FastStream application; resources are built in its start-up hooks."""
    settings = settings or IngestionSettings()
    return service_app(
        service=SERVICE,
        platform=settings.platform,
        runtime=IngestionRuntime(settings),
        metrics_port=settings.metrics_port,
    )


async def cut_snapshot(
    settings: IngestionSettings | None = None, *, content: DatasetContent | str = DatasetContent.RECORDS
) -> DatasetSnapshotted:
    """Cut a dataset snapshot of one series now, from outside the running service.

    Pushes whatever the service has curated but not yet pushed, then snapshots every labelled
    record (``content="instructions"``: every instruction example). Raises ``NothingToSnapshot``
    when there is none.
    """
    runtime = IngestionRuntime(settings or IngestionSettings())
    service = await runtime.open()
    try:
        return await service.cut_snapshot(trigger="on_demand", content=DatasetContent(content))
    finally:
        await runtime.close()


async def cut_snapshots(
    settings: IngestionSettings | None = None, *, contents: Sequence[DatasetContent | str] = tuple(DatasetContent)
) -> list[DatasetSnapshotted]:
    """Cut a snapshot of each series in ``contents`` (default: records and instruction examples) now
    (``llmops snapshot``), skipping a series with nothing curated. Raises ``NothingToSnapshot`` when
    every one of them is empty."""
    runtime = IngestionRuntime(settings or IngestionSettings())
    service = await runtime.open()
    events: list[DatasetSnapshotted] = []
    empty: list[str] = []
    try:
        for content in contents:
            try:
                events.append(await service.cut_snapshot(trigger="on_demand", content=DatasetContent(content)))
            except NothingToSnapshot as nothing:
                empty.append(str(nothing))
    finally:
        await runtime.close()
    if not events:
        raise NothingToSnapshot("; ".join(empty))
    return events


def main() -> None:
    asyncio.run(create_app().run())
