"""The retry policy against a real broker (issue 13): a handler failing through an outage longer
than immediate redelivery would last is redelivered with backoff, in order, and nothing reaches
the DLQ; a handler that never recovers has its message dead-lettered once, after the budget."""

from __future__ import annotations

import asyncio
import time
import uuid
from typing import Any

import pytest
from aiokafka import AIOKafkaConsumer
from aiokafka.admin import AIOKafkaAdminClient, NewTopic

from llmops_config import PlatformSettings
from llmops_config.kafka import kafka_client_options
from llmops_events import Envelope, encode
from llmops_events.topics import RECORDS_DLQ
from llmops_events.v1 import RecordSubmitted
from llmops_messaging import (
    DeadLetterQueue,
    EventConsumer,
    EventPublisher,
    Outcome,
    ProcessedEvents,
    RetryPolicy,
    create_broker,
    subscribe,
)

pytestmark = pytest.mark.integration

FAST = RetryPolicy(max_attempts=100, base_delay_s=0.05, max_delay_s=0.2, jitter=1.0, budget_s=1.0)


async def _new_topic(settings: PlatformSettings) -> str:
    topic = f"test.retry.{uuid.uuid4().hex[:8]}"
    admin = AIOKafkaAdminClient(**kafka_client_options(settings, service="test").aiokafka())
    await admin.start()
    try:
        await admin.create_topics([NewTopic(topic, num_partitions=1, replication_factor=1)])
    finally:
        await admin.close()
    return topic


async def _dead_letters_of(settings: PlatformSettings, topic: str, *, timeout: float) -> list[Any]:
    """Every DLQ entry that came from ``topic``, reading for ``timeout`` seconds."""
    reader = AIOKafkaConsumer(
        RECORDS_DLQ,
        **kafka_client_options(settings, service="test").aiokafka(),
        auto_offset_reset="earliest",
        group_id=f"r-{uuid.uuid4().hex}",
    )
    await reader.start()
    found: list[Any] = []
    try:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            for records in (await reader.getmany(timeout_ms=300)).values():
                found.extend(m for m in records if dict(m.headers).get("error.topic") == topic.encode())
    finally:
        await reader.stop()
    return found


async def _run(settings: Any, tmp_path: Any, handle: Any, count: int, until: Any) -> tuple[str, list[Outcome]]:
    topic = await _new_topic(settings)
    group = f"retry-{uuid.uuid4().hex[:8]}"
    publisher = EventPublisher(settings, service="tests")
    broker = create_broker(settings, service="tests")
    outcomes: list[Outcome] = []
    consumer = EventConsumer(
        group_id=group,
        handlers={RecordSubmitted: handle},
        dlq=DeadLetterQueue(publisher),
        processed=ProcessedEvents(tmp_path / f"{group}.db", consumer=group),
        retry=FAST,
    )
    subscribe(broker, consumer, topic, on_outcome=outcomes.append)
    await publisher.start()
    await broker.start()
    try:
        for index in range(count):
            envelope = Envelope.wrap(RecordSubmitted(tenant="t", source="s", text=f"text {index}"), source="/t")
            await publisher.publish_record(topic, encode(envelope))
        async with asyncio.timeout(30):
            while not until(outcomes):
                await asyncio.sleep(0.05)
    finally:
        await broker.stop()
        await publisher.stop()
    return topic, outcomes


async def test_an_outage_is_ridden_out_in_order_with_nothing_on_the_dlq(kafka_settings, tmp_path) -> None:
    down_until: list[float] = []
    written: list[str] = []

    async def handle(envelope: Envelope[Any]) -> None:
        if not down_until:
            down_until.append(time.monotonic() + 0.5)  # the store goes down at the first write, for 0.5 s
        if time.monotonic() < down_until[0]:
            raise ConnectionError("artifact store unavailable")
        written.append(envelope.data.text)

    topic, outcomes = await _run(
        kafka_settings, tmp_path, handle, 3, lambda outcomes: outcomes.count(Outcome.HANDLED) == 3
    )
    assert written == ["text 0", "text 1", "text 2"]  # once each, in the partition's order
    assert Outcome.DEAD_LETTERED not in outcomes
    assert await _dead_letters_of(kafka_settings, topic, timeout=2) == []


async def test_a_handler_that_never_recovers_dead_letters_once_after_the_budget(kafka_settings, tmp_path) -> None:
    async def handle(envelope: Envelope[Any]) -> None:
        raise ConnectionError("down for good")

    started = time.monotonic()
    topic, outcomes = await _run(
        kafka_settings, tmp_path, handle, 1, lambda outcomes: Outcome.DEAD_LETTERED in outcomes
    )
    assert time.monotonic() - started >= FAST.budget_s
    assert outcomes.count(Outcome.DEAD_LETTERED) == 1
    letters = await _dead_letters_of(kafka_settings, topic, timeout=3)
    assert len(letters) == 1
    headers = dict(letters[0].headers)
    assert headers["error.reason"] == b"handler_failed" and b"down for good" in headers["error.detail"]
