"""The audit trail on ``llmops.audit.v1``: what the service records there, and its history read
back from the topic's beginning (the topic is never compacted: every record is still there)."""

from __future__ import annotations

from typing import Any

from llmops_config import PlatformSettings
from llmops_events import Envelope
from llmops_events.topics import AUDIT
from llmops_events.v1 import AuditRecorded
from llmops_messaging import EventPublisher
from llmops_messaging.follower import TopicFollower


class AuditTrail:
    """Publishes audit records (acks=all, through the service's publisher) and reads them back."""

    def __init__(
        self,
        publisher: EventPublisher,
        platform: PlatformSettings,
        *,
        client_id: str,
        read_timeout_s: float,
        topic: str = AUDIT,
    ) -> None:
        self._publisher = publisher
        self._platform = platform
        self._client_id = client_id
        self._read_timeout_s = read_timeout_s
        self._topic = topic

    async def record(self, event: AuditRecorded, *, correlationid: str | None, id: str | None) -> None:
        await self._publisher.publish(event, correlationid=correlationid, id=id)

    async def history(self, model_name: str) -> list[AuditRecorded]:
        """Every audit record of ``model_name``, oldest first: the topic read from its beginning up
        to its end as it is now (``TimeoutError`` past ``read_timeout_s``). One partition, one order."""
        found: list[AuditRecorded] = []

        def collect(envelope: Envelope[Any]) -> None:
            if isinstance(envelope.data, AuditRecorded) and envelope.data.model == model_name:
                found.append(envelope.data)

        follower = TopicFollower(
            self._platform, self._topic, client_id=self._client_id, on_event=collect, start_at="beginning"
        )
        try:
            await follower.start(timeout=self._read_timeout_s, follow=False)
        finally:
            await follower.stop()
        return found
