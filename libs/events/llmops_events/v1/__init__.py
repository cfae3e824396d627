"""Version 1 of every event of the platform (DESIGN.md, Contracts)."""

from llmops_events.v1.datasets import DatasetSnapshotted, OffsetRange
from llmops_events.v1.deployment import (
    DeploymentCanaryStarted,
    DeploymentPromoted,
    DeploymentRequested,
    DeploymentRolledBack,
)
from llmops_events.v1.evaluation import Decision, EvaluationCompleted, RuleFailure
from llmops_events.v1.inference import FeedbackSubmitted, InferenceLogged
from llmops_events.v1.monitoring import MonitoringDriftDetected, MonitoringReportCreated
from llmops_events.v1.records import RecordSubmitted
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
    "DatasetSnapshotted",
    "Decision",
    "DeploymentCanaryStarted",
    "DeploymentPromoted",
    "DeploymentRequested",
    "DeploymentRolledBack",
    "EvaluationCompleted",
    "FeedbackSubmitted",
    "Hyperparameters",
    "InferenceLogged",
    "MonitoringDriftDetected",
    "MonitoringReportCreated",
    "OffsetRange",
    "RecordSubmitted",
    "RuleFailure",
    "TrainingCompleted",
    "TrainingFailed",
    "TrainingProgressed",
    "TrainingReason",
    "TrainingRequested",
    "TrainingStarted",
    "TrainingTask",
]
