"""``training.requested`` → one trained, published model version, reported as events.

Flow of one request (one at a time per replica):

1. If a published version already names this request id in its manifest (a replica crashed after
   publishing but before reporting), report ``training.completed`` for it and stop: no second
   training, even when the request reaches another replica after a rebalance.
2. Resolve the job (defaults + request, within the policy's ``limits``: base model, every
   hyperparameter), find the dataset (the latest snapshot when none is named), validate it and its
   size. A bad request → ``training.failed`` (retryable=false); the message is acked.
3. Allocate the next version, report ``training.started``, train in a worker thread (the event
   loop stays free, so the consumer keeps heartbeating and progress events go out), write the
   manifest and publish the folder atomically, report ``training.completed``. A job that runs past
   ``max_job_seconds`` is stopped by the trainer: ``training.failed`` (``time_limit_exceeded``).

A crash anywhere before step 3's publish leaves nothing visible: the offset was not committed, the
request is redelivered and trained again from scratch under the same version number.
"""

from __future__ import annotations

import asyncio
import logging
import tempfile
from collections.abc import Mapping
from concurrent.futures import Future
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, Protocol

from llmops_events import Envelope, EventData, derived_id
from llmops_events.v1.training import (
    TrainingCompleted,
    TrainingFailed,
    TrainingProgressed,
    TrainingRequested,
    TrainingStarted,
    TrainingTask,
)
from llmops_fine_tuning.adapters.metrics import FineTuningMetrics
from llmops_fine_tuning.domain.lineage import build_lineage
from llmops_fine_tuning.domain.ports import (
    DatasetReader,
    ModelRegistry,
    Trainer,
    TrainingProgress,
    TrainingResult,
)
from llmops_fine_tuning.domain.request import TrainingDefaults, TrainingJob, resolve_job
from llmops_fine_tuning.domain.validation import (
    CONTENT_FOR_TASK,
    DatasetSummary,
    check_content,
    check_dataset,
    check_dataset_size,
    check_instructions,
    check_task,
)
from llmops_fine_tuning.errors import FineTuningError, TrainingRejected, TransientFailure
from llmops_messaging.tracing import annotate, job_span
from llmops_models import build_manifest, hash_folder, write_manifest
from llmops_models.kinds import UnknownKind, kind_for_task
from llmops_models.kinds.causal_lm.conversations import RECORDS_CONTENT

logger = logging.getLogger(__name__)

PUBLISH_ATTEMPTS = 3


class EventSink(Protocol):
    """What the service needs of a publisher (``llmops_messaging.EventPublisher`` fits)."""

    async def publish(
        self, data: EventData, *, correlationid: str | None = None, id: str | None = None
    ) -> Envelope[Any]: ...


@dataclass(frozen=True)
class ServiceConfig:
    defaults: TrainingDefaults
    min_examples_per_label: int
    worker_name: str
    work_dir: Path
    code_version: str
    fresh_snapshot_wait_s: float = 0.0
    """For a drift or quality retraining on "the latest snapshot": how long to wait for one cut
    after the request (ingestion cuts it when it sees the request) before using the latest."""
    max_job_seconds: float | None = None
    """Time limit of one job in the trainer (``time_limit_exceeded``); None: no limit."""


@dataclass(frozen=True)
class _Published:
    version: int
    uri: str
    result: TrainingResult
    lineage: dict[str, Any]


_FRESH_DATA_REASONS = frozenset({"drift", "quality"})


