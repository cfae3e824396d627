"""Privacy requests: erasure of a tenant's curated records, or of one data subject's.

``llmops.privacy.v1`` is written by operators only (the broker's ACLs give no service the right to
write it) and kept forever: a rebuilt ingestion service that replays the bus re-applies every
erasure, so an erased record can never come back from a replay.
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Annotated, ClassVar

from pydantic import Field

from llmops_events import topics
from llmops_events.base import EventData
from llmops_events.v1.audit import PRINCIPAL_REGEX

MAX_SUBJECT_RECORDS = 10_000
"""Most record ids one request may name (a larger erasure is several requests, or a tenant's)."""

SubjectRecordId = Annotated[str, Field(min_length=1, max_length=256, examples=["ticket-83121"])]


class ErasureRequested(EventData):
    """Erase a tenant's curated records (``subject_record_ids`` absent), or only the records of one
    data subject named by their record ids, from the feature store and from every later snapshot;
    model versions trained on them are marked in their lineage."""

    event_type: ClassVar[str] = "llmops.erasure.requested.v1"
    topic: ClassVar[str] = topics.PRIVACY
    key_field: ClassVar[str] = "tenant"

    tenant: str = Field(min_length=1, max_length=128, examples=["acme-bank"])
    """The tenant whose records are erased (``RecordSubmitted.tenant``)."""

    subject_record_ids: list[SubjectRecordId] | None = Field(
        default=None, min_length=1, max_length=MAX_SUBJECT_RECORDS, examples=[["ticket-83121", "ticket-83122"]]
    )
    """The producer's record ids (``RecordSubmitted.record_id``, or the curated id
    ``<tenant>/<record id>``) of the subject's records; absent: every record of the tenant."""

    requested_by: str = Field(min_length=3, max_length=256, pattern=PRINCIPAL_REGEX, examples=["operator:alice"])
    """Who asked, as the audit trail names principals (``operator:<name>``)."""

    reason: str = Field(default="", max_length=2048, examples=["GDPR art. 17 request #4711"])
    """Why, in a sentence (kept in the audit event)."""

    requested_at: datetime = Field(default_factory=lambda: datetime.now(UTC))
    """When the erasure was asked for. For a tenant's erasure, a record of the tenant submitted up
    to this moment (its CloudEvent ``time``) stays erased even if it is consumed only later."""
