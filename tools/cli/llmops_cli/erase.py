"""``make erase``: ask the platform to erase a tenant's records, or a data subject's by record id.

The request is an event (``llmops.erasure.requested.v1`` on ``llmops.privacy.v1``, which only the
operator principal may write); the ingestion service applies it (feature store, tombstones, erasure
record) and confirms with an ``audit.recorded`` event (action ``erasure``), which this command waits
for. Erasure is asynchronous by design: a request made while ingestion is down is applied when it
starts, since the topic is kept forever.
"""

from __future__ import annotations

import asyncio
import getpass
import re
from dataclasses import dataclass
from typing import Any

from aiokafka import AIOKafkaConsumer, TopicPartition

from llmops_config import PlatformSettings
from llmops_config.kafka import kafka_client_options
from llmops_events import DecodeError, Envelope, KafkaRecord, decode
from llmops_events.topics import AUDIT, TOPICS_BY_NAME
from llmops_events.v1 import AuditAction, AuditRecorded, ErasureRequested
from llmops_messaging import EventPublisher

_UNSAFE = re.compile(r"\s")


@dataclass(frozen=True, slots=True)
class ErasureOutcome:
    """The request sent and, when ingestion confirmed in time, its audit event."""

    request: Envelope[ErasureRequested]
    confirmation: AuditRecorded | None


def operator_principal(name: str | None = None) -> str:
    """``operator:<name>``, by default the user running the command."""
    who = (name or getpass.getuser() or "unknown").strip()
    if who.startswith("operator:"):
        return who
    return f"operator:{_UNSAFE.sub('_', who)}"


async def request_erasure(
    settings: PlatformSettings,
    *,
    tenant: str,
    subjects: list[str] | None = None,
    requested_by: str | None = None,
    reason: str = "",
    wait_s: float = 60.0,
) -> ErasureOutcome:
    """Publish the erasure request and wait up to ``wait_s`` seconds (0: not at all) for the
    ingestion service's audit event confirming it."""
    request = ErasureRequested(
        tenant=tenant,
        subject_record_ids=subjects or None,
        requested_by=operator_principal(requested_by),
        reason=reason,
    )
    consumer = None
    if wait_s > 0:
        # Positioned at the end before the request goes out: the confirmation comes after.
        consumer = await _audit_consumer(settings)
    try:
        async with EventPublisher(settings, service="erase") as publisher:
            envelope = await publisher.publish(request)
        confirmation = await _confirmation(consumer, envelope.id, wait_s) if consumer is not None else None
    finally:
        if consumer is not None:
            await consumer.stop()
    return ErasureOutcome(envelope, confirmation)


async def _audit_consumer(settings: PlatformSettings) -> AIOKafkaConsumer:
    options = kafka_client_options(settings, service="erase")
    consumer = AIOKafkaConsumer(
        **options.aiokafka(group_id=f"{settings.kafka_client_id_prefix}-erase", enable_auto_commit=False)
    )
    await consumer.start()
    partitions = [TopicPartition(options.topic(AUDIT), p) for p in range(TOPICS_BY_NAME[AUDIT].partitions)]
    consumer.assign(partitions)
    await consumer.seek_to_end(*partitions)
    for partition in partitions:
        await consumer.position(partition)  # resolve "the end" now, before the request is sent
    return consumer


async def _confirmation(consumer: AIOKafkaConsumer, erasure_id: str, wait_s: float) -> AuditRecorded | None:
    """The ingestion service's audit event for ``erasure_id`` (the erasure's own, not a version's)."""
    try:
        async with asyncio.timeout(wait_s):
            while True:
                for messages in (await consumer.getmany(timeout_ms=500)).values():
                    for message in messages:
                        record = KafkaRecord(message.key, message.value or b"", tuple(message.headers or ()))
                        try:
                            event: Any = decode(record).data
                        except DecodeError:
                            continue
                        if (
                            isinstance(event, AuditRecorded)
                            and event.action is AuditAction.ERASURE
                            and event.version is None
                            and event.details.get("erasure_id") == erasure_id
                        ):
                            return event
    except TimeoutError:
        return None