class FineTuningService:
    """The handler of ``training.requested`` and what it orchestrates."""

    def __init__(
        self,
        *,
        config: ServiceConfig,
        datasets: DatasetReader,
        registry: ModelRegistry,
        trainer: Trainer | Mapping[TrainingTask, Trainer],
        events: EventSink,
        metrics: FineTuningMetrics | None = None,
    ) -> None:
        """``trainer``: one trainer per task, or one trainer for every task (tests' stand-ins)."""
        self._config = config
        self._datasets = datasets
        self._registry = registry
        self._trainers: Mapping[TrainingTask, Trainer] = (
            trainer if isinstance(trainer, Mapping) else dict.fromkeys(TrainingTask, trainer)
        )
        self._events = events
        self._metrics = metrics or FineTuningMetrics()
        self._one_job = asyncio.Lock()

    async def on_training_requested(self, envelope: Envelope[TrainingRequested]) -> None:
        request = envelope.data
        try:
            job = resolve_job(
                request,
                request_id=envelope.id,
                correlation_id=envelope.correlationid,
                defaults=self._config.defaults,
                time_limit_s=self._config.max_job_seconds,
            )
        except TrainingRejected as rejection:
            await self._refuse(envelope, rejection)
            return
        async with self._one_job:
            # One span per job in the request's trace: started, progress and the outcome are
            # published inside it, so evaluation and deployment continue the same trace.
            with job_span(
                "training job",
                attributes={"llmops.model.name": job.model_name, "llmops.training.task": job.task.value},
            ):
                if job.dataset_id is None and job.reason in _FRESH_DATA_REASONS and self._config.fresh_snapshot_wait_s:
                    await self._wait_for_fresh_snapshot(
                        envelope.time, self._config.fresh_snapshot_wait_s, content=CONTENT_FOR_TASK[job.task]
                    )
                await self._run(job)

    async def _wait_for_fresh_snapshot(
        self, requested_at: datetime, timeout_s: float, *, content: str = RECORDS_CONTENT
    ) -> None:
        """Wait until a snapshot (of what the task trains on) created at or after ``requested_at``
        exists, so a retraining caused by drift learns from the traffic that drifted (fed back as
        labelled records)."""
        deadline = asyncio.get_running_loop().time() + timeout_s
        while asyncio.get_running_loop().time() < deadline:
            latest = await asyncio.to_thread(self._datasets.latest, content)
            if latest is not None and latest[1] >= requested_at:
                return
            await asyncio.sleep(1.0)
        logger.warning(
            "no snapshot newer than the retraining request appeared; training on the latest one",
            extra={"waited_s": timeout_s},
        )

    async def _run(self, job: TrainingJob) -> None:
        existing = await asyncio.to_thread(self._registry.find_by_request, job.model_name, job.request_id)
        if existing is not None:
            logger.info(
                "request already trained; reporting its version",
                extra={"request_id": job.request_id, "model_version": existing["version"]},
            )
            await self._report_existing(job, existing)
            return

        try:
            job, summary = await asyncio.to_thread(self._prepare, job)
            version = await asyncio.to_thread(self._registry.next_version, job.model_name)
        except TrainingRejected as rejection:
            await self._fail(job, rejection, version=None)
            return

        assert job.dataset_id is not None
        annotate({"llmops.model.version": version, "llmops.dataset.id": job.dataset_id})
        await self._publish(
            TrainingStarted(
                model_name=job.model_name,
                request_id=job.request_id,
                model_version=version,
                dataset_id=job.dataset_id,
                worker=self._config.worker_name,
            ),
            job,
        )
        loop = asyncio.get_running_loop()
        pending: list[Future[Any]] = []

        def on_progress(progress: TrainingProgress) -> None:  # called from the training thread
            self._metrics.step.set(progress.step)
            self._metrics.throughput.set(progress.examples_per_second)
            event = TrainingProgressed(
                model_name=job.model_name, request_id=job.request_id, model_version=version, **vars(progress)
            )
            pending.append(asyncio.run_coroutine_threadsafe(self._publish(event, job), loop))

        self._metrics.running.set(1)
        try:
            published = await asyncio.to_thread(self._train_and_publish, job, summary, version, on_progress)
        except FineTuningError as error:
            await self._drain(pending)
            await self._fail(job, error, version=version)
            if error.retryable:
                raise
            return
        except OSError as error:  # artifact store or disk: may recover, so the request is redelivered
            await self._drain(pending)
            await self._fail(job, TransientFailure("storage_error", repr(error)), version=version)
            raise
        except Exception as error:  # a bug or a diverging job: retrying would only repeat it
            logger.exception("training failed", extra={"request_id": job.request_id})
            await self._drain(pending)
            await self._fail(job, TrainingRejected("training_error", repr(error)), version=version)
            return
        finally:
            self._metrics.running.set(0)

        await self._drain(pending)
        self._metrics.jobs.labels("completed").inc()
        self._metrics.duration.observe(published.result.wall_time_seconds)
        await self._publish(
            TrainingCompleted(
                model_name=job.model_name,
                request_id=job.request_id,
                model_version=published.version,
                artifact_uri=published.uri,
                metrics=published.result.metrics,
                trainable_parameter_share=published.result.trainable_parameter_share,
                wall_time_seconds=published.result.wall_time_seconds,
                lineage=published.lineage,
                completed_at=datetime.now(UTC),
            ),
            job,
        )
        logger.info(
            "training completed",
            extra={
                "request_id": job.request_id,
                "model_version": published.version,
                "artifact_uri": published.uri,
                **published.result.metrics,
            },
        )

    def _prepare(self, job: TrainingJob) -> tuple[TrainingJob, DatasetSummary]:
        """Find and validate the dataset; raises ``TrainingRejected`` with a reason code."""
        check_task(job.task)
        try:
            kind_for_task(job.task.value)
        except UnknownKind as error:
            raise TrainingRejected("unknown_kind", str(error)) from error
        if job.task not in self._trainers:
            raise TrainingRejected("unsupported_task", f"this replica has no trainer for task {job.task.value!r}")
        content = CONTENT_FOR_TASK[job.task]
        dataset_id = job.dataset_id or self._datasets.latest_dataset_id(content)
        if dataset_id is None:
            raise TrainingRejected("dataset_not_found", f"no complete {content} dataset snapshot exists yet")
        summary = self._datasets.summary(dataset_id)
        if summary is None:
            raise TrainingRejected("dataset_not_found", f"no complete dataset snapshot {dataset_id!r}")
        check_content(summary, job.task)
        if job.task == TrainingTask.CAUSAL_LM:
            check_instructions(summary, min_examples=self._config.min_examples_per_label)
        else:
            check_dataset(summary, min_examples_per_label=self._config.min_examples_per_label)
        settings = self._config.defaults.for_task(job.task)
        assert settings is not None  # resolve_job refused a task without a section
        check_dataset_size(summary, settings.limits)
        return job.model_copy(update={"dataset_id": dataset_id}), summary

    def _train_and_publish(
        self, job: TrainingJob, summary: DatasetSummary, version: int, on_progress: Any
    ) -> _Published:
        """The blocking part, run in a worker thread: train into a scratch folder, then publish it."""
        assert job.dataset_id is not None
        self._config.work_dir.mkdir(parents=True, exist_ok=True)
        with tempfile.TemporaryDirectory(prefix=f"{job.model_name}-", dir=self._config.work_dir) as scratch:
            folder = Path(scratch) / "model"
            data = self._datasets.load(job.dataset_id)
            result = self._trainers[job.task].train(job, data, folder, on_progress=on_progress)
            if getattr(job.trainer, "export_optimized", True):
                kind_for_task(job.task.value).optimize(folder)  # e.g. ONNX + int8: hashed into the manifest below
            lineage = build_lineage(
                job,
                dataset_content_hash=summary.content_hash,
                base_model_weights_hash=result.base_model_weights_hash,
                code_version=self._config.code_version,
            )
            files = hash_folder(folder)
            for attempt in range(1, PUBLISH_ATTEMPTS + 1):
                manifest = build_manifest(
                    model_name=job.model_name,
                    version=version,
                    kind=kind_for_task(job.task.value).name,
                    files=files,
                    lineage=lineage,
                    metrics=result.metrics,
                    created_at=datetime.now(UTC),
                )
                manifest.update(
                    trainable_parameter_share=result.trainable_parameter_share,
                    wall_time_seconds=result.wall_time_seconds,
                )
                write_manifest(folder, manifest)
                try:
                    uri = self._registry.publish(job.model_name, version, folder)
                    return _Published(version=version, uri=uri, result=result, lineage=lineage)
                except FileExistsError:
                    # Another writer took this number meanwhile (only possible outside the keyed
                    # partitioning, e.g. a manual upload): take the next free one.
                    taken, version = version, self._registry.next_version(job.model_name)
                    logger.warning(
                        "model version taken; publishing as the next one",
                        extra={"taken": taken, "model_version": version, "attempt": attempt},
                    )
        raise TransientFailure("version_conflict", f"could not allocate a version in {PUBLISH_ATTEMPTS} attempts")

    async def _report_existing(self, job: TrainingJob, manifest: dict[str, Any]) -> None:
        version = int(manifest["version"])
        await self._publish(
            TrainingCompleted(
                model_name=job.model_name,
                request_id=job.request_id,
                model_version=version,
                artifact_uri=self._registry.uri(job.model_name, version),
                metrics=dict(manifest.get("metrics", {})),
                trainable_parameter_share=float(manifest.get("trainable_parameter_share", 0.0)),
                wall_time_seconds=float(manifest.get("wall_time_seconds", 0.0)),
                lineage=dict(manifest.get("lineage", {})),
                completed_at=datetime.fromisoformat(manifest["created_at"]),
            ),
            job,
        )

    async def _fail(self, job: TrainingJob, error: FineTuningError, *, version: int | None) -> None:
        await self._report_failure(
            model_name=job.model_name,
            request_id=job.request_id,
            correlation_id=job.correlation_id,
            error=error,
            version=version,
        )

    async def _refuse(self, envelope: Envelope[TrainingRequested], rejection: TrainingRejected) -> None:
        """A request that does not resolve to a job within the policy: reported, never trained."""
        await self._report_failure(
            model_name=envelope.data.model_name,
            request_id=envelope.id,
            correlation_id=envelope.correlationid or envelope.id,
            error=rejection,
            version=None,
        )

    async def _report_failure(
        self, *, model_name: str, request_id: str, correlation_id: str, error: FineTuningError, version: int | None
    ) -> None:
        logger.warning(
            "training failed",
            extra={
                "request_id": request_id,
                "reason": error.reason,
                "detail": error.detail,
                "retryable": error.retryable,
            },
        )
        self._metrics.jobs.labels(error.reason).inc()
        await self._events.publish(
            TrainingFailed(
                model_name=model_name,
                request_id=request_id,
                model_version=version,
                reason=error.reason,
                detail=error.detail[:2000],
                retryable=error.retryable,
            ),
            correlationid=correlation_id,
            id=derived_id(request_id, TrainingFailed.event_type),
        )

    async def _publish(self, data: EventData, job: TrainingJob) -> None:
        await self._events.publish(data, correlationid=job.correlation_id, id=output_event_id(job.request_id, data))

    @staticmethod
    async def _drain(pending: list[Future[Any]]) -> None:
        """Wait for the progress events already handed to the loop, so they precede the outcome."""
        for future in pending:
            try:
                await asyncio.wrap_future(future)
            except Exception as error:  # progress is best effort; the outcome event is what counts
                logger.warning("progress event not published", extra={"error": repr(error)})
        pending.clear()


def output_event_id(request_id: str, data: EventData) -> str:
    """The id of an event published for the request whose event id is ``request_id``: the same on
    every run of that request (a redelivery after a crash), so consumers skip the copies; progress
    events differ by step."""
    step = data.event_type
    if isinstance(data, TrainingProgressed):
        step = f"{step}/step={data.step}"
    return derived_id(request_id, step)
