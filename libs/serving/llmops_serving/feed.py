"""Follow the deployments topic from its first event and keep a :class:`DeploymentBook` current.

Every reader of deployment state (the gateway's router, the deployment service's reconciler,
monitoring's champion lookup) replays the whole topic on start instead of resuming from a
committed offset: the state is the fold of all events, not of the ones since the last run.
"""

from __future__ import annotations

import inspect
from collections.abc import Awaitable, Callable
from typing import Any

from llmops_config import PlatformSettings
from llmops_events import Envelope
from llmops_events.topics import DEPLOYMENTS
from llmops_messaging.follower import TopicFollower
from llmops_serving.state import DeploymentBook, ModelDeployment

ChangeCallback = Callable[[ModelDeployment, Envelope[Any]], Awaitable[None] | None]


class DeploymentFeed:
    """A group-less reader of the deployments topic; ``book`` holds the folded state."""

    def __init__(
        self,
        platform: PlatformSettings,
        *,
        client_id: str,
        on_change: ChangeCallback | None = None,
        topic: str = DEPLOYMENTS,
    ) -> None:
        self.book = DeploymentBook()
        self._on_change = on_change
        self._follower = TopicFollower(platform, topic, client_id=client_id, on_event=self._apply, start_at="beginning")
        self.caught_up = self._follower.caught_up

    def get(self, model_name: str) -> ModelDeployment | None:
        return self.book.get(model_name)

    async def start(self, *, timeout: float = 30.0, follow: bool = True) -> None:
        """Replay the topic up to its current end (so ``book`` is complete), then keep following
        it (unless ``follow`` is false: a one-off replay, e.g. for the topic's only writer)."""
        await self._follower.start(timeout=timeout, follow=follow)

    async def stop(self) -> None:
        await self._follower.stop()

    async def _apply(self, envelope: Envelope[Any]) -> None:
        state = self.book.apply(envelope.data)
        if state is not None and self._on_change is not None:
            result = self._on_change(state, envelope)
            if inspect.isawaitable(result):
                await result
