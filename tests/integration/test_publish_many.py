"""``EventPublisher.publish_many`` on a real broker: every payload it reports as acknowledged is on
the topic and decodable; one the producer refuses is reported as that payload's error and
does not stop the others."""

from __future__ import annotations

import time
import uuid
from datetime import UTC, datetime

import pytest
from aiokafka import AIOKafkaConsumer
from aiokafka.errors import MessageSizeTooLargeError

from llmops_config.kafka import kafka_client_options
from llmops_events import KafkaRecord, decode
from llmops_events.topics import INFERENCE
from llmops_events.v1 import InferenceLogged
from llmops_messaging import EventPublisher

pytestmark = pytest.mark.integration


def _logged(request_id: str, text: str) -> InferenceLogged:
    scores = {f"intent_{i}": 1 / 77 for i in range(77)}
    return InferenceLogged(
        request_id=request_id,
        tenant="acme",
        model_name="intents",
        model_version=1,
        text=text,
        label="intent_0",
        confidence=1 / 77,
        scores=scores,
        latency_ms=1.5,
        route="champion",
        served_at=datetime.now(UTC),
    )


async def test_publish_many_reports_each_payload_and_delivers_the_acknowledged(kafka_settings) -> None:
    run = uuid.uuid4().hex[:8]
    payloads = [
        _logged(f"{run}-0", "where is my card"),
        _logged(f"{run}-1", "x" * 9_000),  # over the producer's request limit below
        _logged(f"{run}-2", "refund please"),
    ]
    publisher = EventPublisher(kafka_settings, service="tests", max_request_size=8_000)
    async with publisher:
        outcomes = await publisher.publish_many(payloads)

    assert outcomes[0] is None and outcomes[2] is None
    assert isinstance(outcomes[1], MessageSizeTooLargeError)

    options = kafka_client_options(kafka_settings, service="tests")
    reader = AIOKafkaConsumer(
        options.topic(INFERENCE), **options.aiokafka(), auto_offset_reset="earliest", group_id=f"r-{run}"
    )
    await reader.start()
    found: list[InferenceLogged] = []
    try:
        deadline = time.monotonic() + 20
        while len(found) < 2 and time.monotonic() < deadline:
            for messages in (await reader.getmany(timeout_ms=300)).values():
                for message in messages:
                    envelope = decode(KafkaRecord(message.key, message.value or b"", tuple(message.headers)))
                    if envelope.data.request_id.startswith(run):
                        found.append(envelope.data)
    finally:
        await reader.stop()
    # Keyed by request id, so on different partitions: in no particular order.
    assert sorted(found, key=lambda e: e.request_id) == [payloads[0], payloads[2]]
