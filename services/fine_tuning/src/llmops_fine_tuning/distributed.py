"""One training job as a data-parallel process group, outside the consumer (a Kubernetes Job on GPU
nodes, or a larger machine):

    torchrun --nproc-per-node N -m llmops_fine_tuning.distributed --request request.json

``request.json`` is one ``training.requested`` event in CloudEvents JSON (structured mode: the
attributes ``specversion, id, source, type, time, correlationid`` and ``data``; what
``Envelope.model_dump_json()`` writes). Settings come from the environment as for the service
(``LLMOPS_*``, ``LLMOPS_FINE_TUNING_*``): the artifact store, Kafka, the defaults file, threads.

What each process does:

* **rank 0** runs the service's own handler (``FineTuningService``) on the request: the same
  idempotency (a request with a published version is reported, not retrained), limits, dataset
  checks, version allocation, artifact and manifest, and the same events (started, progressed,
  completed or failed) on the training topic. When the handler reaches the trainer, rank 0 hands
  the resolved job and its data to the other ranks (one broadcast), then trains with them.
* **the other ranks** wait for that job (or for word that there is none: a refused or already
  trained request), train their share of each batch and exit; they write nothing and publish
  nothing.

The process group: ``nccl`` on CUDA (each process on the GPU ``LOCAL_RANK``), ``gloo`` on the CPU;
its timeout covers the longest wait between two collectives (the job's time limit, the wait for a
fresh snapshot and a margin). Without ``torchrun`` (no ``WORLD_SIZE``) it runs as one process.

Exit status (of rank 0; ``torchrun`` exits non-zero when any rank did): 0 the request's version is
published; 2 it was refused or failed for a reason a retry will not fix (``training.failed``,
``retryable=false``); 75 a transient failure (``retryable=true``: run the job again); 1 anything
else. A rank that dies takes the group down: rank 0 sees its collective fail and reports
``training.failed`` (``training_error``) within ``torchrun``'s grace period.
"""

from __future__ import annotations

import argparse
import asyncio
import faulthandler
import logging
import os
import signal
import sys
from collections.abc import Sequence
from datetime import timedelta
from pathlib import Path
from typing import Any

import torch
import torch.distributed as dist
from pydantic import ValidationError

from llmops_config import configure_logging
from llmops_events import Envelope, EventData
from llmops_events.envelope import envelope_of
from llmops_events.v1.training import TrainingCompleted, TrainingFailed, TrainingRequested
from llmops_fine_tuning.adapters.code_version import code_version
from llmops_fine_tuning.adapters.data_parallel import DataParallel
from llmops_fine_tuning.adapters.datasets import ArtifactDatasetReader
from llmops_fine_tuning.adapters.defaults import load_defaults
from llmops_fine_tuning.adapters.training_loop import flush_subnormal_floats
from llmops_fine_tuning.domain.ports import InstructionData, ProgressCallback, Trainer, TrainingData, TrainingResult
from llmops_fine_tuning.domain.request import TrainingJob
from llmops_fine_tuning.errors import TrainingRejected
from llmops_fine_tuning.handlers import FineTuningService, ServiceConfig
from llmops_fine_tuning.main import POLL_INTERVAL_MARGIN_S, SERVICE, trainers
from llmops_fine_tuning.settings import FineTuningSettings
from llmops_messaging import EventPublisher
from llmops_models import ModelRegistry
from llmops_storage import open_store

logger = logging.getLogger(__name__)

EXIT_COMPLETED, EXIT_CRASHED, EXIT_FAILED, EXIT_RETRY = 0, 1, 2, 75


