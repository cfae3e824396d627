"""What the runbooks look at on the bus: ``llmops dlq list``, ``llmops events tail --correlation``
and ``llmops lag``.

Each reads the topics as they are, from a time or offset to their current end, with a consumer that
joins no group and commits nothing (assigned partitions only), so looking never moves anyone's
offsets. Connection options come from ``kafka_client_options`` (the ``operator`` principal).
"""

from __future__ import annotations

import json
import time
from collections.abc import AsyncIterator, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from aiokafka import AIOKafkaConsumer, ConsumerRecord, TopicPartition
from aiokafka.admin import AIOKafkaAdminClient

from llmops_config import PlatformSettings
from llmops_config.kafka import kafka_client_options
from llmops_events.topics import RECORDS_DLQ, TOPICS
from llmops_messaging import headers as h
from llmops_messaging.bus_metrics import PartitionLag, consumer_lag

CORRELATION_HEADER = "ce_correlationid"


async def _partitions(options: Any, topics: Sequence[str]) -> list[TopicPartition]:
    """The partitions of the ``topics`` that exist."""
    admin = AIOKafkaAdminClient(**options.aiokafka())
    await admin.start()
    try:
        descriptions = await admin.describe_topics([options.topic(topic) for topic in topics])
    finally:
        await admin.close()
    return sorted(
        TopicPartition(description["topic"], partition["partition"])
        for description in descriptions
        if not description.get("error_code")
        for partition in description["partitions"]
    )


async def read_topics(
    settings: PlatformSettings,
    topics: Sequence[str],
    *,
    service: str,
    since_ms: int | None = None,
    follow_s: float = 0.0,
    poll_timeout_ms: int = 500,
) -> AsyncIterator[ConsumerRecord[bytes, bytes]]:
    """Every message of ``topics`` from ``since_ms`` (epoch ms; None: the beginning) to the end they
    had when called, then, for ``follow_s`` seconds, the new ones as they come."""
    options = kafka_client_options(settings, service=service)
    partitions = await _partitions(options, topics)
    if not partitions:
        return
    # The group id only avoids aiokafka's group-less coordinator, whose close() re-raises its own
    # cancellation; partitions are assigned, never subscribed, and nothing is committed.
    consumer = AIOKafkaConsumer(
        **options.aiokafka(group_id=f"{settings.kafka_client_id_prefix}-{service}", enable_auto_commit=False)
    )
    await consumer.start()
    try:
        consumer.assign(partitions)
        await consumer.seek_to_beginning(*partitions)
        if since_ms is not None:
            found = await consumer.offsets_for_times(dict.fromkeys(partitions, since_ms))
            for tp, offset in found.items():
                if offset is None:
                    await consumer.seek_to_end(tp)
                else:
                    consumer.seek(tp, offset.offset)
        ends = await consumer.end_offsets(partitions)
        pending = {tp for tp in partitions if await consumer.position(tp) < ends[tp]}
        while pending:
            batches = await consumer.getmany(timeout_ms=poll_timeout_ms)
            for tp, messages in batches.items():
                for message in messages:
                    if message.offset < ends[tp]:
                        yield message
            pending = {tp for tp in pending if await consumer.position(tp) < ends[tp]}
        deadline = time.monotonic() + follow_s
        while (left := deadline - time.monotonic()) > 0:
            batches = await consumer.getmany(timeout_ms=int(min(poll_timeout_ms, left * 1000)) or 1)
            for messages in batches.values():
                for message in messages:
                    yield message
    finally:
        await consumer.stop()


def _header(message: ConsumerRecord[bytes, bytes], name: str) -> str | None:
    for key, value in message.headers or ():
        if key.lower() == name:
            return value.decode("utf-8", "replace")
    return None


# -- dlq list ------------------------------------------------------------------------------------------
@dataclass
class DeadLetterGroup:
    """The DLQ entries of one origin topic and reason."""

    topic: str
    reason: str
    count: int
    newest: str
    """``error.time`` of the newest entry (ISO 8601, UTC)."""
    stage: str
    detail: str
    """The newest entry's ``error.detail``."""


