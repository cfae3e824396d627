"""The policy gate's decision on a candidate model version."""

from __future__ import annotations

from enum import StrEnum
from typing import Any, ClassVar

from pydantic import BaseModel, ConfigDict, Field

from llmops_events import topics
from llmops_events.base import EventData
from llmops_events.names import ModelName, ModelVersion


class Decision(StrEnum):
    APPROVED = "approved"
    REJECTED = "rejected"


class RuleFailure(BaseModel):
    """One failed policy rule: a code for machines and a sentence for people."""

    model_config = ConfigDict(frozen=True)

    rule: str = Field(examples=["min_accuracy"])
    message: str = Field(examples=["accuracy 0.81 is below the minimum 0.85"])
    observed: float | str | None = None
    threshold: float | str | None = None


class EvaluationCompleted(EventData):
    event_type: ClassVar[str] = "llmops.evaluation.completed.v1"
    topic: ClassVar[str] = topics.EVALUATIONS
    key_field: ClassVar[str] = "version_key"

    model_name: ModelName
    model_version: ModelVersion
    candidate_artifact_uri: str
    champion_version: int | None = None
    decision: Decision
    reasons: list[RuleFailure] = Field(default_factory=list)
    candidate_metrics: dict[str, Any] = Field(default_factory=dict)
    champion_metrics: dict[str, Any] = Field(default_factory=dict)
    report_uri: str | None = None
    """URI of the Evidently report (HTML; a JSON twin sits beside it)."""

    @property
    def version_key(self) -> str:
        return f"{self.model_name}:{self.model_version}"
