"""Monitoring reports and the drift detections that close the loop."""

from __future__ import annotations

from datetime import datetime
from typing import Any, ClassVar

from pydantic import Field

from llmops_events import topics
from llmops_events.base import EventData
from llmops_events.names import ModelName


class _MonitoringEvent(EventData):
    topic: ClassVar[str] = topics.MONITORING
    key_field: ClassVar[str] = "model_name"

    model_name: ModelName
    model_version: int | None = None


class MonitoringReportCreated(_MonitoringEvent):
    event_type: ClassVar[str] = "llmops.monitoring.report_created.v1"

    report_id: str
    window_start: datetime
    window_end: datetime
    window_size: int = Field(ge=0)
    signals: dict[str, float] = Field(default_factory=dict)
    """Drift score per signal (embedding, descriptors, prediction, confidence, quality)."""
    drifted: dict[str, bool] = Field(default_factory=dict)
    html_uri: str
    json_uri: str


class MonitoringDriftDetected(_MonitoringEvent):
    event_type: ClassVar[str] = "llmops.monitoring.drift_detected.v1"

    report_id: str
    kind: str = Field(examples=["drift", "quality"])
    breached: list[str] = Field(default_factory=list)
    evidence: dict[str, Any] = Field(default_factory=dict)
    report_uri: str
