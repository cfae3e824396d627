"""The stack as an operator meets it: a broker restart keeps accepted messages, and status tells
healthy from down. Uses its own broker (own ports, own var/) so the session broker is untouched."""

from __future__ import annotations

import asyncio
import uuid
from pathlib import Path

import pytest
from aiokafka import AIOKafkaConsumer

from llmops_config import PlatformSettings
from llmops_config.kafka import kafka_client_options
from llmops_events.topics import RECORDS_RAW
from llmops_events.v1 import RecordSubmitted
from llmops_messaging import EventPublisher
from llmops_stack import KafkaBroker, KafkaComponent, NullProgress, free_port, repo_paths

pytestmark = pytest.mark.integration


async def _first_message(settings: PlatformSettings) -> bytes | None:
    consumer = AIOKafkaConsumer(
        RECORDS_RAW,
        **kafka_client_options(settings, service="test").aiokafka(),
        group_id=f"restart-{uuid.uuid4().hex}",
        auto_offset_reset="earliest",
    )
    await consumer.start()
    try:
        batch = await consumer.getmany(timeout_ms=15_000, max_records=1)
        return next((m.value for records in batch.values() for m in records), None)
    finally:
        await consumer.stop()


def test_broker_restart_keeps_accepted_messages_and_status_follows(tmp_path: Path) -> None:
    settings = PlatformSettings(
        kafka_bootstrap_servers=f"127.0.0.1:{free_port()}",
        kafka_controller_port=free_port(),
        var_dir=tmp_path,
        log_max_bytes=4096,  # the broker's start-up alone writes more: its log must rotate
        log_backup_count=2,
    )
    paths = repo_paths()
    broker = KafkaBroker(settings, paths.kafka_libs_dir, paths.kafka_log4j_config)
    component = KafkaComponent(broker)
    marker = f"survives a restart {uuid.uuid4().hex}"
    try:
        component.ensure_up(NullProgress())
        assert component.status().healthy

        async def publish() -> None:
            async with EventPublisher(settings, service="tests") as publisher:  # acks=all: durable once acked
                await publisher.publish(RecordSubmitted(tenant="t", source="s", text=marker))

        asyncio.run(publish())
        assert component.stop()
        down = component.status()
        assert not down.healthy and down.detail

        component.ensure_up(NullProgress())
        value = asyncio.run(_first_message(settings))
        assert value is not None and marker.encode() in value
    finally:
        component.stop()
    # The broker wrote its own log and rotated it by size, keeping the configured number of backups.
    log = broker.process.log_file
    rotated = sorted(path.name for path in log.parent.glob(f"{log.name}.*"))
    assert rotated == [f"{log.name}.1", f"{log.name}.2"], rotated
    assert "(kafka." in log.read_text() + (log.parent / f"{log.name}.1").read_text()
