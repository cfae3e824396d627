"""Settings of the gateway (``LLMOPS_GATEWAY_*``)."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

from pydantic import Field, field_validator, model_validator
from pydantic_settings import BaseSettings, NoDecode, SettingsConfigDict

from llmops_config import PlatformSettings
from llmops_models.kinds.causal_lm import serving as causal_lm_serving


class GatewaySettings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="LLMOPS_GATEWAY_", extra="ignore", use_attribute_docstrings=True)

    platform: PlatformSettings = Field(default_factory=PlatformSettings)
    """Shared settings (``LLMOPS_*``); the gRPC port is ``LLMOPS_GATEWAY_PORT`` (``platform.gateway_port``)."""

    api_keys: Annotated[list[str], NoDecode] = Field(default_factory=list, repr=False)
    """Comma-separated API keys accepted in ``authorization: Bearer <key>``, each for any tenant with
    every scope and no limit of its own (the simple setting the demo uses); with no keys here nor in
    ``api_keys_file`` every call is refused."""

    api_keys_file: Path | None = None
    """Tenant-bound keys (YAML or JSON; hashes, tenants, scopes, rate and concurrency limits; format
    in ``deploy/security/api-keys.example.yaml``), re-read when it changes: keys rotate without a restart."""

    keys_reload_interval_s: float = Field(default=1.0, gt=0)
    """How often, at most, the keys file's modification time is checked."""

    keys_cache_size: int = Field(default=1024, ge=0)
    """Verified ``authorization`` values remembered (least recently used out), so a known caller's
    key is not hashed and compared with every key on each call; 0 turns the cache off. Emptied
    whenever the keys change."""

    keys_cache_ttl_s: float = Field(default=60.0, ge=0)
    """How long a verified ``authorization`` value is remembered."""

    require_client_cert: bool = False
    """Mutual TLS for the gateway too: clients must present a certificate signed by the CA
    (``LLMOPS_TLS_CA_FILE``) besides their API key. TLS itself is on unless ``LLMOPS_TLS_INSECURE``."""

    guardrails_file: Path = Path("deploy/policies/guardrails.yaml")
    """Guardrails of generation: prompt-injection patterns and per-tenant output redaction."""

    max_tenant_chars: int = Field(default=64, ge=1)
    """Longest accepted ``tenant``, in characters."""

    max_request_id_chars: int = Field(default=256, ge=1)
    """Longest accepted ``request_id``, in characters."""

    max_model_chars: int = Field(default=128, ge=1)
    """Longest accepted model name, in characters."""

    default_model: str = ""
    """Model used when a request names none; empty: the only deployed model, if exactly one is."""

    max_text_chars: int = Field(default=2000, ge=1)
    """Longest accepted request text, in characters."""

    max_batch_items: int = Field(default=64, ge=1)
    """Most items accepted in one ``PredictBatch``."""

    default_deadline_s: float = Field(default=10.0, gt=0)
    """Deadline of a call whose client set none: a hung Triton answers it with DEADLINE_EXCEEDED after this."""

    max_deadline_s: float = Field(default=30.0, gt=0)
    """Longest a call may take: a longer client deadline is cut to it."""

    max_in_flight: int = Field(default=256, ge=1)
    """Inference calls served at once (waiting on Triton included); one more is refused at once
    with RESOURCE_EXHAUSTED rather than queued."""

    triton_coalesce: bool = True
    """Coalesce classifier calls to one Triton model into one ``ModelInfer`` (up to the model's
    ``max_batch_size`` rows): those of the same event-loop turn, and those arriving while
    ``triton_max_calls_per_model`` calls are in flight. An idle gateway sends at once; a busy one
    makes far fewer RPCs per request. False: one Triton call per request."""

    triton_max_calls_per_model: int = Field(default=2, ge=1)
    """Coalesced calls in flight to one Triton model before further requests wait for the first to
    return (2: Triton has the next batch queued while it computes one)."""

    metrics_port: int = 9105
    """Port of the Prometheus metrics endpoint (0 disables it)."""

    host: str = "0.0.0.0"
    """Address the gRPC server binds."""

    log_queue_size: int = Field(default=10_000, ge=1)
    """Inference-log events buffered for publishing; beyond it they are dropped and counted."""

    log_publish_batch: int = Field(default=256, ge=1)
    """Most inference-log events redacted and published together by the background publisher."""

    log_linger_s: float = Field(default=0.25, ge=0, le=5)
    """How long the background publisher lets a batch of inference-log events gather before it
    redacts and publishes them (0: at once). Served requests never wait for it."""

    shutdown_grace_s: float = Field(default=5.0, ge=0)
    """On SIGTERM: how long in-flight calls may finish before they are cancelled."""

    log_drain_timeout_s: float = Field(default=10.0, ge=0)
    """On shutdown: how long buffered inference logs may take to publish; what is left is counted as dropped."""

    feed_timeout_s: float = Field(default=60.0, gt=0)
    """How long start-up may take to replay the deployments topic."""

    causal_lm_model: str = Field(default=causal_lm_serving.MODEL_NAME, min_length=1)
    """The Triton model serving the causal-LM base for every version (each version a LoRA adapter
    named ``triton_name(model, version)``); the deployment service's setting must name the same one."""

    default_generate_model: str = ""
    """Model used when a generation request names none; empty: the only causal_lm model deployed
    (or the base alias when none is)."""

    base_model_alias: str = ""
    """A model name that generates with the causal-LM base alone (no adapter), answered and logged
    as version 0, e.g. ``smollm2-base``; empty: none (generation then needs a deployed version)."""

    generate_max_messages: int = Field(default=32, ge=1)
    """Most chat turns in one generation request."""

    generate_max_chars: int = Field(default=8000, ge=1)
    """Most characters over all turns of one generation request (the model also limits prompt tokens)."""

    generate_max_tokens: int = Field(default=256, ge=1)
    """Largest ``max_tokens`` a request may ask for (keep it within the model's ``max_new_tokens``)."""

    generate_default_max_tokens: int = Field(default=128, ge=1)
    """``max_tokens`` of a request that sets none."""

    generate_max_temperature: float = Field(default=2.0, ge=0)
    """Highest accepted sampling temperature."""

    generate_max_stop: int = Field(default=4, ge=0)
    """Most stop strings in one request."""

    generate_max_stop_chars: int = Field(default=64, ge=1)
    """Longest stop string, in characters."""

    generate_default_deadline_s: float = Field(default=60.0, gt=0)
    """Deadline of a generation whose client set none (a generation takes longer than a prediction)."""

    generate_max_deadline_s: float = Field(default=300.0, gt=0)
    """Longest a generation may take: a longer client deadline is cut to it."""

    feedback_max_answer_chars: int = Field(default=8000, ge=1)
    """Longest ``corrected_answer`` accepted by ``SubmitFeedback``."""

    feedback_max_comment_chars: int = Field(default=2000, ge=1)
    """Longest ``comment`` accepted by ``SubmitFeedback``."""

    @field_validator("api_keys", mode="before")
    @classmethod
    def _split_keys(cls, value: object) -> object:
        if isinstance(value, str):
            return [key.strip() for key in value.split(",") if key.strip()]
        return value

    @model_validator(mode="after")
    def _deadlines(self) -> GatewaySettings:
        for default, maximum in (
            ("default_deadline_s", "max_deadline_s"),
            ("generate_default_deadline_s", "generate_max_deadline_s"),
        ):
            if getattr(self, default) > getattr(self, maximum):
                raise ValueError(
                    f"{default} ({getattr(self, default)}) is longer than {maximum} ({getattr(self, maximum)})"
                )
        if self.generate_default_max_tokens > self.generate_max_tokens:
            raise ValueError(
                f"generate_default_max_tokens ({self.generate_default_max_tokens}) is above"
                f" generate_max_tokens ({self.generate_max_tokens})"
            )
        return self

    @property
    def port(self) -> int:
        return self.platform.gateway_port
