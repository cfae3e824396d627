"""The latest inference events of a model, read back from the inference topic (``make drift-report``)."""

from __future__ import annotations

import asyncio
from collections import defaultdict
from typing import Any

from aiokafka import AIOKafkaConsumer

from llmops_config import PlatformSettings
from llmops_config.kafka import kafka_client_options
from llmops_events import DecodeError, KafkaRecord, decode
from llmops_events.topics import INFERENCE
from llmops_events.v1 import InferenceLogged
from llmops_monitoring.domain.generation import GenerationObservation, generation_observation
from llmops_monitoring.domain.windows import Observation


async def read_latest_traffic(
    platform: PlatformSettings,
    model_name: str,
    *,
    last: int,
    version: int | None = None,
    scan_per_partition: int = 50_000,
    topic: str = INFERENCE,
) -> dict[int, list[Observation] | list[GenerationObservation]]:
    """The latest ``last`` events of ``model_name`` (by serving time) per model version, read from the
    newest ``scan_per_partition`` messages of each partition, without a consumer group (no offsets move).
    Undecodable messages are skipped: they are the service's DLQ's business, not a report's. A
    version's list holds generations when its latest event is a generation (a ``causal_lm`` model),
    classifications otherwise; the other kind's events are left out."""
    options = kafka_client_options(platform, service="monitoring")
    consumer = AIOKafkaConsumer(
        options.topic(topic),
        **options.aiokafka(client_id=f"{platform.kafka_client_id_prefix}-drift-report"),
        enable_auto_commit=False,
        group_id=None,
    )
    await consumer.start()
    try:
        # Without a group, a subscription is assigned every partition once the metadata arrived.
        for _ in range(100):
            partitions = sorted(consumer.assignment(), key=lambda tp: tp.partition)
            if partitions:
                break
            await asyncio.sleep(0.1)
        else:
            return {}
        ends = await consumer.end_offsets(partitions)
        begins = await consumer.beginning_offsets(partitions)
        remaining = {}
        for partition in partitions:
            start = max(begins[partition], ends[partition] - scan_per_partition)
            if start < ends[partition]:
                consumer.seek(partition, start)
                remaining[partition] = ends[partition]
        events: list[InferenceLogged] = []
        while remaining:
            batches = await consumer.getmany(*remaining.keys(), timeout_ms=1000, max_records=5000)
            for partition, messages in batches.items():
                for message in messages:
                    record = KafkaRecord(
                        key=message.key, value=message.value or b"", headers=tuple(message.headers or ())
                    )
                    try:
                        data: Any = decode(record).data
                    except DecodeError:
                        continue
                    if (
                        isinstance(data, InferenceLogged)
                        and data.model_name == model_name
                        and (version is None or data.model_version == version)
                    ):
                        events.append(data)
                    if message.offset + 1 >= remaining.get(partition, 0):
                        remaining.pop(partition, None)
            if not batches:
                for partition in list(remaining):
                    if await consumer.position(partition) >= remaining[partition]:
                        remaining.pop(partition)
    finally:
        await consumer.stop()
    events.sort(key=lambda e: e.served_at)
    by_version: dict[int, list[InferenceLogged]] = defaultdict(list)
    for event in events[-last:]:
        by_version[event.model_version].append(event)
    traffic: dict[int, list[Observation] | list[GenerationObservation]] = {}
    for model_version, logged in by_version.items():
        if logged[-1].generation is not None:
            traffic[model_version] = [generation_observation(e) for e in logged if e.generation is not None]
        else:
            traffic[model_version] = [
                Observation(
                    request_id=e.request_id,
                    text=e.text,
                    label=e.label,
                    confidence=e.confidence,
                    served_at=e.served_at,
                )
                for e in logged
                if e.generation is None
            ]
    return traffic
