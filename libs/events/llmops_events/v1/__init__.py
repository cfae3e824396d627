"""Version 1 of every event of the platform (DESIGN.md, Contracts)."""

from llmops_events.v1.audit import AuditAction, AuditRecorded, publish_audit
from llmops_events.v1.datasets import DatasetContent, DatasetSnapshotted, OffsetRange
from llmops_events.v1.deployment import (
    DeploymentCanaryStarted,
    DeploymentPromoted,
    DeploymentRequested,
    DeploymentRolledBack,
)
from llmops_events.v1.evaluation import Decision, EvaluationCompleted, RuleFailure
from llmops_events.v1.inference import FeedbackSubmitted, Generation, InferenceLogged
from llmops_events.v1.monitoring import MonitoringDriftDetected, MonitoringReportCreated
from llmops_events.v1.privacy import ErasureRequested
from llmops_events.v1.records import ChatTurn, InstructionSubmitted, OutputFormat, RecordSubmitted
from llmops_events.v1.training import (
    Hyperparameters,
    TrainingCompleted,
    TrainingFailed,
    TrainingProgressed,
    TrainingReason,
    TrainingRequested,
    TrainingStarted,
    TrainingTask,
)

__all__ = [
    "AuditAction",
    "AuditRecorded",
    "ChatTurn",
    "DatasetContent",
    "DatasetSnapshotted",
    "Decision",
    "DeploymentCanaryStarted",
    "DeploymentPromoted",
    "DeploymentRequested",
    "DeploymentRolledBack",
    "ErasureRequested",
    "EvaluationCompleted",
    "FeedbackSubmitted",
    "Generation",
    "Hyperparameters",
    "InferenceLogged",
    "InstructionSubmitted",
    "MonitoringDriftDetected",
    "MonitoringReportCreated",
    "OffsetRange",
    "OutputFormat",
    "RecordSubmitted",
    "RuleFailure",
    "TrainingCompleted",
    "TrainingFailed",
    "TrainingProgressed",
    "TrainingReason",
    "TrainingRequested",
    "TrainingStarted",
    "TrainingTask",
    "publish_audit",
]
