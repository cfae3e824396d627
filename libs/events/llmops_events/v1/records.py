"""Records published by enterprise systems: the raw material of training data."""

from __future__ import annotations

from datetime import datetime
from typing import ClassVar

from pydantic import Field

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
        return self.record_id or f"{self.tenant}:{self.source}"
