"""The ingestion service on the real broker with its state in a real PostgreSQL (the shared store of
``LLMOPS_STATE_STORE_URL``, for replicas on several machines): records are curated once, and a batch
redelivered after a crash between the store and the offset commit has no second effect."""

from __future__ import annotations

import uuid
from pathlib import Path

import psycopg
import pytest
from ingestion_harness import start_ingestion, stop_ingestion, wait_until

from llmops_config import PlatformSettings
from llmops_events.v1 import RecordSubmitted
from llmops_messaging import Outcome, PostgresProcessedEvents
from llmops_storage.state_store import StateStoreSettings
from tests.postgres_server import fresh_database

pytestmark = pytest.mark.integration


async def test_records_are_curated_once_in_postgres_and_a_redelivered_batch_has_no_second_effect(
    kafka_settings: PlatformSettings, postgres_url: str, tmp_path: Path
) -> None:
    url = fresh_database(postgres_url, f"ingestion_{uuid.uuid4().hex[:12]}")
    tenant = f"tenant-{uuid.uuid4().hex[:8]}"
    running, broker = await start_ingestion(
        kafka_settings, tmp_path, fail_after_store=1, state_store=StateStoreSettings(url=url)
    )
    try:
        assert isinstance(running.runtime._processed, PostgresProcessedEvents)
        texts = ["first question", "second question", "third question"]
        for text in texts:
            await running.publisher.publish(RecordSubmitted(tenant=tenant, source="crm", text=text, label="refund"))
        # The same text again (another event): a duplicate by text, not a second row.
        await running.publisher.publish(RecordSubmitted(tenant=tenant, source="crm", text=texts[0], label="refund"))
        await running.wait_for_rows(tenant, 3)
        await wait_until(lambda: Outcome.DUPLICATE in running.outcomes)  # the crashed batch came again
        with psycopg.connect(url) as connection:
            curated = connection.execute(
                "SELECT record_id, count(*) FROM curated WHERE tenant = %s GROUP BY record_id", (tenant,)
            ).fetchall()
            marked = connection.execute(
                "SELECT count(*) FROM processed_events WHERE consumer = %s", (running.settings.group_id,)
            ).fetchone()
        assert len(curated) == 3 and all(count == 1 for _, count in curated)
        assert marked is not None and marked[0] >= 4  # every event applied once, the duplicate text too
        await wait_until(lambda: running.service._state.outbox_size() == 0)
        assert len(running.offline_rows(tenant)) == 3  # pushed to Feast once each
    finally:
        await stop_ingestion(running, broker)
