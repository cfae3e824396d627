"""The outside systems the ingestion service talks to, as the small interfaces handlers use."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from datetime import datetime
from typing import Any, Protocol


class FeatureStore(Protocol):
    """Where curated records and instruction examples live (Feast by default: a feature view for
    each). Blocking calls: run them off the loop."""

    def push(self, rows: Sequence[dict[str, Any]]) -> None:
        """Append rows to the offline store and upsert them online; pushing a row twice is harmless."""

    def historical(self, record_ids: Sequence[str], *, as_of: datetime) -> Any:
        """A DataFrame with one row per id: its features as known at ``as_of``."""

    def push_instructions(self, rows: Sequence[dict[str, Any]]) -> None:
        """``push`` for instruction examples' rows."""

    def historical_instructions(self, record_ids: Sequence[str], *, as_of: datetime) -> Any:
        """``historical`` for instruction examples."""

    def erase(self, record_ids: Sequence[str], *, tenant: str | None = None) -> int:
        """Remove the rows of ``record_ids`` (and, with ``tenant``, every row of that tenant) from
        every view, online and offline; returns the offline rows removed."""


class ChatTokenCounter(Protocol):
    """Measures chats in tokens (blocking: call it from a worker thread)."""

    def count(self, chats: Sequence[Sequence[Mapping[str, str]]]) -> list[int]:
        """The length of each chat (``{"role", "content"}`` turns) in tokens of the chat template."""
        ...


class EventSink(Protocol):
    """Publishes events (``llmops_messaging.EventPublisher``)."""

    async def publish(self, data: Any, *, id: str | None = None) -> Any: ...
