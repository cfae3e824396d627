"""Helpers to run and drive the ingestion service on the real broker in integration tests.

(A module with a unique name rather than helpers in ``conftest.py``: every service has a conftest.)
"""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pandas as pd
from aiokafka import AIOKafkaConsumer

from llmops_config import PlatformSettings
from llmops_config.kafka import kafka_client_options
from llmops_ingestion.main import IngestionRuntime
from llmops_ingestion.settings import IngestionSettings
from llmops_messaging import EventPublisher, Outcome, create_broker

LABELS = ["card_arrival", "lost_card", "refund"]


class RunningIngestion:
    def __init__(self, runtime: IngestionRuntime, publisher: EventPublisher, settings: IngestionSettings) -> None:
        self.runtime = runtime
        self.publisher = publisher
        self.settings = settings
        self.outcomes: list[Outcome] = []

    @property
    def service(self) -> Any:
        return self.runtime.service

    @property
    def var_dir(self) -> Path:
        return self.settings.platform.var_dir

    def offline_rows(self, tenant: str, *, view: str = "curated_records") -> pd.DataFrame:
        """Rows of ``tenant`` in Feast's offline Parquet parts of a feature view (records by default;
        ``curated_instructions``), duplicates included."""
        from llmops_ingestion.adapters.feast_local import PartDirectory

        parts = PartDirectory(self.settings.feast_repo_dir / "data" / view)
        with parts.reading():  # no merge deletes a part while it is read
            frame = pd.concat([pd.read_parquet(part) for part in parts.parts()], ignore_index=True)
        return frame[frame["tenant"] == tenant]

    async def wait_for_rows(
        self, tenant: str, count: int, timeout: float = 30, *, view: str = "curated_records"
    ) -> pd.DataFrame:
        await wait_until(lambda: len(self.offline_rows(tenant, view=view)) >= count, timeout=timeout)
        return self.offline_rows(tenant, view=view)


async def wait_until(predicate: Callable[[], bool], *, timeout: float = 30, interval: float = 0.2) -> None:
    async with asyncio.timeout(timeout):
        while not predicate():
            await asyncio.sleep(interval)


async def read_topic(
    settings: PlatformSettings, topic: str, *, accept: Callable[[Any], bool], until: int, timeout: float = 30
) -> list[Any]:
    """Messages of ``topic`` (from the start) that ``accept``, until ``until`` of them are seen."""
    consumer = AIOKafkaConsumer(
        topic,
        **kafka_client_options(settings, service="test").aiokafka(),
        auto_offset_reset="earliest",
        group_id=f"reader-{uuid.uuid4().hex}",
    )
    await consumer.start()
    found: list[Any] = []
    try:
        async with asyncio.timeout(timeout):
            while len(found) < until:
                for records in (await consumer.getmany(timeout_ms=500)).values():
                    found.extend(message for message in records if accept(message))
    except TimeoutError:
        pass
    finally:
        await consumer.stop()
    return found


async def start_ingestion(
    kafka_settings: PlatformSettings, var_dir: Path, *, fail_after_store: int = 0, **overrides: Any
) -> tuple[RunningIngestion, Any]:
    options: dict[str, Any] = {
        "group_id": f"ingestion-test-{uuid.uuid4().hex[:8]}",
        "allowed_labels": LABELS,
        "max_text_length": 500,
        "snapshot_every_n_labelled": 0,
        "metrics_port": 0,
        "feast_push_interval_s": 0.2,
    }
    # Everything the service writes goes below this test's var dir (artifacts too), so the PII
    # test can search all of it.
    platform = kafka_settings.model_copy(update={"var_dir": var_dir, "artifact_store_uri": ""})
    settings = IngestionSettings(platform=platform, **{**options, **overrides})
    runtime = IngestionRuntime(settings)
    await runtime.open()
    broker = create_broker(settings.platform, service="ingestion-test")
    publisher = EventPublisher(settings.platform, service="test-producer")
    await publisher.start()
    running = RunningIngestion(runtime, publisher, settings)
    failures = {"left": fail_after_store}

    def on_outcome(outcome: Outcome) -> None:
        running.outcomes.append(outcome)
        # Simulates a crash after the effect is stored but before the offset is committed:
        # the subscriber fails, so the offset is not committed and the message comes again.
        if outcome is Outcome.HANDLED and failures["left"] > 0:
            failures["left"] -= 1
            raise RuntimeError("simulated crash before the offset commit")

    # From the end of each topic: the topics are shared by every test (and every earlier run),
    # and a new group reading from the start would first chew through all of their messages.
    subscriber = runtime.attach(broker, on_outcome=on_outcome, auto_offset_reset="latest")
    await broker.start()
    # "latest" is resolved when partitions are assigned; what is produced before would be missed.
    await wait_until(lambda: subscriber.consumer is not None and len(subscriber.consumer.assignment()) > 0, timeout=60)
    for partition in subscriber.consumer.assignment():
        await subscriber.consumer.position(partition)  # forces the lookup of the end offset now
    await runtime.begin()
    return running, broker


async def stop_ingestion(running: RunningIngestion, broker: Any) -> None:
    await broker.stop()
    await running.runtime.close()
    await running.publisher.stop()
