"""Settings of the fine-tuning service (``LLMOPS_FINE_TUNING_*``), with the platform's shared ones."""

from __future__ import annotations

import os
import socket
from pathlib import Path

from pydantic import Field
from pydantic_settings import BaseSettings, SettingsConfigDict

from llmops_config import PlatformSettings

_REPO_ROOT = Path(__file__).resolve().parents[4]


class FineTuningSettings(BaseSettings):
    """How the fine-tuning service takes and runs jobs."""

    model_config = SettingsConfigDict(env_prefix="LLMOPS_FINE_TUNING_", extra="ignore", use_attribute_docstrings=True)

    platform: PlatformSettings = Field(default_factory=PlatformSettings)
    """Shared settings (Kafka, var dir, artifact store), read from ``LLMOPS_*``."""

    group_id: str = "fine-tuning"
    """Kafka consumer group; replicas in the same group share the training requests."""

    defaults_file: Path = _REPO_ROOT / "deploy" / "training" / "defaults.yaml"
    """YAML file with the default base model, hyperparameters and trainer policy."""

    min_examples_per_label: int = Field(default=8, ge=1)
    """A dataset with fewer training examples for any label is refused (``too_few_examples``)."""

    num_threads: int = Field(default=2, ge=0)
    """torch CPU threads for training (0: torch's default)."""

    progress_interval_s: float = Field(default=5.0, gt=0)
    """At most one ``training.progressed`` event per this many seconds (plus the first and last step)."""

    max_job_seconds: float = Field(default=3600, gt=0)
    """Time limit of one job: the trainer stops a job that has run this long (``training.failed``,
    ``time_limit_exceeded``, not retried). The consumer's ``max_poll_interval_ms`` is set above it."""

    fresh_snapshot_wait_s: float = Field(default=180.0, ge=0)
    """A drift or quality retraining without a dataset id first waits this long for a snapshot cut
    after the request (ingestion cuts one on seeing it), so it learns from the drifted traffic."""

    max_attempts: int = Field(default=3, ge=1)
    """Deliveries of one request that failed for a transient reason before it goes to the DLQ."""

    metrics_port: int = Field(default=9102, ge=0)
    """Port of the Prometheus ``/metrics`` endpoint (0 disables it)."""

    worker_name: str = Field(default_factory=lambda: f"{socket.gethostname()}-{os.getpid()}")
    """Name of this replica in ``training.started`` events."""

    @property
    def state_dir(self) -> Path:
        return self.platform.var_dir / "fine_tuning"

    @property
    def state_db(self) -> Path:
        """SQLite file of the request ids this consumer group has handled."""
        return self.state_dir / "processed_events.db"

    @property
    def work_dir(self) -> Path:
        """Local scratch space for a job's files before they are published."""
        return self.state_dir / "work"
