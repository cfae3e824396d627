"""Records and instruction examples published by enterprise systems: the raw material of training data."""

from __future__ import annotations

from datetime import datetime
from typing import Annotated, Any, ClassVar, Literal

from pydantic import BaseModel, ConfigDict, Field

from llmops_events import topics
from llmops_events.base import EventData


class RecordSubmitted(EventData):
    """A text record, labelled or not, submitted by an enterprise system for curation."""

    event_type: ClassVar[str] = "llmops.record.submitted.v1"
    topic: ClassVar[str] = topics.RECORDS_RAW
    key_field: ClassVar[str] = "partition_key"

    tenant: str = Field(min_length=1, max_length=128, examples=["acme-bank"])
    """The customer or business unit the record belongs to."""

    source: str = Field(min_length=1, max_length=128, examples=["zendesk"])
    """The system that produced the record (CRM, ticketing, chat, feedback)."""

    text: str = Field(min_length=1, examples=["I still have not received my new card, what should I do?"])
    """The record's text. Length limits are applied by the ingestion service's settings."""

    record_id: str | None = Field(default=None, max_length=256, examples=["ticket-83121"])
    """Stable id of the record; when absent, a hash of tenant and normalised text is used."""

    label: str | None = Field(default=None, max_length=256, examples=["card_arrival"])
    """The true label (intent) when known."""

    metadata: dict[str, str] = Field(default_factory=dict, examples=[{"channel": "email"}])
    """Free string-to-string attributes carried along with the record."""

    occurred_at: datetime | None = Field(default=None, examples=["2026-11-28T09:30:00Z"])
    """When the record happened at the source (RFC 3339)."""

    @property
    def partition_key(self) -> str:
        """data.record_id, or ``<tenant>:<source>`` when the record has none."""
        return self.record_id or f"{self.tenant}:{self.source}"


class ChatTurn(BaseModel):
    """One turn of a chat: who speaks and what they say."""

    model_config = ConfigDict(frozen=True, use_attribute_docstrings=True)

    role: Literal["system", "user", "assistant"]
    """``system`` (instructions to the model, at most one, first), ``user`` or ``assistant``."""

    content: str = Field(min_length=1, examples=["My card has not arrived yet, what should I do?"])
    """What the turn says. Length limits (characters per turn, tokens per chat) are applied by the
    ingestion service's settings."""


class OutputFormat(BaseModel):
    """The format an answer must have, when the task has one: a closed set of labels, or a JSON
    Schema the answer (a JSON document) must validate against. The final assistant turn of the
    example must already have it."""

    model_config = ConfigDict(frozen=True, use_attribute_docstrings=True)

    labels: list[Annotated[str, Field(min_length=1, max_length=256)]] | None = Field(
        default=None, min_length=1, max_length=1000, examples=[["card_arrival", "lost_card"]]
    )
    """The answer is exactly one of these labels."""

    json_schema: dict[str, Any] | None = Field(
        default=None,
        examples=[{"type": "object", "properties": {"intent": {"type": "string"}}, "required": ["intent"]}],
    )
    """The answer is a JSON document valid against this JSON Schema (2020-12; the ingestion service
    accepts the subset of keywords its README lists)."""


class InstructionSubmitted(EventData):
    """A chat-style instruction example (system, user and assistant turns, the last one being the
    reference answer), submitted by an enterprise system for curation into instruction-tuning data."""

    event_type: ClassVar[str] = "llmops.instruction.submitted.v1"
    topic: ClassVar[str] = topics.RECORDS_RAW
    key_field: ClassVar[str] = "partition_key"

    tenant: str = Field(min_length=1, max_length=128, examples=["acme-bank"])
    """The customer or business unit the example belongs to."""

    source: str = Field(min_length=1, max_length=128, examples=["support-playbook"])
    """The system that produced the example."""

    record_id: str | None = Field(default=None, max_length=256, examples=["playbook-1042"])
    """Stable id of the example; when absent, a hash of tenant and normalised turns is used."""

    messages: list[ChatTurn] = Field(
        max_length=64,
        examples=[
            [
                {"role": "system", "content": "You are the bank's support assistant."},
                {"role": "user", "content": "My card has not arrived yet, what should I do?"},
                {"role": "assistant", "content": "Cards arrive within 5 working days; after that, order a new one."},
            ]
        ],
    )
    """The turns in order: an optional leading ``system`` turn, then ``user`` and ``assistant``
    alternating, starting with ``user`` and ending with the ``assistant``'s reference answer."""

    output_format: OutputFormat | None = None
    """The answer's format, when the task has one (a label set, or a JSON Schema)."""

    metadata: dict[str, str] = Field(default_factory=dict, examples=[{"channel": "chat"}])
    """Free string-to-string attributes carried along with the example."""

    occurred_at: datetime | None = Field(default=None, examples=["2026-11-28T09:30:00Z"])
    """When the example was written at the source (RFC 3339)."""

    @property
    def partition_key(self) -> str:
        """data.record_id, or ``<tenant>:<source>`` when the record has none."""
        return self.record_id or f"{self.tenant}:{self.source}"
