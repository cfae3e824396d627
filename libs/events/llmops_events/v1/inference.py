"""Served predictions and generations, and the feedback that later tells whether they were right."""

from __future__ import annotations

from datetime import datetime
from typing import ClassVar, Literal

from pydantic import BaseModel, ConfigDict, Field, model_validator

from llmops_events import topics
from llmops_events.base import EventData
from llmops_events.names import ModelName
from llmops_events.v1.records import ChatTurn


class Generation(BaseModel):
    """What a causal LM was asked and answered for one request, texts redacted at the gateway."""

    model_config = ConfigDict(frozen=True, use_attribute_docstrings=True)

    messages: list[ChatTurn] = Field(max_length=256)
    """The chat as sent to the model (a prompt is one user turn), each turn redacted."""

    output: str
    """The generated text, redacted (what was generated before a cancellation, if cancelled)."""

    finish_reason: Literal["stop", "length", "cancelled", "error"]
    """``stop`` (end of answer or a stop string), ``length`` (max_tokens reached), ``cancelled``
    (the client went away or its deadline passed) or ``error``."""

    prompt_tokens: int = Field(ge=0)
    completion_tokens: int = Field(ge=0)

    time_to_first_token_ms: float | None = Field(default=None, ge=0)
    """From the gateway's call to Triton to the first generated text; None when none came."""

    tokens_per_s: float | None = Field(default=None, ge=0)
    """Decoding rate after the first token: (completion tokens - 1) / (last token - first token);
    None below two tokens."""


class InferenceLogged(EventData):
    """One served prediction or generation; texts are redacted before they leave the gateway.

    A generation (``generation`` set) has ``text`` = its last user turn, ``label`` empty and
    ``confidence`` 0: consumers of classifications skip events whose ``generation`` is set."""

    event_type: ClassVar[str] = "llmops.inference.logged.v1"
    topic: ClassVar[str] = topics.INFERENCE
    key_field: ClassVar[str] = "request_id"

    request_id: str
    tenant: str = "default"
    model_name: ModelName
    model_version: int = Field(ge=0)
    """The version that served it; 0 for a generation on the causal-LM base model alone (no adapter)."""
    text: str
    """The request text after PII redaction."""
    label: str
    confidence: float = Field(ge=0, le=1)
    scores: dict[str, float] = Field(default_factory=dict)
    latency_ms: float = Field(ge=0)
    route: str = Field(default="champion", examples=["champion", "canary"])
    served_at: datetime
    generation: Generation | None = None
    """Set for a generation (a ``causal_lm`` model): the chat, the output, token counts and timings."""


class FeedbackSubmitted(EventData):
    """The true label, a rating and/or a corrected answer for a served request, known some time
    after serving."""

    event_type: ClassVar[str] = "llmops.feedback.submitted.v1"
    topic: ClassVar[str] = topics.FEEDBACK
    key_field: ClassVar[str] = "request_id"

    request_id: str
    true_label: str | None = None
    rating: int | None = Field(default=None, ge=1, le=5)
    comment: str | None = None
    corrected_answer: str | None = None
    """The answer a generation should have given."""

    @model_validator(mode="after")
    def _says_something(self) -> FeedbackSubmitted:
        if self.true_label is None and self.rating is None and self.corrected_answer is None:
            raise ValueError("feedback needs a true_label or a rating, or a corrected_answer")
        return self
