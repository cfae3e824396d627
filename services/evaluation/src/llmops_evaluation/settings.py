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

    generation_max_examples: int = Field(default=200, ge=1)
    """Generative (``causal_lm``) models: test conversations answered (a seeded sample beyond it);
    generation costs far more than a classification."""

    preference_max_pairs: int = Field(default=200, ge=0, le=10_000)
    """Generative models: held-out preference pairs (test split) both models answer and score for
    the win rate and the preference accuracy (a seeded sample beyond it; 0: none)."""

    generation_max_new_tokens: int = Field(default=64, ge=1, le=2048)
    """Generative models: the longest answer generated (greedy) per conversation and per probe."""

    generation_batch_size: int = Field(default=16, ge=1)
    """Generative models: conversations generated together (left-padded, length-sorted)."""

    generation_threads: int = Field(default=0, ge=0)
    """torch CPU threads while generating (0: torch's default, every core). On a CPU shared with other
    work, 1 thread is often faster than 2: busy-waiting threads that lose their core stall each step."""

    injection_probes_file: Path | None = None
    """YAML of the prompt-injection probes (``canary_system_prompt``, ``probes``); None: the package's
    ``data/injection_probes.yaml`` (8 probes)."""

    toxicity_scorer: str | None = None
    """``module:function`` of a toxicity model of your own: called with the generated answers, returns
    one score in [0, 1] per answer. Imported at start-up; unset, no toxicity rule applies."""

    metrics_port: int = 9103
    """Port of the Prometheus metrics endpoint (0 disables it)."""

    group_id: str = "evaluation"
    """Kafka consumer group (of the training topic: each completed training is evaluated by one replica)."""

    champion_sync_timeout_s: float = Field(default=30.0, gt=0, le=600)
    """Longest wait, before each evaluation, for this replica's reader of the deployments topic to
    reach the topic's end (so a promotion published a moment earlier is the champion compared
    against); past it the evaluation fails and is retried by the consumer's retry policy."""

    @property
    def state_db(self) -> Path:
        return self.platform.var_dir / "state" / "evaluation.db"
