"""``make dlq-replay``: send dead-lettered messages back to the topic they came from.

Each DLQ entry is replayed at most once (a ledger of DLQ offsets under ``var/``); a message
that is still bad simply lands in the DLQ again with a fresh reason, so nothing is lost.
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field

from aiokafka import AIOKafkaConsumer, TopicPartition

from llmops_config import PlatformSettings
from llmops_config.kafka import kafka_client_options
from llmops_events import KafkaRecord
from llmops_events.topics import RECORDS_DLQ
from llmops_messaging import EventPublisher, ProcessedEvents, without_error_headers
from llmops_messaging import headers as h
from llmops_messaging.admin import topic_partitions


@dataclass
class ReplaySummary:
    replayed: Counter[str] = field(default_factory=Counter)
    skipped_already_replayed: int = 0
    skipped_by_filter: int = 0


async def replay_dead_letters(
    settings: PlatformSettings, *, topic: str | None = None, reason: str | None = None, dlq_topic: str = RECORDS_DLQ
) -> ReplaySummary:
    """Replay every DLQ entry (optionally only those from ``topic`` or with ``reason``) once."""
    ledger = ProcessedEvents(settings.var_dir / "state" / "dlq-replay.db", consumer=dlq_topic)
    # Offsets are never committed (the ledger says what was replayed); the group id only avoids
    # aiokafka's group-less coordinator, whose close() re-raises its own cancellation.
    options = kafka_client_options(settings, service="dlq-replay")
    consumer = AIOKafkaConsumer(
        **options.aiokafka(),
        enable_auto_commit=False,
        group_id=f"{settings.kafka_client_id_prefix}-dlq-replay",
    )
    summary = ReplaySummary()
    await consumer.start()
    try:
        partitions = [TopicPartition(dlq_topic, p) for p in await topic_partitions(options, dlq_topic)]
        if not partitions:
            return summary
        consumer.assign(partitions)
        await consumer.seek_to_beginning(*partitions)
        end_offsets = await consumer.end_offsets(partitions)
        async with EventPublisher(settings, service="dlq-replay") as publisher:
            while [tp for tp in partitions if await consumer.position(tp) < end_offsets[tp]]:
                batches = await consumer.getmany(timeout_ms=1000)
                for tp, messages in batches.items():
                    for message in messages:
                        if message.offset >= end_offsets[tp]:
                            continue
                        record = KafkaRecord(message.key, message.value or b"", tuple(message.headers or ()))
                        entry_id = f"{tp.partition}:{message.offset}"
                        origin_topic = (record.header(h.ERROR_TOPIC) or b"").decode()
                        entry_reason = (record.header(h.ERROR_REASON) or b"").decode()
                        if (topic and origin_topic != topic) or (reason and entry_reason != reason) or not origin_topic:
                            summary.skipped_by_filter += 1
                            continue
                        if ledger.has_processed(entry_id):
                            summary.skipped_already_replayed += 1
                            continue
                        await publisher.publish_record(origin_topic, without_error_headers(record))
                        ledger.mark_processed(entry_id)
                        summary.replayed[entry_reason] += 1
    finally:
        await consumer.stop()
        ledger.close()
    return summary
