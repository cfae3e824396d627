"""A topic-name prefix (``LLMOPS_KAFKA_TOPIC_PREFIX``) on the session's real broker: ``llmops topics
create`` (the CLI, a real process) creates the platform's topics under the prefix, and the platform's
own I/O (``EventPublisher``, a FastStream consumer attached with ``subscribe``, a ``TopicFollower``)
takes the platform's topic names and reads and writes only the prefixed ones: two platforms can
share one cluster."""

from __future__ import annotations

import asyncio
import os
import subprocess
import sys
import uuid
from pathlib import Path
from typing import Any

import pytest
from aiokafka import AIOKafkaConsumer, TopicPartition

from llmops_config import PlatformSettings
from llmops_config.kafka import kafka_client_options, kafka_environment
from llmops_events import Envelope
from llmops_events.topics import RECORDS_RAW, TOPICS
from llmops_events.v1 import RecordSubmitted
from llmops_messaging import DeadLetterQueue, EventConsumer, EventPublisher, Outcome, ProcessedEvents, subscribe
from llmops_messaging.admin import topic_partitions
from llmops_messaging.broker import create_broker
from llmops_messaging.follower import TopicFollower
from llmops_stack.kafka import fetch_topics

pytestmark = [pytest.mark.integration, pytest.mark.timeout(300)]

REPO = Path(__file__).resolve().parents[2]


def _prefixed(settings: PlatformSettings, prefix: str) -> PlatformSettings:
    return settings.model_copy(update={"kafka": settings.kafka.model_copy(update={"topic_prefix": prefix})})


async def _messages(settings: PlatformSettings, wire_topic: str) -> int:
    options = kafka_client_options(settings, service="test")
    partitions = [TopicPartition(wire_topic, p) for p in await topic_partitions(options, wire_topic)]
    assert partitions, f"{wire_topic} does not exist"
    consumer = AIOKafkaConsumer(**options.aiokafka(), enable_auto_commit=False, group_id=None)
    await consumer.start()
    try:
        return sum((await consumer.end_offsets(partitions)).values())
    finally:
        await consumer.stop()


async def test_the_platform_runs_under_a_topic_prefix(kafka_settings: PlatformSettings, tmp_path: Path) -> None:
    prefix = f"team-{uuid.uuid4().hex[:6]}."
    settings = _prefixed(kafka_settings, prefix)

    # The CLI creates every platform topic under the prefix (and none without it).
    env = {k: v for k, v in os.environ.items() if not k.startswith("LLMOPS_") or k.startswith("LLMOPS_TLS_")}
    env |= {**kafka_environment(settings), "LLMOPS_VAR_DIR": str(tmp_path / "var")}
    cli = subprocess.run(
        [sys.executable, "-m", "llmops_cli", "topics", "create"],
        cwd=REPO,
        env=env,
        capture_output=True,
        text=True,
        timeout=180,
        check=False,
    )
    assert cli.returncode == 0, cli.stdout + cli.stderr
    present = await fetch_topics(kafka_client_options(settings, service="test"), timeout=30)
    assert {prefix + spec.name for spec in TOPICS} <= set(present)

    # The platform's clients name RECORDS_RAW; the bytes go to and come from the prefixed topic.
    group = f"test-prefix-{uuid.uuid4().hex[:8]}"
    applied: list[Envelope[Any]] = []
    outcomes: list[Outcome] = []
    followed: list[Envelope[Any]] = []
    publisher = EventPublisher(settings, service="tests")
    broker = create_broker(settings, service="tests")
    follower = TopicFollower(settings, RECORDS_RAW, client_id="tests", on_event=followed.append, start_at="beginning")

    async def handle(envelope: Envelope[Any]) -> None:
        applied.append(envelope)

    await publisher.start()
    try:
        consumer = EventConsumer(
            group_id=group,
            handlers={RecordSubmitted: handle},
            dlq=DeadLetterQueue(publisher),
            processed=ProcessedEvents(tmp_path / "processed.db", consumer=group),
            max_attempts=3,
        )
        subscribe(broker, consumer, RECORDS_RAW, on_outcome=outcomes.append)
        await broker.start()
        sent = await publisher.publish(
            RecordSubmitted(tenant="acme", source="tests", text="prefixed hello", record_id=f"r-{group}")
        )
        await follower.start(timeout=60)
        async with asyncio.timeout(90):
            while not any(event.id == sent.id for event in applied) or not followed:
                await asyncio.sleep(0.2)
    finally:
        await follower.stop()
        await broker.stop()
        await publisher.stop()
    assert follower.topic == prefix + RECORDS_RAW
    assert [event.id for event in followed] == [sent.id]
    assert outcomes and all(outcome is Outcome.HANDLED for outcome in outcomes)
    assert await _messages(settings, prefix + RECORDS_RAW) == 1
