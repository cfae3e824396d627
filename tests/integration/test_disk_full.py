"""A full disk under a real service (issue 20, item 11): the ingestion service, in-process on the
session's broker, keeps its SQLite state (``var/state``) on a tmpfs of its own, which the test fills
to the last byte while records arrive, and empties again.

While the disk is full the service must stop consuming and say so: its consumer is stalled with the
reason ``disk_full`` (what ``/metrics`` and ``make status`` show), no record of the run is stored,
nothing of it reaches the DLQ and the group's committed offsets stay where they were. Once there is
space again it must resume by itself: every record stored exactly once, none dead-lettered, the
stall cleared, the offsets committed.

Mounting a tmpfs needs root (or CAP_SYS_ADMIN); elsewhere the test is skipped with that reason. The
unit-level tests of the same behaviour are ``tests/unit/test_messaging_faults.py``."""

from __future__ import annotations

import asyncio
import contextlib
import errno
import json
import os
import sqlite3
import subprocess
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from aiokafka import AIOKafkaConsumer
from aiokafka.admin import AIOKafkaAdminClient

from llmops_config import PlatformSettings
from llmops_config.kafka import kafka_client_options
from llmops_events.topics import RECORDS_DLQ, RECORDS_RAW
from llmops_events.v1 import RecordSubmitted
from llmops_ingestion.main import IngestionRuntime
from llmops_ingestion.settings import IngestionSettings
from llmops_messaging import ConsumerHealthCollector, EventPublisher, create_broker, stall_reasons

pytestmark = [pytest.mark.integration, pytest.mark.timeout(600)]

TMPFS_SIZE = "48m"
"""Room for the state database and its write-ahead log (checkpointed every ~40 MiB) before it is filled."""
RECORDS = 300
LABELS = ("card_arrival", "lost_card", "refund")
FULL_FOR_S = 12.0
"""How long the disk stays full once the consumer reports it: several failed deliveries."""


@contextlib.contextmanager
def tmpfs(mount_point: Path, size: str) -> Iterator[Path]:
    mount_point.mkdir(parents=True, exist_ok=True)
    mounted = subprocess.run(
        ["mount", "-t", "tmpfs", "-o", f"size={size},mode=0755", "tmpfs", str(mount_point)],
        capture_output=True,
        text=True,
    )
    if mounted.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs here (needs root or CAP_SYS_ADMIN): {mounted.stderr.strip()}")
    try:
        yield mount_point
    finally:
        subprocess.run(["umount", "-l", str(mount_point)], capture_output=True)


def fill(path: Path) -> int:
    """Write ``path`` until the filesystem has no byte left; returns the bytes written."""
    written = 0
    with path.open("wb", buffering=0) as handle:
        for chunk in (1 << 20, 1 << 16, 1 << 12, 1 << 9, 1):
            block = b"\0" * chunk
            while True:
                try:
                    written += handle.write(block) or 0
                except OSError as error:
                    if error.errno != errno.ENOSPC:
                        raise
                    break
    return written


def stored(state_db: Path, tenant: str) -> list[str]:
    connection = sqlite3.connect(f"file:{state_db}?mode=ro", uri=True, timeout=30)
    try:
        rows = connection.execute("SELECT record_id FROM curated WHERE tenant = ?", (tenant,)).fetchall()
    except sqlite3.OperationalError:
        return []
    finally:
        connection.close()
    return [record_id for (record_id,) in rows]


async def committed(platform: PlatformSettings, group: str) -> dict[int, int]:
    admin = AIOKafkaAdminClient(**kafka_client_options(platform, service="test").aiokafka())
    await admin.start()
    try:
        offsets = await admin.list_consumer_group_offsets(group)
    finally:
        await admin.close()
    return {tp.partition: meta.offset for tp, meta in offsets.items() if tp.topic == RECORDS_RAW}


async def dead_letters(platform: PlatformSettings, group: str, *, seconds: float = 3.0) -> list[Any]:
    """The DLQ entries this consumer group wrote (the whole topic read back)."""
    reader = AIOKafkaConsumer(
        RECORDS_DLQ,
        **kafka_client_options(platform, service="test").aiokafka(),
        auto_offset_reset="earliest",
        group_id=f"reader-{uuid.uuid4().hex}",
    )
    await reader.start()
    found: list[Any] = []
    try:
        deadline = time.monotonic() + seconds
        while time.monotonic() < deadline:
            for records in (await reader.getmany(timeout_ms=300)).values():
                found.extend(m for m in records if dict(m.headers).get("error.consumer_group") == group.encode())
    finally:
        await reader.stop()
    return found


async def publish(platform: PlatformSettings, tenant: str, ids: list[str]) -> None:
    async with EventPublisher(platform, service="disk-full-test") as publisher:
        for index, record_id in enumerate(ids):
            data = RecordSubmitted(
                tenant=tenant,
                source="crm",
                text=f"my card question {record_id} please help",
                record_id=record_id,
                label=LABELS[index % len(LABELS)],
            )
            await publisher.publish(data, id=f"event-{record_id}")


