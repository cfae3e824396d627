"""The bus helpers against a real Kafka broker: both content modes through a consumer group,
the DLQ with its reason, idempotent redelivery, DLQ replay, and a client the project did not write."""

from __future__ import annotations

import asyncio
import json
import shutil
import subprocess
import uuid
from typing import Any

import pytest
from aiokafka import AIOKafkaConsumer

from llmops_config import PlatformSettings
from llmops_config.kafka import kafka_client_options, kafka_environment
from llmops_events import ContentMode, Envelope, KafkaRecord, encode
from llmops_events.topics import RECORDS_DLQ, RECORDS_RAW, TOPICS, TopicSpec
from llmops_events.v1 import RecordSubmitted
from llmops_messaging import (
    DeadLetterQueue,
    EventConsumer,
    EventPublisher,
    Outcome,
    ProcessedEvents,
    create_broker,
    subscribe,
)
from llmops_stack import ensure_topics

pytestmark = pytest.mark.integration


async def _read_all(settings: PlatformSettings, topic: str, *, until: int, timeout: float = 20) -> list[Any]:
    """Read ``topic`` from the start until ``until`` messages are seen (or time runs out)."""
    consumer = AIOKafkaConsumer(
        topic,
        **kafka_client_options(settings, service="test").aiokafka(),
        auto_offset_reset="earliest",
        group_id=f"reader-{uuid.uuid4().hex}",
    )
    await consumer.start()
    messages: list[Any] = []
    try:
        async with asyncio.timeout(timeout):
            while len(messages) < until:
                batch = await consumer.getmany(timeout_ms=500)
                for records in batch.values():
                    messages.extend(records)
    except TimeoutError:
        pass
    finally:
        await consumer.stop()
    return messages


class Harness:
    """A consumer group on the real broker with a handler that records what it applied."""

    def __init__(self, settings: PlatformSettings, tmp_path: Any, *, fail_first: int = 0) -> None:
        self.settings = settings
        self.group = f"test-{uuid.uuid4().hex[:8]}"
        # A topic of its own, so earlier tests' messages never reach this test's handler.
        self.topic = f"test.records.{uuid.uuid4().hex[:8]}"
        self.applied: list[Envelope[Any]] = []
        self.outcomes: list[Outcome] = []
        self._fail_first = fail_first
        self.publisher = EventPublisher(settings, service="tests")
        self.broker = create_broker(settings, service="tests")
        self.processed = ProcessedEvents(tmp_path / f"{self.group}.db", consumer=self.group)

    async def handle(self, envelope: Envelope[Any]) -> None:
        if self._fail_first > 0:
            self._fail_first -= 1
            raise ConnectionError("transient failure")
        self.applied.append(envelope)

    async def __aenter__(self) -> Harness:
        await ensure_topics(
            kafka_client_options(self.settings, service="test"), [TopicSpec(self.topic, "record id", 3)]
        )
        await self.publisher.start()
        consumer = EventConsumer(
            group_id=self.group,
            handlers={RecordSubmitted: self.handle},
            dlq=DeadLetterQueue(self.publisher),
            processed=self.processed,
            max_attempts=3,
        )
        subscribe(self.broker, consumer, self.topic, on_outcome=self.outcomes.append)
        await self.broker.start()
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self.broker.stop()
        await self.publisher.stop()

    async def send(
        self, payload: RecordSubmitted | Envelope[Any], mode: ContentMode = ContentMode.BINARY, **options: Any
    ) -> Envelope[Any]:
        envelope = (
            payload
            if isinstance(payload, Envelope)
            else Envelope.wrap(payload, source=self.publisher.source, **options)
        )
        await self.publisher.publish_record(self.topic, encode(envelope, mode))
        return envelope

    async def wait_for(self, predicate: Any, timeout: float = 30) -> None:
        async with asyncio.timeout(timeout):
            while not predicate():
                await asyncio.sleep(0.1)


def _record(text: str) -> RecordSubmitted:
    return RecordSubmitted(tenant="acme", source="tests", text=text, record_id=f"r-{uuid.uuid4().hex[:8]}")


@pytest.mark.parametrize("mode", list(ContentMode))
async def test_event_reaches_a_consumer_group_in_both_content_modes(kafka_settings, tmp_path, mode) -> None:
    marker = f"hello {mode} {uuid.uuid4().hex}"
    async with Harness(kafka_settings, tmp_path) as harness:
        sent = await harness.send(_record(marker), mode, correlationid="corr-1")
        await harness.wait_for(lambda: any(e.id == sent.id for e in harness.applied))

    received = next(e for e in harness.applied if e.id == sent.id)
    assert received.data.text == marker
    assert received.correlationid == "corr-1"
    assert received == sent


async def test_malformed_message_lands_on_the_dlq_with_reason(kafka_settings, tmp_path) -> None:
    garbage = f"not json {uuid.uuid4().hex}".encode()
    async with Harness(kafka_settings, tmp_path) as harness:
        await harness.publisher.publish_record(
            harness.topic, KafkaRecord(key=b"bad-1", value=garbage, headers=(("x-origin", b"\x00raw"),))
        )
        await harness.wait_for(lambda: Outcome.DEAD_LETTERED in harness.outcomes)

    letters = await _read_all(kafka_settings, RECORDS_DLQ, until=100, timeout=5)
    letter = next(m for m in letters if m.value == garbage)
    headers = dict(letter.headers)
    assert letter.key == b"bad-1"
    assert headers["error.stage"] == b"decode"
    assert headers["error.reason"] == b"invalid_json"
    assert headers["error.detail"]
    assert headers["error.topic"] == harness.topic.encode()
    assert headers["x-origin"] == b"\x00raw"  # original headers kept byte for byte