def parse_arguments(argv: Sequence[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="torchrun --nproc-per-node N -m llmops_fine_tuning.distributed",
        description="Train one training.requested event data-parallel across the processes of a torchrun group.",
    )
    parser.add_argument(
        "--request", type=Path, required=True, help="a training.requested event as CloudEvents JSON (structured mode)"
    )
    parser.add_argument(
        "--device",
        choices=("auto", "cpu", "cuda"),
        default="auto",
        help="cuda (backend nccl, one GPU per process: LOCAL_RANK) or cpu (backend gloo); auto: cuda when there is one",
    )
    return parser.parse_args(argv)


def read_request(path: Path) -> Envelope[TrainingRequested]:
    """The request event in ``path``; a clear error for a missing file or anything but one."""
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as error:
        raise SystemExit(f"cannot read the request {path}: {error}") from error
    try:
        return envelope_of(TrainingRequested).model_validate_json(text)
    except ValidationError as error:
        problems = "; ".join(f"{'.'.join(map(str, e['loc'])) or '(top)'}: {e['msg']}" for e in error.errors()[:5])
        raise SystemExit(f"{path} is not a training.requested event (CloudEvents JSON): {problems}") from error


def group_timeout(settings: FineTuningSettings) -> timedelta:
    """Longer than any wait between two collectives: the other ranks wait for the job while rank 0
    may wait for a fresh snapshot and load the dataset, and the training itself is time-limited."""
    return timedelta(seconds=settings.max_job_seconds + settings.fresh_snapshot_wait_s + POLL_INTERVAL_MARGIN_S)


def start_group(settings: FineTuningSettings, device_choice: str) -> tuple[DataParallel, torch.device]:
    """Join the ``torchrun`` group (from its ``WORLD_SIZE``, ``RANK``, ``LOCAL_RANK`` variables), if any."""
    use_cuda = device_choice == "cuda" or (device_choice == "auto" and torch.cuda.is_available())
    if use_cuda and not torch.cuda.is_available():
        raise SystemExit("--device cuda: this process sees no CUDA device")
    world_size = int(os.environ.get("WORLD_SIZE", "1"))
    local_rank = int(os.environ.get("LOCAL_RANK", "0"))
    device = torch.device("cuda", local_rank) if use_cuda else torch.device("cpu")
    if world_size > 1:
        if use_cuda:
            torch.cuda.set_device(device)
        dist.init_process_group(backend="nccl" if use_cuda else "gloo", timeout=group_timeout(settings))
    return DataParallel.current(), device


class _Handover:
    """Rank 0's side of the one broadcast that tells the other ranks what to train (or that
    there is nothing to train)."""

    def __init__(self, parallel: DataParallel, device: torch.device) -> None:
        self._parallel = parallel
        self._device = device if device.type == "cuda" else None
        self.sent = False

    def send(self, job: TrainingJob | None, data: TrainingData | InstructionData | None = None) -> None:
        if self.sent:
            raise RuntimeError("one job per process group: the job was already handed over")
        self.sent = True
        self._parallel.broadcast(None if job is None else (job, data), self._device)

    def release(self) -> None:
        """Tell the other ranks there is nothing to train, unless they have their job."""
        if not self.sent:
            self.send(None)


class _LeadingTrainer:
    """Rank 0's trainer: hands the job the service resolved, and its data, to the other ranks,
    then trains with them."""

    def __init__(self, trainer: Trainer, handover: _Handover) -> None:
        self._trainer = trainer
        self._handover = handover

    def train(
        self, job: TrainingJob, data: TrainingData | InstructionData, output: Path, *, on_progress: ProgressCallback
    ) -> TrainingResult:
        self._handover.send(job, data)
        return self._trainer.train(job, data, output, on_progress=on_progress)


class _RecordedEvents:
    """The publisher, remembering what it published (the job's outcome, for the exit status)."""

    def __init__(self, publisher: EventPublisher) -> None:
        self._publisher = publisher
        self.published: list[EventData] = []

    async def publish(
        self, data: EventData, *, correlationid: str | None = None, id: str | None = None
    ) -> Envelope[Any]:
        envelope = await self._publisher.publish(data, correlationid=correlationid, id=id)
        self.published.append(data)
        return envelope


def exit_status(published: Sequence[EventData]) -> int:
    """0 completed, 2 failed for good, 75 failed for now, 1 when neither was reported."""
    for event in reversed(published):
        if isinstance(event, TrainingCompleted):
            return EXIT_COMPLETED
        if isinstance(event, TrainingFailed):
            return EXIT_RETRY if event.retryable else EXIT_FAILED
    return EXIT_CRASHED


async def lead(
    settings: FineTuningSettings, request: Envelope[TrainingRequested], parallel: DataParallel, device: torch.device
) -> int:
    """Rank 0: the service's handler on the request, with the group as its trainer."""
    handover = _Handover(parallel, device)
    store = open_store(settings.platform.resolved_artifact_store_uri)
    try:
        async with EventPublisher(settings.platform, service=SERVICE) as publisher:
            events = _RecordedEvents(publisher)
            service = FineTuningService(
                config=ServiceConfig(
                    defaults=load_defaults(settings.defaults_file),
                    min_examples_per_label=settings.min_examples_per_label,
                    worker_name=f"{settings.worker_name}/{parallel.world_size}x{device.type}",
                    work_dir=settings.work_dir,
                    code_version=await asyncio.to_thread(code_version),
                    fresh_snapshot_wait_s=settings.fresh_snapshot_wait_s,
                    max_job_seconds=settings.max_job_seconds,
                ),
                datasets=ArtifactDatasetReader(store),
                registry=ModelRegistry(store),
                trainer={
                    task: _LeadingTrainer(trainer, handover)
                    for task, trainer in trainers(settings, device=str(device)).items()
                },
                events=events,
            )
            try:
                await service.on_training_requested(request)
            except Exception:  # the service reports a transient failure, then raises it (for a redelivery)
                if not events.published or not isinstance(events.published[-1], TrainingFailed):
                    raise
            return exit_status(events.published)
    finally:
        handover.release()


def follow(settings: FineTuningSettings, parallel: DataParallel, device: torch.device) -> int:
    """A rank other than 0: train the job rank 0 hands over, if any; write and publish nothing."""
    handed = parallel.broadcast(None, device if device.type == "cuda" else None)
    if handed is None:
        logger.info("nothing to train: rank 0 refused the request or had trained it already")
        return EXIT_COMPLETED
    job: TrainingJob
    data: TrainingData | InstructionData
    job, data = handed  # type: ignore[misc]  # what rank 0's _Handover sent
    trainer = trainers(settings, device=str(device))[job.task]
    try:
        trainer.train(job, data, settings.work_dir / f"rank-{parallel.rank}", on_progress=lambda _: None)
    except TrainingRejected as error:  # decided with every rank (the time limit): rank 0 reports it
        logger.info("training stopped", extra={"reason": error.reason, "rank": parallel.rank})
    return EXIT_COMPLETED


def _keep_running_to_report(signum: int, _frame: object) -> None:
    """``torchrun`` stops every rank when one fails; rank 0 stays long enough to see its
    collective fail and report ``training.failed`` (``torchrun`` kills it after its grace period)."""
    logger.warning("stop signal received: reporting the job's failure first", extra={"signal": signum})


def main(argv: Sequence[str] | None = None) -> int:
    flush_subnormal_floats()  # before torch starts its threads: they copy the flag
    faulthandler.register(signal.SIGUSR1, all_threads=True)  # `kill -USR1 <pid>`: where is a hung rank?
    arguments = parse_arguments(argv)
    settings = FineTuningSettings()
    platform = settings.platform
    configure_logging(service=SERVICE, level=platform.log_level, log_format=platform.log_format, platform=platform)
    request = read_request(arguments.request)
    parallel, device = start_group(settings, arguments.device)
    logger.info(
        "distributed training process started",
        extra={"rank": parallel.rank, "world_size": parallel.world_size, "device": str(device)},
    )
    try:
        if parallel.is_main:
            signal.signal(signal.SIGTERM, _keep_running_to_report)
            return asyncio.run(lead(settings, request, parallel, device))
        return follow(settings, parallel, device)
    finally:
        if dist.is_initialized():
            dist.destroy_process_group()


if __name__ == "__main__":
    sys.exit(main())
