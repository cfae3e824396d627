"""Topic names, their keys and their broker configuration: the bus layout of DESIGN.md in one place."""

from __future__ import annotations

from dataclasses import dataclass, field, replace

DAY_MS = 24 * 60 * 60 * 1000


@dataclass(frozen=True, slots=True)
class TopicSpec:
    """A topic of the platform: its name, what its key means and how the broker keeps it."""

    name: str
    key: str
    partitions: int
    config: dict[str, str] = field(default_factory=dict)
    description: str = ""


RECORDS_RAW = "llmops.records.raw.v1"
RECORDS_DLQ = "llmops.records.dlq.v1"
DATASETS = "llmops.datasets.v1"
TRAINING = "llmops.training.v1"
EVALUATIONS = "llmops.evaluations.v1"
DEPLOYMENTS = "llmops.deployments.v1"
INFERENCE = "llmops.inference.v1"
FEEDBACK = "llmops.feedback.v1"
MONITORING = "llmops.monitoring.v1"
AUDIT = "llmops.audit.v1"
PRIVACY = "llmops.privacy.v1"

AUDIT_RETENTION_MS = -1
"""The audit topic's default ``retention.ms``: kept forever (``-1``). Override with the setting
``LLMOPS_AUDIT_RETENTION_MS`` (``platform_topics``) where a legal retention period applies."""

# Event streams keep a week; the DLQ a month so an operator can replay after a fix;
# state topics (datasets, deployments) are compacted *and* kept, since the latest event
# per key is the source of truth a service reconciles from on restart.
_STREAM = {"cleanup.policy": "delete", "retention.ms": str(7 * DAY_MS)}
_STATE = {"cleanup.policy": "compact,delete", "retention.ms": "-1", "min.compaction.lag.ms": str(DAY_MS)}

TOPICS: tuple[TopicSpec, ...] = (
    TopicSpec(RECORDS_RAW, "record id", 6, _STREAM, "Raw records published by enterprise systems."),
    TopicSpec(
        RECORDS_DLQ,
        "original key",
        1,
        {"cleanup.policy": "delete", "retention.ms": str(30 * DAY_MS)},
        "Messages no handler could accept, with error.stage/error.reason/error.detail headers.",
    ),
    TopicSpec(DATASETS, "dataset id", 1, _STATE, "Immutable dataset snapshots with lineage."),
    TopicSpec(TRAINING, "model name", 3, _STREAM, "Training requests, progress and outcomes."),
    TopicSpec(EVALUATIONS, "model version", 1, _STREAM, "Evaluation decisions with metrics and reasons."),
    TopicSpec(DEPLOYMENTS, "model name", 1, _STATE, "Deployment state changes; the source of truth for serving."),
    TopicSpec(
        INFERENCE,
        "request id",
        6,
        {"cleanup.policy": "delete", "retention.ms": str(3 * DAY_MS)},
        "One event per served prediction.",
    ),
    TopicSpec(FEEDBACK, "request id", 3, _STREAM, "True labels and ratings for served requests."),
    TopicSpec(MONITORING, "model name", 1, _STREAM, "Monitoring reports and drift detections."),
    # Never compacted: compaction would keep one event per model and lose the history the
    # audit exists for (and the default rollback reads). One partition: one total order.
    TopicSpec(
        AUDIT,
        "model name (else tenant, else principal)",
        1,
        {"cleanup.policy": "delete", "retention.ms": str(AUDIT_RETENTION_MS)},
        "Audit trail: promotions, rollbacks, canary verdicts, overrides, policy changes, denied keys, erasures.",
    ),
    # Erasure requests: written by operators only, kept forever (never compacted: each request is
    # its own fact), so an ingestion rebuilt by replaying the bus re-applies every erasure.
    TopicSpec(
        PRIVACY,
        "tenant",
        1,
        {"cleanup.policy": "delete", "retention.ms": "-1"},
        "Erasure requests: a tenant's records, or a data subject's by record id.",
    ),
)

TOPICS_BY_NAME: dict[str, TopicSpec] = {spec.name: spec for spec in TOPICS}


def prefixed(name: str, prefix: str) -> str:
    """``name`` as it is on the wire of a cluster shared under ``prefix`` (``LLMOPS_KAFKA_TOPIC_PREFIX``).
    Idempotent: a name that already carries the prefix (read back from a message, a DLQ header) is
    left as it is, so applying it at every I/O boundary never doubles it."""
    return name if not prefix or name.startswith(prefix) else prefix + name


def unprefixed(name: str, prefix: str) -> str:
    """The platform's name (a constant of this module) of the wire topic ``name``."""
    return name.removeprefix(prefix) if prefix else name


def platform_topics(*, audit_retention_ms: int = AUDIT_RETENTION_MS) -> tuple[TopicSpec, ...]:
    """``TOPICS`` with the audit topic's retention from settings (``PlatformSettings.audit_retention_ms``)."""
    return tuple(
        replace(spec, config={**spec.config, "retention.ms": str(audit_retention_ms)}) if spec.name == AUDIT else spec
        for spec in TOPICS
    )