def say(message: str) -> None:
    print(f"[disk-full] {message}", flush=True)


async def test_a_full_disk_stops_consumption_reports_it_and_resumes_when_space_is_back(
    kafka_settings: PlatformSettings, tmp_path: Path
) -> None:
    run = uuid.uuid4().hex[:8]
    tenant = f"diskfull-{run}"
    var_dir = tmp_path / "var"
    with tmpfs(var_dir / "state", TMPFS_SIZE) as state_dir:
        platform = kafka_settings.model_copy(update={"var_dir": var_dir, "artifact_store_uri": ""})
        settings = IngestionSettings(
            platform=platform,
            group_id=f"ingestion-diskfull-{run}",
            snapshot_every_n_labelled=0,
            metrics_port=0,
        )
        runtime = IngestionRuntime(settings)
        await runtime.open()
        broker = create_broker(platform, service="disk-full-test")
        runtime.attach(broker)
        await broker.start()
        await runtime.begin()
        consumer = runtime.consumer
        assert consumer is not None
        report: dict[str, Any] = {"records": RECORDS, "tmpfs": TMPFS_SIZE}
        try:
            # Caught up: a record of this run stored (whatever the session published before it too).
            await publish(platform, tenant, ["warm-up"])
            async with asyncio.timeout(180):
                while not stored(settings.state_db, tenant):
                    await asyncio.sleep(0.2)
            await asyncio.sleep(2)
            before = await committed(platform, settings.group_id)

            report["filler_bytes"] = await asyncio.to_thread(fill, state_dir / "filler")
            free = os.statvfs(state_dir)
            assert free.f_bavail == 0, "the tmpfs still has room"
            say(f"state tmpfs filled ({report['filler_bytes']} bytes of filler); publishing {RECORDS} records")
            ids = [f"r{index:04d}" for index in range(RECORDS)]
            await publish(platform, tenant, ids)

            # The consumer notices, says why, and stops: nothing stored, committed or dead-lettered.
            async with asyncio.timeout(120):
                while consumer.health().reason != "disk_full":
                    await asyncio.sleep(0.2)
            stalled_at = time.monotonic()
            health = consumer.health()
            say(f"stalled: {health.detail}")
            from prometheus_client import CollectorRegistry, generate_latest

            registry = CollectorRegistry()
            registry.register(ConsumerHealthCollector(lambda: [consumer]))
            reasons = stall_reasons(generate_latest(registry).decode())
            assert reasons and "disk_full" in reasons[0]
            await asyncio.sleep(FULL_FOR_S)
            health = consumer.health()
            report["failed_deliveries_while_full"] = consumer.progress.consecutive_failures
            report["stored_while_full"] = len(stored(settings.state_db, tenant)) - 1
            report["committed_moved_while_full"] = (await committed(platform, settings.group_id)) != before
            assert not health.healthy and health.reason == "disk_full", health.detail
            assert report["stored_while_full"] == 0
            assert not report["committed_moved_while_full"], "offsets were committed on a full disk"
            say(f"still stalled after {time.monotonic() - stalled_at:.0f}s: {health.detail}")

            # Space again: it resumes by itself.
            (state_dir / "filler").unlink()
            freed_at = time.monotonic()
            async with asyncio.timeout(180):
                while len(set(stored(settings.state_db, tenant))) < RECORDS + 1:
                    await asyncio.sleep(0.2)
            report["resumed_in_s"] = round(time.monotonic() - freed_at, 1)
            await asyncio.sleep(3)  # a batch delivered twice would show up as a second row
            rows = stored(settings.state_db, tenant)
            report["stored"] = len(rows) - 1
            report["duplicated"] = len(rows) - len(set(rows))
            report["lost"] = len({f"{tenant}/{i}" for i in ids} - set(rows))
            letters = await dead_letters(platform, settings.group_id)
            report["dead_lettered_of_run"] = sum(tenant.encode() in (m.value or b"") for m in letters)
            positions = [
                tuple(dict(m.headers)[name] for name in ("error.topic", "error.partition", "error.offset"))
                for m in letters
            ]
            report["dead_lettered_twice"] = len(positions) - len(set(positions))
            report["healthy_after"] = consumer.health().healthy
            report["committed_moved_after"] = (await committed(platform, settings.group_id)) != before
        finally:
            await broker.stop()
            await runtime.close()
            out = tmp_path / "disk-full.json"
            out.write_text(json.dumps(report, indent=2) + "\n")
            say(f"{report}; written to {out}")

    assert report["stored"] == RECORDS and report["duplicated"] == 0 and report["lost"] == 0
    assert report["dead_lettered_of_run"] == 0 and report["dead_lettered_twice"] == 0
    assert report["healthy_after"] and report["committed_moved_after"]
