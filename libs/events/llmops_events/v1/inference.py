"""Served predictions and the feedback that later tells whether they were right."""

from __future__ import annotations

from datetime import datetime
from typing import ClassVar

from pydantic import Field, model_validator

from llmops_events import topics
from llmops_events.base import EventData


class InferenceLogged(EventData):
    """One served prediction; the text is redacted before it leaves the gateway."""

    event_type: ClassVar[str] = "llmops.inference.logged.v1"
    topic: ClassVar[str] = topics.INFERENCE
    key_field: ClassVar[str] = "request_id"

    request_id: str
    tenant: str = "default"
    model_name: str
    model_version: int = Field(ge=1)
    text: str
    """The request text after PII redaction."""
    label: str
    confidence: float = Field(ge=0, le=1)
    scores: dict[str, float] = Field(default_factory=dict)
    latency_ms: float = Field(ge=0)
    route: str = Field(default="champion", examples=["champion", "canary"])
    served_at: datetime


class FeedbackSubmitted(EventData):
    """The true label and/or a rating for a served request, known some time after serving."""

    event_type: ClassVar[str] = "llmops.feedback.submitted.v1"
    topic: ClassVar[str] = topics.FEEDBACK
    key_field: ClassVar[str] = "request_id"

    request_id: str
    true_label: str | None = None
    rating: int | None = Field(default=None, ge=1, le=5)
    comment: str | None = None

    @model_validator(mode="after")
    def _says_something(self) -> FeedbackSubmitted:
        if self.true_label is None and self.rating is None:
            raise ValueError("feedback needs a true_label or a rating")
        return self
