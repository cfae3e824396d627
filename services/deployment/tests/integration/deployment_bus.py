"""Reading and rewriting topics for the deployment service's integration tests: a whole topic up to
its end, the audit records of a model, and a compaction done by hand.

(A module with a unique name rather than helpers in ``conftest.py``, as ingestion's harness.)
"""

from __future__ import annotations

import asyncio
import uuid
from typing import Any

from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, TopicPartition
from aiokafka.admin import AIOKafkaAdminClient, RecordsToDelete

from llmops_config import PlatformSettings
from llmops_config.kafka import kafka_client_options
from llmops_events import Envelope, KafkaRecord, decode
from llmops_events.topics import AUDIT, TOPICS_BY_NAME
from llmops_events.v1 import AuditRecorded


async def read_to_end(platform: PlatformSettings, topic: str) -> list[tuple[Any, int]]:
    """Every message of ``topic`` up to its end as it is now: (aiokafka message, partition)."""
    options = kafka_client_options(platform, service="test")
    consumer = AIOKafkaConsumer(**options.aiokafka(group_id=f"reader-{uuid.uuid4().hex}", enable_auto_commit=False))
    await consumer.start()
    try:
        partitions = [TopicPartition(topic, p) for p in range(TOPICS_BY_NAME[topic].partitions)]
        consumer.assign(partitions)
        await consumer.seek_to_beginning(*partitions)
        ends = await consumer.end_offsets(partitions)
        found: list[tuple[Any, int]] = []
        async with asyncio.timeout(60):
            while [p for p in partitions if await consumer.position(p) < ends[p]]:
                for partition, messages in (await consumer.getmany(timeout_ms=500)).items():
                    found += [(m, partition.partition) for m in messages if m.offset < ends[partition]]
        return found
    finally:
        await consumer.stop()


async def audit_records(platform: PlatformSettings, model: str) -> list[AuditRecorded]:
    """The audit records of ``model``, oldest first."""
    records = []
    for message, _ in await read_to_end(platform, AUDIT):
        envelope: Envelope[Any] = decode(KafkaRecord(message.key, message.value or b"", tuple(message.headers or ())))
        if isinstance(envelope.data, AuditRecorded) and envelope.data.model == model:
            records.append(envelope.data)
    return records


async def compact_by_hand(platform: PlatformSettings, topic: str) -> int:
    """What Kafka's log cleaner does to a compacted topic, now: only the latest record of each key
    is kept (the same bytes and headers, so consumers see the same event ids; other tests' keys
    keep their latest state too). Returns how many records were removed."""
    messages = await read_to_end(platform, topic)
    latest: dict[tuple[int, bytes | None], Any] = {}
    ends: dict[int, int] = {}
    for message, partition in messages:
        latest[(partition, message.key)] = message
        ends[partition] = max(ends.get(partition, 0), message.offset + 1)
    admin = AIOKafkaAdminClient(**kafka_client_options(platform, service="admin").aiokafka())
    await admin.start()
    try:
        await admin.delete_records(
            {TopicPartition(topic, p): RecordsToDelete(before_offset=end) for p, end in ends.items()}, timeout_ms=30_000
        )
    finally:
        await admin.close()
    producer = AIOKafkaProducer(**kafka_client_options(platform, service="admin").aiokafka(acks="all"))
    await producer.start()
    try:
        for (partition, key), message in sorted(latest.items(), key=lambda item: item[1].offset):
            await producer.send_and_wait(
                topic, message.value, key=key, partition=partition, headers=list(message.headers or ())
            )
    finally:
        await producer.stop()
    return len(messages) - len(latest)


async def topic_config(platform: PlatformSettings, topic: str) -> dict[str, str]:
    """The broker's configuration of ``topic``."""
    from aiokafka.admin.config_resource import ConfigResource, ConfigResourceType

    admin = AIOKafkaAdminClient(**kafka_client_options(platform, service="admin").aiokafka())
    await admin.start()
    try:
        (response,) = await admin.describe_configs([ConfigResource(ConfigResourceType.TOPIC, topic)])
        return {
            entry["config_names"]: entry["config_value"]
            for resource in response.to_object()["resources"]
            for entry in resource["config_entries"]
        }
    finally:
        await admin.close()
