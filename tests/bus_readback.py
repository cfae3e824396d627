"""Reading the bus back after a chaos test: what a topic holds, and whether a group has handled it.

Shared by the single-broker SIGKILL harness and the three-broker kill test."""

from __future__ import annotations

import asyncio
from typing import Any

from aiokafka import AIOKafkaConsumer, TopicPartition
from aiokafka.admin import AIOKafkaAdminClient

from llmops_config.kafka import KafkaClientOptions
from llmops_events import Envelope, KafkaRecord, decode
from llmops_messaging.admin import topic_partitions


async def read_topic(kafka: KafkaClientOptions, topic: str) -> list[Envelope[Any]]:
    """Every decodable event on ``topic``, from the start to its current end."""
    partitions = [TopicPartition(topic, p) for p in await topic_partitions(kafka, topic)]
    consumer = AIOKafkaConsumer(**kafka.aiokafka(), enable_auto_commit=False, group_id=None)
    await consumer.start()
    events: list[Envelope[Any]] = []
    try:
        ends = await consumer.end_offsets(partitions)
        consumer.assign(partitions)
        await consumer.seek_to_beginning(*partitions)
        async with asyncio.timeout(60):
            while [tp for tp, end in ends.items() if await consumer.position(tp) < end]:
                for messages in (await consumer.getmany(timeout_ms=300, max_records=5_000)).values():
                    for m in messages:
                        try:
                            events.append(decode(KafkaRecord(m.key, m.value or b"", tuple(m.headers or ()))))
                        except Exception:
                            continue
    finally:
        await consumer.stop()
    return events


async def count_on_topic(kafka: KafkaClientOptions, topic: str) -> int:
    """Messages on ``topic`` (the sum of its partitions' end offsets)."""
    partitions = [TopicPartition(topic, p) for p in await topic_partitions(kafka, topic)]
    consumer = AIOKafkaConsumer(**kafka.aiokafka(), enable_auto_commit=False, group_id=None)
    await consumer.start()
    try:
        return sum((await consumer.end_offsets(partitions)).values())
    finally:
        await consumer.stop()


async def caught_up(kafka: KafkaClientOptions, group: str, *topics: str) -> bool:
    """Whether ``group`` has committed every message of ``topics`` (a restarted service handled
    the redelivered ones, and everything published since)."""
    partitions = [TopicPartition(topic, p) for topic in topics for p in await topic_partitions(kafka, topic)]
    admin = AIOKafkaAdminClient(**kafka.aiokafka())
    await admin.start()
    try:
        committed = await admin.list_consumer_group_offsets(group)
    finally:
        await admin.close()
    consumer = AIOKafkaConsumer(**kafka.aiokafka(), enable_auto_commit=False, group_id=None)
    await consumer.start()
    try:
        ends = await consumer.end_offsets(partitions)
    finally:
        await consumer.stop()
    return all(end == 0 or (tp in committed and committed[tp].offset >= end) for tp, end in ends.items())
