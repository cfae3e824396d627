"""The outside systems the ingestion service talks to, as the small interfaces handlers use."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime
from typing import Any, Protocol


class FeatureStore(Protocol):
    """Where curated records live (Feast by default). Blocking calls: run them off the loop."""

    def push(self, rows: Sequence[dict[str, Any]]) -> None:
        """Append rows to the offline store and upsert them online; pushing a row twice is harmless."""

    def historical(self, record_ids: Sequence[str], *, as_of: datetime) -> Any:
        """A DataFrame with one row per id: its features as known at ``as_of``."""


class EventSink(Protocol):
    """Publishes events (``llmops_messaging.EventPublisher``)."""

    async def publish(self, data: Any, *, id: str | None = None) -> Any: ...
