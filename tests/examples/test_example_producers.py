"""The Java, Go and Node producers of ``examples/``, built and run against the real broker: each
sends a record and a feedback event in CloudEvents structured mode, and both are accepted by the
platform's decoder (what ingestion and monitoring consume with), keyed as the contract says."""

from __future__ import annotations

import asyncio
import json
import uuid
from pathlib import Path
from typing import Any

import pytest
from aiokafka import AIOKafkaConsumer, TopicPartition

from llmops_config import PlatformSettings
from llmops_config.kafka import KafkaClientOptions, kafka_client_options
from llmops_events import Envelope, KafkaRecord, decode
from llmops_events.envelope import STRUCTURED_CONTENT_TYPE
from llmops_events.topics import FEEDBACK, RECORDS_RAW
from llmops_events.v1 import FeedbackSubmitted, RecordSubmitted
from llmops_messaging.admin import topic_partitions

from .toolchains import BUILD, JAVA_CLASSPATH, build, kafka_arguments, run

pytestmark = pytest.mark.integration

READ_TIMEOUT_S = 60


def _command(language: str) -> list[str]:
    if language == "java":
        return ["java", "-cp", JAVA_CLASSPATH, "dev.llmops.examples.RecordProducer"]
    if language == "go":
        return [str(BUILD / "go" / "bin" / "producer")]
    return ["node", "examples/node/producer.js"]


async def _end_offsets(options: KafkaClientOptions, consumer: AIOKafkaConsumer) -> dict[TopicPartition, int]:
    partitions = [
        TopicPartition(topic, partition)
        for topic in (RECORDS_RAW, FEEDBACK)
        for partition in await topic_partitions(options, topic)
    ]
    assert partitions, "the session broker has no records or feedback topic"
    return dict(await consumer.end_offsets(partitions))


@pytest.mark.parametrize("language", ["java", "go", "node"])
async def test_the_producer_sends_a_record_and_feedback_the_platform_accepts(
    language: str, kafka_settings: PlatformSettings, tmp_path: Path
) -> None:
    build(language)
    options = kafka_client_options(kafka_settings, service="examples-test")
    consumer = AIOKafkaConsumer(**options.aiokafka(enable_auto_commit=False))
    await consumer.start()
    try:
        start = await _end_offsets(options, consumer)
        record_id, request_id = f"{language}-{uuid.uuid4().hex}", f"{language}-request-{uuid.uuid4().hex}"
        text = f"My new card has not arrived ({language})."
        arguments = [*kafka_arguments(kafka_settings, tmp_path), "--text", text]
        arguments += ["--record-id", record_id, "--request-id", request_id, "--label", "card_arrival"]
        printed = json.loads(
            run([*_command(language), *arguments], env={"NODE_PATH": str(BUILD / "node" / "node_modules")})
        )

        consumer.assign(list(start))
        for partition, offset in start.items():
            consumer.seek(partition, offset)
        found: dict[str, tuple[KafkaRecord, Envelope[Any]]] = {}
        async with asyncio.timeout(READ_TIMEOUT_S):
            while len(found) < 2:
                for messages in (await consumer.getmany(timeout_ms=500)).values():
                    for message in messages:
                        if message.key not in (record_id.encode(), request_id.encode()):
                            continue  # another test's message
                        record = KafkaRecord(message.key, message.value or b"", tuple(message.headers or ()))
                        envelope = decode(record)  # raises DecodeError (a DLQ reason) if the platform refuses it
                        found[envelope.id] = (record, envelope)
    finally:
        await consumer.stop()

    record, envelope = found[printed["record_event_id"]]
    assert isinstance(envelope.data, RecordSubmitted) and envelope.source == f"/examples/{language}"
    assert envelope.data.text == text and envelope.data.label == "card_arrival"
    assert record.key == record_id.encode() and record.header("content-type") == STRUCTURED_CONTENT_TYPE.encode()
    record, envelope = found[printed["feedback_event_id"]]
    assert isinstance(envelope.data, FeedbackSubmitted) and envelope.data.true_label == "card_arrival"
    assert envelope.data.request_id == request_id and record.key == request_id.encode()
