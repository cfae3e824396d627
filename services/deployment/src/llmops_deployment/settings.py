"""Settings of the deployment service (``LLMOPS_DEPLOYMENT_*``)."""

from __future__ import annotations

from pathlib import Path

from pydantic import Field
from pydantic_settings import BaseSettings, SettingsConfigDict

from llmops_config import PlatformSettings
from llmops_deployment.domain.canary import CanaryPolicy, TooFewRequests
from llmops_models.kinds import ServingOptions


class DeploymentSettings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="LLMOPS_DEPLOYMENT_", extra="ignore", use_attribute_docstrings=True)

    platform: PlatformSettings = Field(default_factory=PlatformSettings)
    """Shared settings (``LLMOPS_*``)."""

    group_id: str = "deployment"
    """Kafka consumer group for evaluation decisions."""

    model_names: list[str] = Field(default_factory=list)
    """Only deploy and reconcile these models (empty: every model). Lets several deployment
    services share one Triton, one per set of models."""

    metrics_port: int = 9104
    """Port of the Prometheus metrics endpoint (0 disables it)."""

    canary_traffic_share: float = Field(default=0.1, gt=0, le=1)
    """Share of requests the gateway routes to a canary."""

    canary_min_requests: int = Field(default=50, ge=1)
    """Canary requests observed before it can be promoted on the evidence."""

    canary_max_seconds: float = Field(default=600.0, gt=0)
    """After this long a canary is judged on what it has seen."""

    canary_on_too_few_requests: TooFewRequests = TooFewRequests.ROLLBACK
    """What the time limit does to a canary that served fewer than ``canary_min_requests``:
    ``rollback`` (the champion stays), ``extend`` (keep judging until it has), or ``promote``."""

    canary_max_error_rate: float = Field(default=0.05, ge=0, le=1)
    """A canary failing more requests than this is rolled back."""

    canary_max_latency_ratio: float = Field(default=2.0, gt=0)
    """A canary slower than this multiple of the champion's mean latency (plus the slack) is rolled back."""

    canary_latency_slack_ms: float = Field(default=20.0, ge=0)
    """Milliseconds added to the latency limit."""

    canary_max_confidence_drop: float = Field(default=0.15, ge=0, le=1)
    """A canary whose mean confidence is this much below the champion's is rolled back."""

    check_interval_s: float = Field(default=2.0, gt=0)
    """How often a canary is judged."""

    reconcile_interval_s: float = Field(default=10.0, gt=0)
    """How often Triton is compared with the deployments topic (and repaired after a restart)."""

    retire_grace_s: float = Field(default=3.0, ge=0)
    """Seconds between publishing a routing change and unloading the version it retired,
    so the gateway has switched before the old version disappears."""

    instance_count: int = Field(default=1, ge=1)
    """Triton model instances per deployed version."""

    max_batch_size: int = Field(default=64, ge=1)
    """Largest batch Triton's dynamic batcher forms."""

    dynamic_batching: bool = True
    """Let Triton merge concurrent requests into batches."""

    max_queue_delay_us: int = Field(default=2000, ge=0)
    """How long the dynamic batcher waits to fill a batch."""

    torch_threads: int = Field(default=0, ge=0)
    """Torch threads per model instance; 0 lets torch decide."""

    warmup_requests: int = Field(default=4, ge=0)
    """Requests sent to a freshly loaded version before it takes traffic."""

    load_timeout_s: float = Field(default=300.0, gt=0)
    """Longest a model load may take."""

    triton_retry_base_delay_s: float = Field(default=0.5, ge=0)
    """While Triton cannot be reached, a go-live is tried again after a wait drawn in [0, cap]
    (full jitter); the first cap is this, and each further one doubles …"""

    triton_retry_max_delay_s: float = Field(default=10.0, ge=0)
    """… up to this."""

    triton_retry_budget_s: float = Field(default=60.0, ge=0)
    """No new try starts this long after the first one failed; the version then stays
    ``deploying`` and the reconciler resumes it once Triton answers."""

    resume_max_attempts: int = Field(default=3, ge=1)
    """Times the reconciler resumes a version left ``deploying`` before it rolls it back
    (``resume_exhausted``)."""

    @property
    def state_db(self) -> Path:
        return self.platform.var_dir / "state" / "deployment.db"

    @property
    def canary_policy(self) -> CanaryPolicy:
        return CanaryPolicy(
            min_requests=self.canary_min_requests,
            max_seconds=self.canary_max_seconds,
            on_too_few_requests=self.canary_on_too_few_requests,
            max_error_rate=self.canary_max_error_rate,
            max_latency_ratio=self.canary_max_latency_ratio,
            latency_slack_ms=self.canary_latency_slack_ms,
            max_confidence_drop=self.canary_max_confidence_drop,
        )

    @property
    def serving_options(self) -> ServingOptions:
        return ServingOptions(
            instance_count=self.instance_count,
            max_batch_size=self.max_batch_size,
            dynamic_batching=self.dynamic_batching,
            max_queue_delay_us=self.max_queue_delay_us,
            torch_threads=self.torch_threads,
        )