async def test_redelivered_event_id_has_one_effect(kafka_settings, tmp_path) -> None:
    async with Harness(kafka_settings, tmp_path) as harness:
        sent = await harness.send(_record("once only"))
        await harness.wait_for(lambda: len(harness.applied) == 1)
        # The same event (same id) delivered again, as after a producer retry or a replay.
        await harness.send(sent)
        await harness.send(sent, ContentMode.STRUCTURED)
        await harness.wait_for(lambda: harness.outcomes.count(Outcome.DUPLICATE) == 2)

    assert [e.id for e in harness.applied] == [sent.id]


async def test_transient_failure_is_redelivered_then_applied(kafka_settings, tmp_path) -> None:
    async with Harness(kafka_settings, tmp_path, fail_first=2) as harness:
        sent = await harness.send(_record("flaky store"))
        await harness.wait_for(lambda: len(harness.applied) == 1)

    assert harness.applied[0].id == sent.id


async def test_dlq_replay_sends_entries_back_once(kafka_settings, tmp_path) -> None:
    from llmops_cli.dlq import replay_dead_letters

    settings = kafka_settings.model_copy(update={"var_dir": tmp_path})
    payload = json.dumps(
        {
            "specversion": "1.0",
            "id": uuid.uuid4().hex,
            "source": "t",
            "type": "llmops.record.submitted.v1",
            "data": {"tenant": "a"},
        }
    ).encode()
    async with Harness(kafka_settings, tmp_path) as harness:
        await harness.publisher.publish_record(harness.topic, KafkaRecord(key=b"k", value=payload))
        await harness.wait_for(lambda: harness.outcomes.count(Outcome.DEAD_LETTERED) == 1)

        first = await replay_dead_letters(settings, topic=harness.topic, reason="schema_violation")
        assert first.replayed["schema_violation"] >= 1, first
        # The replayed message is still invalid, so it is dead-lettered again (nothing is lost).
        await harness.wait_for(lambda: harness.outcomes.count(Outcome.DEAD_LETTERED) == 2)

    second = await replay_dead_letters(settings, topic=harness.topic, reason="schema_violation")
    # The first entry was replayed already; the second (its re-dead-lettered copy) is new.
    assert first.replayed["schema_violation"] == 1
    assert second.skipped_already_replayed == 1
    assert second.replayed["schema_violation"] == 1


@pytest.mark.skipif(shutil.which("kcat") is None, reason="kcat is not installed (apt-get install kcat)")
def test_kcat_lists_topics_and_its_record_is_consumed(kafka_settings) -> None:
    listing = subprocess.run(
        ["kcat", *kafka_client_options(kafka_settings, service="test").kcat(), "-L"],
        capture_output=True,
        text=True,
        timeout=30,
        check=True,
    ).stdout
    for spec in TOPICS:
        assert f'topic "{spec.name}"' in listing

    event_id = uuid.uuid4().hex
    document = json.dumps(
        {
            "specversion": "1.0",
            "id": event_id,
            "source": "kcat",
            "type": "llmops.record.submitted.v1",
            "data": {"tenant": "acme", "source": "kcat", "text": "sent by kcat"},
        }
    )
    subprocess.run(
        ["kcat", "-P", *kafka_client_options(kafka_settings, service="test").kcat(), "-t", RECORDS_RAW, "-k", event_id],
        input=document,
        text=True,
        timeout=30,
        check=True,
    )

    async def consume() -> list[Envelope[Any]]:
        from llmops_events import decode

        messages = await _read_all(kafka_settings, RECORDS_RAW, until=10_000, timeout=5)
        return [decode(KafkaRecord(m.key, m.value, tuple(m.headers))) for m in messages if m.key == event_id.encode()]

    [envelope] = asyncio.run(consume())
    assert envelope.id == event_id and envelope.data.text == "sent by kcat"


def test_retrain_asks_for_the_task_it_is_given(kafka_settings, monkeypatch) -> None:
    """``make retrain MODEL=... TASK=causal-lm`` (the CLI behind it) publishes a causal-lm
    request; an unknown task is a usage error and publishes nothing."""
    from typer.testing import CliRunner

    from llmops_cli.__main__ import app
    from llmops_events import decode
    from llmops_events.topics import TRAINING

    for name, value in kafka_environment(kafka_settings).items():
        monkeypatch.setenv(name, value)
    model = f"retrain-{uuid.uuid4().hex[:8]}"
    runner = CliRunner()
    refused = runner.invoke(app, ["retrain", "--model", model, "--task", "poetry"])
    shown = " ".join(refused.output.translate(str.maketrans("│╭╮╰╯─", "      ")).split())  # the box rich draws
    assert refused.exit_code == 2 and "'poetry' is not one of sequence-classification, causal-lm" in shown
    result = runner.invoke(app, ["retrain", "--model", model, "--task", "causal-lm", "--dataset", "d-1"])
    assert result.exit_code == 0, result.output
    assert "requested causal-lm training" in result.output
    messages = asyncio.run(_read_all(kafka_settings, TRAINING, until=10**6, timeout=5))
    envelopes = [decode(KafkaRecord(m.key, m.value, tuple(m.headers))) for m in messages if m.key == model.encode()]
    requests = [envelope.data for envelope in envelopes]
    assert [(r.task.value, r.dataset_id) for r in requests] == [("causal-lm", "d-1")]
