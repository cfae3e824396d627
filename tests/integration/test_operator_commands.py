"""The runbooks' bus commands against the real broker: ``llmops dlq list`` after the platform's
consumer dead-letters a malformed message, ``llmops lag`` for a group with unread messages,
``llmops events tail --correlation`` finding one id on two topics; and the same DLQ count and lag
on a service's ``/metrics`` collectors."""

from __future__ import annotations

import asyncio
import uuid
from pathlib import Path

import pytest
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, TopicPartition
from prometheus_client import CollectorRegistry, generate_latest
from typer.testing import CliRunner

from llmops_cli.__main__ import app
from llmops_config import PlatformSettings
from llmops_config.kafka import kafka_client_options, kafka_environment
from llmops_events import ContentMode, Envelope, KafkaRecord, encode
from llmops_events.topics import TopicSpec
from llmops_events.v1 import RecordSubmitted
from llmops_messaging import DeadLetterQueue, EventConsumer, EventPublisher, Origin, Outcome, ProcessedEvents
from llmops_messaging.bus_metrics import ConsumerLagCollector, DeadLetterCollector
from llmops_stack import ensure_topics

pytestmark = pytest.mark.integration


@pytest.fixture
def cli_env(kafka_settings: PlatformSettings, monkeypatch: pytest.MonkeyPatch) -> PlatformSettings:
    """The CLI's environment pointed at the test broker (its settings come from ``LLMOPS_*``)."""
    for name, value in kafka_environment(kafka_settings).items():
        monkeypatch.setenv(name, value)
    monkeypatch.setenv("LLMOPS_VAR_DIR", str(kafka_settings.var_dir))
    return kafka_settings


def _llmops(*arguments: str) -> str:
    result = CliRunner().invoke(app, list(arguments))
    assert result.exit_code == 0, f"llmops {' '.join(arguments)} failed: {result.output}{result.exception!r}"
    return result.output


async def _topic(settings: PlatformSettings, partitions: int = 1) -> str:
    name = f"test.ops.{uuid.uuid4().hex[:10]}"
    await ensure_topics(kafka_client_options(settings, service="topics"), [TopicSpec(name, "test", partitions)])
    return name


def test_dlq_list_shows_a_malformed_message_the_consumer_dead_lettered(
    cli_env: PlatformSettings, tmp_path: Path
) -> None:
    settings = cli_env
    group = f"test-dlq-{uuid.uuid4().hex[:8]}"

    async def dead_letter() -> tuple[Outcome, str]:
        topic = await _topic(settings)
        async with EventPublisher(settings, service="tests") as publisher:
            consumer = EventConsumer(
                group_id=group,
                handlers={RecordSubmitted: _never_called},
                dlq=DeadLetterQueue(publisher),
                processed=ProcessedEvents(tmp_path / "processed.db", consumer=group),
            )
            malformed = KafkaRecord(key=b"r1", value=b"{not json", headers=())
            outcome = await consumer.process(malformed, Origin(topic, 0, 0, group))
        return outcome, topic

    outcome, topic = asyncio.run(dead_letter())
    assert outcome is Outcome.DEAD_LETTERED

    output = _llmops("dlq", "list", "--topic", topic)
    [line] = [line for line in output.splitlines() if line.startswith(topic)]
    assert line.split()[1:4] == ["invalid_json", "decode", "1"], output
    assert "1 message(s)" in output
    assert "the DLQ is empty for this filter" in _llmops("dlq", "list", "--topic", topic, "--reason", "no_such_reason")

    exported = generate_latest(_registry(DeadLetterCollector())).decode()
    labels = f'consumer_group="{group}",reason="invalid_json",stage="decode",topic="{topic}"'
    assert f"llmops_dlq_messages_total{{{labels}}} 1.0" in exported


async def _never_called(envelope: Envelope[RecordSubmitted]) -> None:
    raise AssertionError("a malformed message reached the handler")


def test_lag_shows_the_unread_messages_of_a_group_per_partition(cli_env: PlatformSettings) -> None:
    settings = cli_env
    group = f"test-lag-{uuid.uuid4().hex[:8]}"

    async def produce_and_commit() -> str:
        topic = await _topic(settings, partitions=2)
        producer = AIOKafkaProducer(**kafka_client_options(settings, service="tests").aiokafka())
        await producer.start()
        try:
            for index in range(7):  # 4 on partition 0, 3 on partition 1
                await producer.send_and_wait(topic, b"{}", key=f"k{index}".encode(), partition=index % 2)
        finally:
            await producer.stop()
        # The group read and committed 2 messages of partition 0 and nothing of partition 1.
        consumer = AIOKafkaConsumer(
            **kafka_client_options(settings, service="tests").aiokafka(group_id=group, enable_auto_commit=False)
        )
        await consumer.start()
        try:
            consumer.assign([TopicPartition(topic, 0), TopicPartition(topic, 1)])
            await consumer.commit({TopicPartition(topic, 0): 2, TopicPartition(topic, 1): 0})
        finally:
            await consumer.stop()
        return topic

    topic = asyncio.run(produce_and_commit())

    output = _llmops("lag", "--group", group)
    rows = {int(line.split()[2]): line.split() for line in output.splitlines() if line.startswith(group)}
    # group, topic, partition, committed, end, lag
    assert rows[0][1:] == [topic, "0", "2", "4", "2"], output
    assert rows[1][1:] == [topic, "1", "0", "3", "3"], output

    exported = generate_latest(
        _registry(ConsumerLagCollector(settings, service="tests", groups=lambda: [group], timeout_s=20))
    ).decode()
    assert f'llmops_consumer_lag{{consumer_group="{group}",partition="0",topic="{topic}"}} 2.0' in exported
    assert f'llmops_consumer_lag{{consumer_group="{group}",partition="1",topic="{topic}"}} 3.0' in exported


def test_events_tail_follows_one_correlation_id_across_two_topics(cli_env: PlatformSettings) -> None:
    settings = cli_env
    correlation = f"corr-{uuid.uuid4().hex}"

    async def publish() -> tuple[str, str]:
        first, second = await _topic(settings), await _topic(settings)
        async with EventPublisher(settings, service="tests") as publisher:
            record = RecordSubmitted(tenant="tests", record_id="r-1", text="hello", label="greeting", source="tests")
            # One in binary mode (the ce_correlationid header), one in structured mode (in the JSON),
            # and one of another correlation id that must not be listed.
            binary = Envelope.wrap(record, source="/tests", correlationid=correlation)
            structured = Envelope.wrap(record, source="/tests", correlationid=correlation)
            other = Envelope.wrap(record, source="/tests", correlationid="someone-else")
            await publisher.publish_record(first, encode(binary, ContentMode.BINARY))
            await publisher.publish_record(second, encode(structured, ContentMode.STRUCTURED))
            await publisher.publish_record(second, encode(other, ContentMode.BINARY))
        return first, second

    first, second = asyncio.run(publish())
    output = _llmops("events", "tail", "--correlation", correlation, "--topic", first, "--topic", second)
    found = [line for line in output.splitlines() if "llmops.record.submitted.v1" in line]
    assert len(found) == 2, output
    assert {line.split()[1].split("[")[0] for line in found} == {first, second}
    assert f"2 event(s) with correlation id {correlation}" in output


def _registry(collector: object) -> CollectorRegistry:
    registry = CollectorRegistry()
    registry.register(collector)  # type: ignore[arg-type]
    return registry