async def list_dead_letters(
    settings: PlatformSettings,
    *,
    topic: str | None = None,
    reason: str | None = None,
    dlq_topic: str = RECORDS_DLQ,
) -> list[DeadLetterGroup]:
    """The DLQ's entries grouped by origin topic and reason (optionally only one of each), most
    numerous first."""
    groups: dict[tuple[str, str], DeadLetterGroup] = {}
    async for message in read_topics(settings, [dlq_topic], service="dlq-list"):
        origin = _header(message, h.ERROR_TOPIC) or "?"
        why = _header(message, h.ERROR_REASON) or "?"
        if (topic and origin != topic) or (reason and why != reason):
            continue
        when = _header(message, h.ERROR_TIME) or datetime.fromtimestamp(message.timestamp / 1000, UTC).isoformat()
        group = groups.get((origin, why))
        if group is None:
            groups[(origin, why)] = DeadLetterGroup(
                origin, why, 1, when, _header(message, h.ERROR_STAGE) or "?", _header(message, h.ERROR_DETAIL) or ""
            )
            continue
        group.count += 1
        if when >= group.newest:
            group.newest, group.detail = when, _header(message, h.ERROR_DETAIL) or ""
            group.stage = _header(message, h.ERROR_STAGE) or "?"
    return sorted(groups.values(), key=lambda g: (-g.count, g.topic, g.reason))


# -- events tail --correlation ----------------------------------------------------------------------------
@dataclass(frozen=True, slots=True)
class CorrelatedEvent:
    """One message carrying the correlation id, on whichever topic."""

    time: str
    topic: str
    partition: int
    offset: int
    type: str
    id: str
    subject: str


def correlated_event(message: ConsumerRecord[bytes, bytes], correlation_id: str) -> CorrelatedEvent | None:
    """The message as a :class:`CorrelatedEvent` when it carries ``correlation_id`` (binary mode:
    the ``ce_correlationid`` header; structured mode: the ``correlationid`` attribute), else None."""
    header = _header(message, CORRELATION_HEADER)
    attributes: dict[str, Any]
    if header is not None:
        if header != correlation_id:
            return None
        attributes = {name: _header(message, f"ce_{name}") for name in ("type", "id", "subject", "time")}
    else:
        value = message.value or b""
        if correlation_id.encode() not in value:  # cheap filter before parsing JSON
            return None
        try:
            document = json.loads(value)
        except ValueError:
            return None
        if not isinstance(document, dict) or document.get("correlationid") != correlation_id:
            return None
        attributes = document
    when = attributes.get("time") or datetime.fromtimestamp(message.timestamp / 1000, UTC).isoformat()
    return CorrelatedEvent(
        time=str(when),
        topic=message.topic,
        partition=message.partition,
        offset=message.offset,
        type=str(attributes.get("type") or "?"),
        id=str(attributes.get("id") or "?"),
        subject=str(attributes.get("subject") or ""),
    )


async def tail_correlation(
    settings: PlatformSettings,
    correlation_id: str,
    *,
    since_s: float | None,
    follow_s: float = 0.0,
    topics: Sequence[str] | None = None,
) -> AsyncIterator[CorrelatedEvent]:
    """The events of every platform topic (the DLQ included) that carry ``correlation_id``, from
    ``since_s`` seconds ago (None: the beginning), in the order they are read (per partition in
    order; across topics roughly by time), then for ``follow_s`` seconds the new ones."""
    names = list(topics) if topics is not None else [spec.name for spec in TOPICS]
    since_ms = None if since_s is None else int((time.time() - since_s) * 1000)
    async for message in read_topics(settings, names, service="events-tail", since_ms=since_ms, follow_s=follow_s):
        event = correlated_event(message, correlation_id)
        if event is not None:
            yield event


# -- lag -----------------------------------------------------------------------------------------------------
async def group_lag(settings: PlatformSettings, *, group: str | None = None) -> list[PartitionLag]:
    """The lag of every consumer group (or of ``group``) per partition, from the Admin API."""
    return await consumer_lag(settings, groups=[group] if group else None, service="lag")
