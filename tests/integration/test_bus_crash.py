"""A message whose handler kills its process (issue 20), against the real broker and real
processes: the consumer is a separate process (``crashing_consumer.py``) that dies with
``os._exit(137)`` on a poison message, as the out-of-memory killer would end it, and is started
again each time, as a supervisor would. The attempts are counted in its SQLite state before the
handler runs, so after ``MAX_ATTEMPTS`` deaths the message goes to the DLQ without being run
again, and the message behind it is handled: the partition moves on."""

from __future__ import annotations

import subprocess
import sys
import time
import uuid
from pathlib import Path
from typing import Any

import pytest
from aiokafka import AIOKafkaConsumer
from aiokafka.admin import AIOKafkaAdminClient, NewTopic

from llmops_config import PlatformSettings
from llmops_config.kafka import kafka_client_options
from llmops_events import Envelope, encode
from llmops_events.topics import RECORDS_DLQ
from llmops_events.v1 import RecordSubmitted
from llmops_messaging import EventPublisher

pytestmark = pytest.mark.integration

MAX_ATTEMPTS = 3
SCRIPT = Path(__file__).with_name("crashing_consumer.py")


async def _new_topic(settings: PlatformSettings) -> str:
    topic = f"test.crash.{uuid.uuid4().hex[:8]}"
    admin = AIOKafkaAdminClient(**kafka_client_options(settings, service="test").aiokafka())
    await admin.start()
    try:
        await admin.create_topics([NewTopic(topic, num_partitions=1, replication_factor=1)])
    finally:
        await admin.close()
    return topic


async def _dead_letters_of(settings: PlatformSettings, topic: str, *, timeout: float) -> list[Any]:
    reader = AIOKafkaConsumer(
        RECORDS_DLQ,
        **kafka_client_options(settings, service="test").aiokafka(),
        auto_offset_reset="earliest",
        group_id=f"r-{uuid.uuid4().hex}",
    )
    await reader.start()
    found: list[Any] = []
    try:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            for records in (await reader.getmany(timeout_ms=300)).values():
                found.extend(m for m in records if dict(m.headers).get("error.topic") == topic.encode())
    finally:
        await reader.stop()
    return found


async def test_a_message_that_kills_its_process_is_dead_lettered_after_its_attempts(kafka_settings, tmp_path) -> None:
    bootstrap = kafka_settings.kafka_bootstrap_servers
    topic = await _new_topic(kafka_settings)
    group = f"crash-{uuid.uuid4().hex[:8]}"
    async with EventPublisher(kafka_settings, service="tests") as publisher:
        for text in ("first", "poison", "last"):
            envelope = Envelope.wrap(RecordSubmitted(tenant="t", source="s", text=text), source="/t")
            await publisher.publish_record(topic, encode(envelope))

    handled = tmp_path / "handled.txt"
    command = [sys.executable, str(SCRIPT), bootstrap, topic, group, str(tmp_path / "state.db"), str(handled)]
    exit_codes: list[int] = []
    for _ in range(MAX_ATTEMPTS + 2):  # bounded: a consumer that loops forever fails the test
        process = subprocess.run([*command, str(MAX_ATTEMPTS)], timeout=180, capture_output=True, text=True)
        exit_codes.append(process.returncode)
        if process.returncode != 137:
            break
    assert exit_codes == [137] * MAX_ATTEMPTS + [0], process.stderr[-3000:]
    assert handled.read_text().splitlines() == ["first", "last"]  # each once, in order
    letters = await _dead_letters_of(kafka_settings, topic, timeout=3)
    assert len(letters) == 1
    headers = dict(letters[0].headers)
    assert headers["error.reason"] == b"attempts_exhausted"
    assert b"poison" in letters[0].value
