"""Composition root: settings → adapters → handlers → FastStream app. Nothing runs at import.

The poll-interval decision: a job runs for minutes to an hour while the consumer holds its message.
Training runs in a worker thread, so the event loop keeps aiokafka's background heartbeats going
(the session never times out); but aiokafka also leaves the group when the consumer does not
*poll* (``getmany``) within ``max_poll_interval_ms``, and the time a delivery is being handled
counts. Rather than pausing partitions or committing before the work is done (which would lose a
job on a crash), the subscriber (``consumer_options``):

* fetches **one record per poll** — ``max_records=1``: ``subscribe`` fetches with
  ``getmany(max_records=...)`` (2,000 by default), which overrides ``max_poll_records`` — so each
  job is committed on its own, right after its version is published and reported;
* sets ``max_poll_interval_ms`` above the longest a delivery can take: the job's time limit
  (``LLMOPS_FINE_TUNING_MAX_JOB_SECONDS``, 1 h, enforced by the trainer), the wait for a fresh
  snapshot and a margin for loading data, publishing and one retry backoff.

The cost: a rebalance that needs this member waits for its current job; a request from a replica
that dies mid-job is redelivered to another replica once the session times out and retrained from
scratch. The manifest check (request id → published version) keeps a finished request from being
trained twice.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable
from typing import Any

from faststream import FastStream
from faststream.kafka import KafkaBroker

from llmops_events.topics import TRAINING
from llmops_events.v1.training import TrainingRequested, TrainingTask
from llmops_fine_tuning.adapters.causal_lm_trainer import LoraCausalLmTrainer
from llmops_fine_tuning.adapters.code_version import code_version
from llmops_fine_tuning.adapters.datasets import ArtifactDatasetReader
from llmops_fine_tuning.adapters.defaults import load_defaults
from llmops_fine_tuning.adapters.metrics import FineTuningMetrics
from llmops_fine_tuning.adapters.trainer import LoraSequenceClassificationTrainer
from llmops_fine_tuning.domain.ports import Trainer
from llmops_fine_tuning.handlers import FineTuningService, ServiceConfig
from llmops_fine_tuning.settings import FineTuningSettings
from llmops_messaging import (
    DeadLetterQueue,
    EventConsumer,
    EventPublisher,
    Outcome,
    ProcessedEvents,
    subscribe,
)
from llmops_messaging.app import service_app
from llmops_models import ModelRegistry
from llmops_storage import open_store

SERVICE = "fine-tuning"
POLL_INTERVAL_MARGIN_S = 300.0
"""Beyond the job's time limit and the snapshot wait: loading and checking the dataset, publishing
the version, and at most one retry backoff of the consumer (≤ 120 s)."""
logger = logging.getLogger(__name__)


def consumer_options(settings: FineTuningSettings) -> dict[str, Any]:
    """Subscriber options: one training request per poll and per commit, and a poll interval longer
    than any delivery can take, so the member is not evicted during a long job."""
    longest_delivery_s = settings.max_job_seconds + settings.fresh_snapshot_wait_s + POLL_INTERVAL_MARGIN_S
    return {
        "max_records": 1,
        "max_poll_records": 1,
        "max_poll_interval_ms": int(longest_delivery_s * 1000),
    }


class FineTuningRuntime:
    """Owns the service's resources for one run: built in ``open``, released in ``close``."""

    def __init__(
        self, settings: FineTuningSettings, *, metrics: FineTuningMetrics | None = None, trainer: Trainer | None = None
    ) -> None:
        """``trainer`` replaces the LoRA trainers of every task (tests)."""
        self.settings = settings
        self.metrics = metrics or FineTuningMetrics()
        self._trainer = trainer
        self.service: FineTuningService | None = None
        self._processed: ProcessedEvents | None = None
        self._publisher: EventPublisher | None = None

    async def open(self) -> FineTuningService:
        settings = self.settings
        defaults = load_defaults(settings.defaults_file)
        store = open_store(settings.platform.resolved_artifact_store_uri)
        self._processed = ProcessedEvents(settings.state_db, consumer=settings.group_id)
        self._publisher = EventPublisher(settings.platform, service=SERVICE)
        await self._publisher.start()
        self.service = FineTuningService(
            config=ServiceConfig(
                defaults=defaults,
                min_examples_per_label=settings.min_examples_per_label,
                worker_name=settings.worker_name,
                work_dir=settings.work_dir,
                code_version=await asyncio.to_thread(code_version),
                fresh_snapshot_wait_s=settings.fresh_snapshot_wait_s,
                max_job_seconds=settings.max_job_seconds,
            ),
            datasets=ArtifactDatasetReader(store),
            registry=ModelRegistry(store),
            trainer=self._trainer or trainers(settings),
            events=self._publisher,
            metrics=self.metrics,
        )
        return self.service

    def attach(
        self, broker: KafkaBroker, *, on_outcome: Callable[[Outcome], None] | None = None, **subscriber_options: Any
    ) -> None:
        """Subscribe the handler to the training topic on ``broker`` (before the broker starts)."""
        if self.service is None or self._publisher is None or self._processed is None:
            raise RuntimeError("open() first")
        consumer = EventConsumer(
            group_id=self.settings.group_id,
            handlers={TrainingRequested: self.service.on_training_requested},
            dlq=DeadLetterQueue(self._publisher),
            processed=self._processed,
            max_attempts=self.settings.max_attempts,
        )
        options = consumer_options(self.settings)
        options.update(subscriber_options)
        subscribe(broker, consumer, TRAINING, on_outcome=on_outcome, **options)

    async def close(self) -> None:
        self.metrics.up.set(0)
        if self._publisher is not None:
            await self._publisher.stop()
        if self._processed is not None:
            self._processed.close()


def trainers(settings: FineTuningSettings, *, device: str | None = None) -> dict[TrainingTask, Trainer]:
    """The trainer of each task (``device``: None picks CUDA when there is one, else the CPU)."""
    threads, interval = settings.num_threads, settings.progress_interval_s
    return {
        TrainingTask.SEQUENCE_CLASSIFICATION: LoraSequenceClassificationTrainer(
            num_threads=threads, progress_interval_s=interval, device=device
        ),
        TrainingTask.CAUSAL_LM: LoraCausalLmTrainer(num_threads=threads, progress_interval_s=interval, device=device),
    }


def create_app(settings: FineTuningSettings | None = None) -> FastStream:
    """The FastStream application; resources are built in its start-up hooks."""
    settings = settings or FineTuningSettings()
    return service_app(
        service=SERVICE,
        platform=settings.platform,
        runtime=FineTuningRuntime(settings),
        metrics_port=settings.metrics_port,
    )


def main() -> None:
    from llmops_fine_tuning.adapters.training_loop import flush_subnormal_floats

    flush_subnormal_floats()  # before torch starts its threads: they copy the flag
    asyncio.run(create_app().run())
