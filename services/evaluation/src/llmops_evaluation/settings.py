"""Settings of the evaluation service (``LLMOPS_EVALUATION_*``)."""

from __future__ import annotations

from pathlib import Path

from pydantic import Field
from pydantic_settings import BaseSettings, SettingsConfigDict

from llmops_config import PlatformSettings


class EvaluationSettings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="LLMOPS_EVALUATION_", extra="ignore", use_attribute_docstrings=True)

    platform: PlatformSettings = Field(default_factory=PlatformSettings)
    """Shared settings (``LLMOPS_*``)."""

    policy_dir: Path = Path("deploy/policies")
    """Folder of policy files: ``<model name>.yaml``, else ``default.yaml``."""

    golden_set_dir: Path | None = None
    """Optional folder of ``<model name>.csv`` (columns text,label) evaluated in addition to the test split."""

    max_test_examples: int = Field(default=2000, ge=1)
    """Cap on test examples (a seeded sample beyond it), so an evaluation takes seconds, not minutes."""

    latency_examples: int = Field(default=50, ge=1)
    """Examples timed one by one (batch 1) for the latency percentiles."""

    seed: int = 13
    """Seed of the test-set sample, the perturbations and the bootstrap."""

    metrics_port: int = 9103
    """Port of the Prometheus metrics endpoint (0 disables it)."""

    group_id: str = "evaluation"
    """Kafka consumer group."""

    @property
    def state_db(self) -> Path:
        return self.platform.var_dir / "state" / "evaluation.db"
