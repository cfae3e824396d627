"""Settings shared by every service and tool, read from ``LLMOPS_*`` environment variables.

Each service keeps its own settings class (prefix ``LLMOPS_<SERVICE>_``) and holds a
``PlatformSettings`` for the values all services share. Settings are always passed in,
never read from a module-level global.
"""

from __future__ import annotations

from pathlib import Path

from pydantic import Field
from pydantic_settings import BaseSettings, SettingsConfigDict

from llmops_config.kafka import KafkaSettings
from llmops_config.tls import TlsSettings


class PlatformSettings(BaseSettings):
    """Where the shared infrastructure lives. Defaults describe the embedded single-machine stack."""

    model_config = SettingsConfigDict(env_prefix="LLMOPS_", extra="ignore", use_attribute_docstrings=True)

    kafka_bootstrap_servers: str = "127.0.0.1:9092"
    """Comma-separated Kafka bootstrap servers."""

    kafka_controller_port: int = 9093
    """Port of the embedded KRaft controller listener (embedded broker only)."""

    kafka_client_id_prefix: str = "llmops"
    """Prefix of every Kafka client id, so broker logs show which service connected."""

    kafka: KafkaSettings = Field(default_factory=KafkaSettings)
    """Kafka security, credentials and topic replication (``LLMOPS_KAFKA_*``, see ``llmops_config.kafka``)."""

    triton_host: str = "127.0.0.1"
    """Host of the Triton Inference Server."""

    triton_http_port: int = 8000
    """Triton HTTP/REST port (health, KServe v2 HTTP)."""

    triton_grpc_port: int = 8001
    """Triton gRPC port (inference and model control)."""

    triton_metrics_port: int = 8002
    """Triton Prometheus metrics port."""

    triton_pool_hosts: str = ""
    """A pool of Tritons serving one model repository: comma-separated hosts, each listening on the
    ports above. Empty: the one server at ``triton_host``. The deployment service loads every version
    on each member; the gateway balances requests over them (round robin). ``docs/cluster.md``."""

    triton_pool_dns: bool = False
    """A pool found by DNS instead: every address ``triton_host`` resolves to is a member (a
    Kubernetes headless Service lists its ready pods), looked up again every ``triton_pool_refresh_s``."""

    triton_pool_refresh_s: float = Field(default=15.0, gt=0, le=3600)
    """How often the deployment service and the gateway look the pool's members up again (members
    that came or went: the deployment service loads the live versions on a new one, the gateway
    sends it traffic)."""

    gateway_port: int = 50051
    """gRPC port of the inference gateway."""

    ops_port: int = 50052
    """gRPC port of the operator API (``llmops.ops.v1``, served by the deployment service)."""

    var_dir: Path = Path("var")
    """Local state: broker data, Triton model repository, SQLite stores, reports, pid files, logs."""

    artifact_store_uri: str = ""
    """fsspec URI of the artifact store; empty means ``<var_dir>/artifacts``. ``s3://bucket/prefix`` in production."""

    metrics_host: str = "127.0.0.1"
    """Where every service's ``/metrics`` listens (each on its own port). Loopback on a laptop; set
    ``LLMOPS_METRICS_HOST=0.0.0.0`` in a container so Prometheus can scrape it."""
    log_level: str = "INFO"
    """Log level of every service."""

    log_format: str = Field(default="json", pattern="^(json|text)$")
    """``json`` for one JSON object per line (machines), ``text`` for people."""

    log_file: Path | None = None
    """Write the log to this file, rotated by size, instead of stderr; ``make up`` sets it to each
    service's ``<var_dir>/logs/<name>.log``."""

    log_max_bytes: int = Field(default=50 * 1024 * 1024, ge=1024)
    """Size at which a log file is rotated (``<name>.log`` becomes ``<name>.log.1``, ...)."""

    log_backup_count: int = Field(default=5, ge=1)
    """Rotated log files kept per service (older ones are deleted)."""

    jaeger_host: str = "127.0.0.1"
    """Host of the local trace backend (Jaeger) that ``make up`` starts when ``build/go/bin/jaeger`` exists."""

    jaeger_otlp_grpc_port: int = Field(default=4317, ge=1, le=65535)
    """Jaeger's OTLP/gRPC receiver."""

    jaeger_otlp_http_port: int = Field(default=4318, ge=1, le=65535)
    """Jaeger's OTLP/HTTP receiver: the services export their spans here (``OTEL_EXPORTER_OTLP_ENDPOINT``)."""

    jaeger_ui_port: int = Field(default=16686, ge=1, le=65535)
    """Jaeger's UI and HTTP query API (``/api/traces?service=...``)."""

    jaeger_query_grpc_port: int = Field(default=16685, ge=1, le=65535)
    """Jaeger's gRPC query API."""

    jaeger_health_port: int = Field(default=13133, ge=1, le=65535)
    """Jaeger's health check (``/status``)."""

    tls: TlsSettings = Field(default_factory=TlsSettings)
    """TLS of the gRPC endpoints and their clients (``LLMOPS_TLS_*``, see ``llmops_config.tls``)."""

    audit_retention_ms: int = Field(default=-1, ge=-1)
    """``retention.ms`` of the audit topic ``llmops.audit.v1`` (never compacted): ``-1`` keeps it
    forever; set the legal retention period in production (10 years: ``315360000000``)."""

    evidently_workspace: str = ""
    """Directory of the Evidently workspace the monitoring and evaluation reports are added to (a
    project per model, a snapshot per window and per evaluation); empty means ``<var_dir>/evidently``."""

    stack_start_timeout: float = Field(default=300.0, gt=0)
    """Seconds ``llmops stack up`` (``make up``) waits for the whole stack to be healthy."""

    ui_host: str = "127.0.0.1"
    """Where ``llmops ui`` (``make ui``, Evidently's UI on the workspace) listens."""

    ui_port: int = Field(default=8085, ge=1, le=65535)
    """Port of ``llmops ui`` (8000-8002 are Triton's)."""

    console_port: int = Field(default=8086, ge=1, le=65535)
    """Port of the platform page ``llmops ui`` serves beside Evidently's UI (models, champion and
    canary, the retraining chain, latest windows)."""

    @property
    def jaeger_otlp_endpoint(self) -> str:
        """The OTLP/HTTP endpoint the services export to (``OTEL_EXPORTER_OTLP_ENDPOINT``)."""
        return f"http://{self.jaeger_host}:{self.jaeger_otlp_http_port}"

    @property
    def jaeger_ui_url(self) -> str:
        return f"http://{self.jaeger_host}:{self.jaeger_ui_port}"

    @property
    def triton_grpc_url(self) -> str:
        return f"{self.triton_host}:{self.triton_grpc_port}"

    @property
    def triton_metrics_url(self) -> str:
        return f"http://{self.triton_host}:{self.triton_metrics_port}/metrics"

    @property
    def triton_http_url(self) -> str:
        return f"http://{self.triton_host}:{self.triton_http_port}"

    @property
    def resolved_artifact_store_uri(self) -> str:
        return self.artifact_store_uri or str((self.var_dir / "artifacts").resolve())

    @property
    def resolved_evidently_workspace(self) -> Path:
        return Path(self.evidently_workspace) if self.evidently_workspace else self.var_dir / "evidently"

    @property
    def model_repository(self) -> Path:
        """Triton's model repository (explicit model control)."""
        return self.var_dir / "triton" / "models"
