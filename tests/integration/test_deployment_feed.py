"""The deployments topic replayed from its first event into deployment state, then followed; and a
topic followed from its end."""

from __future__ import annotations

import asyncio
import uuid
from datetime import UTC, datetime
from typing import Any

import pytest

from llmops_config import PlatformSettings
from llmops_events import Envelope
from llmops_events.v1 import DeploymentCanaryStarted, DeploymentPromoted, DeploymentRequested
from llmops_messaging import EventPublisher
from llmops_serving import DeploymentFeed, ModelDeployment

pytestmark = pytest.mark.integration


async def test_the_feed_replays_history_then_follows_new_events(kafka_settings: PlatformSettings) -> None:
    model = f"feed-{uuid.uuid4().hex[:8]}"
    async with EventPublisher(kafka_settings, service="test") as publisher:
        await publisher.publish(DeploymentRequested(model_name=model, model_version=1, artifact_uri="x"))
        await publisher.publish(DeploymentPromoted(model_name=model, model_version=1))

        changes: asyncio.Queue[tuple[ModelDeployment, Envelope[Any]]] = asyncio.Queue()
        feed = DeploymentFeed(kafka_settings, client_id="test", on_change=lambda s, e: changes.put_nowait((s, e)))
        await feed.start()
        try:
            assert feed.get(model) == ModelDeployment(model, champion_version=1)

            await publisher.publish(
                DeploymentCanaryStarted(model_name=model, model_version=2, champion_version=1, traffic_share=0.25)
            )
            while True:
                state, _ = await asyncio.wait_for(changes.get(), timeout=10)
                if state.model_name == model and state.canary_version == 2:
                    break
            assert feed.get(model) == ModelDeployment(model, champion_version=1, canary_version=2, canary_share=0.25)
        finally:
            await feed.stop()


async def test_a_follower_from_the_end_sees_only_events_published_after_it_started(
    kafka_settings: PlatformSettings,
) -> None:
    from llmops_events.topics import INFERENCE
    from llmops_events.v1 import InferenceLogged
    from llmops_messaging.follower import TopicFollower

    model = f"follow-{uuid.uuid4().hex[:8]}"

    def logged(request_id: str) -> InferenceLogged:
        return InferenceLogged(
            request_id=request_id,
            tenant="t",
            model_name=model,
            model_version=1,
            route="champion",
            text="where is my card?",
            label="card_arrival",
            confidence=0.9,
            latency_ms=3.0,
            served_at=datetime.now(UTC),
        )

    seen: asyncio.Queue[str] = asyncio.Queue()

    def on_event(envelope: Envelope[Any]) -> None:
        if isinstance(envelope.data, InferenceLogged) and envelope.data.model_name == model:
            seen.put_nowait(envelope.data.request_id)

    async with EventPublisher(kafka_settings, service="test") as publisher:
        await publisher.publish(logged("before"))
        follower = TopicFollower(kafka_settings, INFERENCE, client_id="test", on_event=on_event, start_at="end")
        await follower.start()
        try:
            assert follower.caught_up.is_set()
            await publisher.publish(logged("after"))
            assert await asyncio.wait_for(seen.get(), timeout=10) == "after"
            assert seen.empty()
        finally:
            await follower.stop()
