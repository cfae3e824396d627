"""Three curated rows of one tenant (a plain text, one with PII, one with non-ASCII), as the Feast
store tests push them."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

from llmops_ingestion.domain.curation import curate
from llmops_ingestion.handlers import feature_row
from llmops_privacy.redaction import Redactor


def curated_rows(redactor: Redactor, prefix: str = "r") -> list[dict[str, Any]]:
    now = datetime(2026, 11, 28, 12, 30, 15, 123456, tzinfo=UTC)
    texts = ["Where is my card?", "Mail me at jane@example.com, call +44 20 7946 0958", "Où est ma carte ? ½ ²"]
    rows = []
    for index, text in enumerate(texts):
        curated = curate(
            tenant="acme",
            source="crm",
            text=text,
            label="card_arrival" if index else None,
            record_id=f"{prefix}-{index}",
            metadata={"channel": "chat"},
            occurred_at=now if index == 1 else None,
            redact=redactor.redact,
        )
        rows.append(feature_row(curated, now))
    return rows
