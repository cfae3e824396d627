"""Mean confidence per served version, read from the inference log (for canary judgement)."""

from __future__ import annotations

from collections import defaultdict
from typing import Any

from llmops_config import PlatformSettings
from llmops_events import Envelope
from llmops_events.topics import INFERENCE
from llmops_events.v1 import InferenceLogged
from llmops_messaging.follower import TopicFollower


class ConfidenceTracker:
    """Follows ``llmops.inference.v1`` from its end; sums confidences per (model, version)."""

    def __init__(self, platform: PlatformSettings, *, client_id: str = "deployment") -> None:
        self._sums: dict[tuple[str, int], list[float]] = defaultdict(lambda: [0, 0.0])
        self._follower = TopicFollower(
            platform,
            INFERENCE,
            service=client_id,
            client_id=f"{client_id}-confidence",
            on_event=self._add,
            start_at="end",
        )

    def totals(self, model_name: str, version: int) -> tuple[int, float]:
        """(requests logged, sum of their confidences) since the tracker started."""
        count, total = self._sums.get((model_name, version), (0, 0.0))
        return int(count), float(total)

    async def start(self) -> None:
        await self._follower.start()

    async def stop(self) -> None:
        await self._follower.stop()

    def _add(self, envelope: Envelope[Any]) -> None:
        logged = envelope.data
        if isinstance(logged, InferenceLogged):
            entry = self._sums[(logged.model_name, logged.model_version)]
            entry[0] += 1
            entry[1] += logged.confidence
