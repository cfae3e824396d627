"""Settings of the deployment service (``LLMOPS_DEPLOYMENT_*``)."""

from __future__ import annotations

from pathlib import Path
from typing import Literal

import yaml
from pydantic import Field
from pydantic_settings import BaseSettings, SettingsConfigDict

from llmops_config import PlatformSettings
from llmops_deployment.domain.canary import CanaryPolicy, GenerationCanaryPolicy, TooFewRequests, generation_policy
from llmops_models.kinds import ServingOptions
from llmops_models.kinds.causal_lm import serving as lm_serving


class DeploymentSettings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="LLMOPS_DEPLOYMENT_", extra="ignore", use_attribute_docstrings=True)

    platform: PlatformSettings = Field(default_factory=PlatformSettings)
    """Shared settings (``LLMOPS_*``)."""

    group_id: str = "deployment"
    """Kafka consumer group for evaluation decisions."""

    single_active: bool = False
    """Run as one active replica with standbys (``docs/scale-out.md``): before opening anything the
    process waits for the Kafka-elected lease (group ``<group_id>-active`` on the one-partition
    deployments topic) and stops if it loses it. Off for the embedded default's single process; on
    wherever more than one replica runs."""

    lease_session_timeout_s: float = Field(default=10.0, ge=6, le=300)
    """With ``single_active``: how long the lease's holder may miss heartbeats before a standby
    takes over (the Kafka consumer session timeout of the lease group)."""

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

    canary_policy_file: Path = Path("deploy/policies/canary.yaml")
    """The canary thresholds of generative models (section ``causal_lm``: time to first token,
    tokens/s, output length against the champion, error rate, minimum requests); the classifier's
    are the ``CANARY_*`` settings above. Unknown keys are an error; a missing file, the defaults."""

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
    """Torch threads per model instance; 0: the kind's default (the causal LM on CPU: every core; the
    classifier: torch's)."""

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

    audit_read_timeout_s: float = Field(default=30.0, gt=0)
    """Longest ``rollback`` without a version spends reading the audit topic for the previous
    champion; past it, the previous champion this process knows is used (and the delay logged)."""

    instance_kind: Literal["KIND_CPU", "KIND_GPU"] = "KIND_CPU"
    """Triton ``instance_group`` kind: ``KIND_GPU`` runs the model on CUDA where a GPU exists."""

    # ---- generative models (kind causal_lm): one Triton model, one LoRA adapter per version ----

    causal_lm_model: str = lm_serving.MODEL_NAME
    """Triton name of the one model serving the causal-LM base for every version (the gateway's
    setting of the same name must agree)."""

    causal_lm_base_model: str = "smollm2"
    """The base it serves: ``smollm2`` (the packaged GGUF), a ``.gguf`` file or a model folder.
    Adapters trained on other weights are refused (``base_model_mismatch``)."""

    causal_lm_adapters_dir: Path | None = None
    """Where deployed adapters are written, one folder per version (default
    ``<model repository>/../adapters/<causal_lm_model>``)."""

    causal_lm_max_adapters: int = Field(default=lm_serving.DEFAULT_MAX_ADAPTERS, ge=1)
    """Adapters the model keeps loaded at most (the least recently used idle one is evicted)."""

    causal_lm_max_running: int = Field(default=lm_serving.DEFAULT_MAX_RUNNING, ge=1)
    """Sequences decoded together at most."""

    causal_lm_max_queued: int = Field(default=lm_serving.DEFAULT_MAX_QUEUED, ge=0)
    """Requests waiting for a decoding slot at most; more are refused (``RESOURCE_EXHAUSTED``)."""

    causal_lm_max_new_tokens: int = Field(default=lm_serving.DEFAULT_MAX_NEW_TOKENS, ge=1)
    """The largest ``max_tokens`` a request may ask for."""

    causal_lm_max_prompt_tokens: int = Field(default=lm_serving.DEFAULT_MAX_PROMPT_TOKENS, ge=1)
    """Longer prompts are refused (``INVALID_ARGUMENT``)."""

    causal_lm_stream_interval_tokens: int = Field(default=lm_serving.DEFAULT_STREAM_INTERVAL_TOKENS, ge=1)
    """After a stream's first token (sent at once), text is streamed when this many tokens wait …"""

    causal_lm_stream_interval_ms: int = Field(default=lm_serving.DEFAULT_STREAM_INTERVAL_MS, ge=0)
    """… or this long after the previous message (0: no time limit); the last chunk goes at once.
    Fewer messages per token through Triton, its gRPC stream and the gateway."""

    causal_lm_prefill_threads: int = Field(default=0, ge=0)
    """Torch threads of a prefill (new prompts' forward pass); 0: the decoding threads
    (``LLMOPS_DEPLOYMENT_TORCH_THREADS``; 0 there: every core on CPU)."""

    causal_lm_precision: Literal["auto", "float32", "bfloat16"] = "auto"
    """``auto``: bfloat16 where native (CUDA, AMX CPUs), else float32."""

    smoke_generations: int = Field(default=3, ge=1, le=32)
    """Generations (from the version's validation split) an adapter must answer before it takes traffic."""

    smoke_max_tokens: int = Field(default=16, ge=1, le=256)
    """New tokens per smoke-test generation."""

    smoke_timeout_s: float = Field(default=120.0, gt=0)
    """Longest one smoke-test generation may take (the first loads the adapter)."""

    @property
    def adapters_dir(self) -> Path:
        """Absolute: Triton's working directory may differ from ours."""
        folder = self.causal_lm_adapters_dir or lm_serving.default_adapters_dir(
            self.platform.model_repository, self.causal_lm_model
        )
        return folder.resolve()

    @property
    def generation_canary_policy(self) -> GenerationCanaryPolicy:
        """The ``causal_lm`` section of ``canary_policy_file`` (``ValueError`` when it is wrong)."""
        path = self.canary_policy_file
        document = yaml.safe_load(path.read_text()) if path.is_file() else None
        document = document or {}
        if not isinstance(document, dict) or not isinstance(document.get("causal_lm") or {}, dict):
            raise ValueError(f"{path}: expected a mapping with a 'causal_lm' mapping")
        unknown = sorted(set(document) - {"causal_lm"})
        if unknown:
            raise ValueError(f"{path}: unknown section(s) {unknown}; known: ['causal_lm']")
        return generation_policy(document.get("causal_lm") or {}, lifecycle=self.canary_policy)

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
            instance_kind=self.instance_kind,
        )
