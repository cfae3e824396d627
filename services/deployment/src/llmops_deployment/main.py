"""Composition root of the deployment service; nothing connects or loads at import."""

from __future__ import annotations

import asyncio
import contextlib
import logging
from typing import Any

import grpc
from faststream import FastStream
from faststream.kafka import KafkaBroker

from llmops_deployment.adapters.artifacts import Artifacts
from llmops_deployment.adapters.audit import AuditTrail
from llmops_deployment.adapters.metrics import DeploymentMetrics
from llmops_deployment.adapters.ops_server import start_ops_server
from llmops_deployment.adapters.traffic import ConfidenceTracker
from llmops_deployment.adapters.triton_pool import TritonPool
from llmops_deployment.handlers import DeploymentService
from llmops_deployment.reconciler import Reconciler
from llmops_deployment.settings import DeploymentSettings
from llmops_events.topics import DEPLOYMENTS, EVALUATIONS
from llmops_events.v1 import EvaluationCompleted
from llmops_messaging import DeadLetterQueue, EventConsumer, EventPublisher, ProcessedEvents, subscribe
from llmops_messaging.app import service_app
from llmops_messaging.lease import ActiveLease
from llmops_models.triton_repository import AdapterRepository, ModelRepository
from llmops_serving import DeploymentFeed
from llmops_serving.triton_pool import pool_endpoints
from llmops_storage import open_store

SERVICE = "deployment"
logger = logging.getLogger(__name__)


class DeploymentRuntime:
    """The service's resources for one run: opened before the broker starts, closed after it stops."""

    def __init__(self, settings: DeploymentSettings, *, metrics: DeploymentMetrics | None = None) -> None:
        self.settings = settings
        self.metrics = metrics or DeploymentMetrics()
        self.publisher = EventPublisher(settings.platform, service=SERVICE)
        self.triton: TritonPool | None = None
        self.confidence = ConfidenceTracker(settings.platform, client_id=SERVICE)
        self.processed: ProcessedEvents | None = None
        self.service: DeploymentService | None = None
        self.reconciler: Reconciler | None = None
        self.ops_server: grpc.aio.Server | None = None
        self._reconciler: asyncio.Task[None] | None = None
        self.lease: ActiveLease | None = None

    async def open(self) -> DeploymentService:
        settings = self.settings
        if settings.single_active:
            # One controller acts on the models at a time: the others wait here as standbys.
            self.lease = ActiveLease(
                settings.platform,
                service=SERVICE,
                topic=DEPLOYMENTS,
                group_id=f"{settings.group_id}-active",
                session_timeout_ms=int(settings.lease_session_timeout_s * 1000),
            )
            await self.lease.acquire()
        self.processed = ProcessedEvents(settings.state_db, consumer=settings.group_id)
        # Created here, inside the running event loop: a grpc.aio channel belongs to one loop.
        # Every Triton serving the model repository: one by default, a pool by the triton_pool_* settings.
        self.triton = TritonPool(
            lambda: pool_endpoints(settings.platform), refresh_s=settings.platform.triton_pool_refresh_s
        )
        await self.publisher.start()
        artifacts = Artifacts(
            open_store(settings.platform.resolved_artifact_store_uri),
            ModelRepository(settings.platform.model_repository),
            AdapterRepository(settings.adapters_dir),
        )
        service = DeploymentService(
            settings=settings,
            artifacts=artifacts,
            triton=self.triton,
            publisher=self.publisher,
            confidence=self.confidence,
            metrics=self.metrics,
            # Promotions, rollbacks and verdicts, on the never-compacted audit topic.
            audit=AuditTrail(
                self.publisher, settings.platform, client_id=SERVICE, read_timeout_s=settings.audit_read_timeout_s
            ),
        )
        # The state is the fold of the whole deployments topic; this service is its only writer.
        feed = DeploymentFeed(settings.platform, client_id=SERVICE, on_change=lambda _, e: service.replay(e.data))
        await feed.start(follow=False)
        await self.confidence.start()
        self.service = service
        self.reconciler = Reconciler(
            service,
            triton=self.triton,
            artifacts=artifacts,
            metrics=self.metrics,
            interval_s=settings.reconcile_interval_s,
            causal_lm_model=settings.causal_lm_model,
        )
        return service

    def attach(self, broker: KafkaBroker, **options: Any) -> None:
        assert self.service is not None and self.processed is not None, "open() first"
        consumer = EventConsumer(
            group_id=self.settings.group_id,
            handlers={EvaluationCompleted: self.service.on_evaluation_completed},
            dlq=DeadLetterQueue(self.publisher),
            processed=self.processed,
        )
        # A deployment (load, warm-up, smoke test) may take minutes on a busy CPU, after retries
        # while Triton is unreachable (the last one may start just before the budget runs out).
        s = self.settings
        longest_s = s.load_timeout_s + s.triton_retry_budget_s + s.triton_retry_max_delay_s
        options.setdefault("max_poll_interval_ms", int(longest_s * 1000) + 5 * 60 * 1000)
        subscribe(broker, consumer, EVALUATIONS, **options)

    async def begin(self) -> None:
        """After the broker started: repair Triton, then keep it repaired; serve the ops API."""
        assert self.service is not None and self.reconciler is not None, "open() first"
        await self.reconciler.reconcile()
        self._reconciler = asyncio.get_running_loop().create_task(self.reconciler.run())
        self.ops_server = await start_ops_server(
            self.service, self.settings.platform.ops_port, platform=self.settings.platform, audit=self.publisher
        )

    async def close(self) -> None:
        self.metrics.up.set(0)
        if self.ops_server is not None:
            await self.ops_server.stop(grace=2)
        if self._reconciler is not None:
            self._reconciler.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._reconciler
        if self.service is not None:
            await self.service.stop()
        await self.confidence.stop()
        if self.triton is not None:
            await self.triton.close()
        await self.publisher.stop()
        if self.processed is not None:
            self.processed.close()
        if self.lease is not None:
            await self.lease.release()


def create_app(settings: DeploymentSettings | None = None) -> FastStream:
    settings = settings or DeploymentSettings()
    return service_app(
        service=SERVICE,
        platform=settings.platform,
        runtime=DeploymentRuntime(settings),
        metrics_port=settings.metrics_port,
    )


def main() -> None:
    asyncio.run(create_app().run())
