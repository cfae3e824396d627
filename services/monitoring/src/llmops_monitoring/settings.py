"""Settings of the monitoring service (``LLMOPS_MONITORING_*``)."""

from __future__ import annotations

from pathlib import Path

from pydantic import Field
from pydantic_settings import BaseSettings, SettingsConfigDict

from llmops_config import PlatformSettings
from llmops_storage.state_store import StateStoreSettings


class MonitoringSettings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="LLMOPS_MONITORING_", extra="ignore", use_attribute_docstrings=True)

    platform: PlatformSettings = Field(default_factory=PlatformSettings)
    """Shared settings (``LLMOPS_*``)."""

    state_store: StateStoreSettings = Field(default_factory=StateStoreSettings)
    """Where the drift policy's memory (cooldowns, request counts) lives: the service's SQLite by
    default, the shared PostgreSQL of ``LLMOPS_STATE_STORE_URL`` when replicas take over from each
    other across machines (``single_active``)."""

    policy_file: Path = Path("deploy/policies/drift.yaml")
    """The drift policy (signals, thresholds, debounce, cooldown); built-in defaults when absent."""

    window_size: int = Field(default=1000, ge=1)
    """A window closes at this many inference events (per model name and version)..."""

    window_seconds: float | None = Field(default=3600, gt=0)
    """...or when its first event is this old (None: count-based only)."""

    reference_size: int = Field(default=2000, ge=10)
    """Validation examples (a seeded sample) in a model version's reference; held-out conversations
    in a causal LM version's."""

    embedding_sample_size: int = Field(default=1000, ge=10)
    """Texts of a window that are embedded for the embedding drift signal (a seeded sample beyond it)."""

    embedding_batch_size: int = Field(default=64, ge=1)
    """Texts per forward pass of the sentence encoder."""

    encoder_model: str = "default"
    """Sentence encoder for embedding drift: the packaged all-MiniLM-L6-v2 by default, or a model folder/id."""

    max_tracked_requests: int = Field(default=100_000, ge=1)
    """Served request ids remembered for joining late feedback labels (the oldest are forgotten)."""

    tick_seconds: float = Field(default=5.0, gt=0)
    """How often time-based windows are checked for expiry."""

    detect_output_pii: bool = True
    """Run ``llmops_privacy``'s PII detectors over generated answers (the placeholders the gateway
    left where it redacted count whatever this says)."""

    seed: int = 13
    """Seed of the reference and embedding samples."""

    metrics_port: int = 9106
    """Port of the Prometheus metrics endpoint (0 disables it)."""

    group_id: str = "monitoring"
    """Kafka consumer group."""

    single_active: bool = False
    """Run as one active replica with standbys (``docs/scale-out.md``): before opening anything the
    process waits for the Kafka-elected lease (group ``<group_id>-active`` on the one-partition
    deployments topic) and stops if it loses it. Off for the embedded default's single process; on
    wherever more than one replica runs."""

    lease_session_timeout_s: float = Field(default=10.0, ge=6, le=300)
    """With ``single_active``: how long the lease's holder may miss heartbeats before a standby
    takes over (the Kafka consumer session timeout of the lease group)."""

    @property
    def state_dir(self) -> Path:
        return self.platform.var_dir / "monitoring"

    @property
    def state_db(self) -> Path:
        return self.state_dir / "monitoring.db"

    @property
    def reference_cache_dir(self) -> Path:
        return self.state_dir / "references"
