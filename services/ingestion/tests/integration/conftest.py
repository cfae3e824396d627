"""Fixtures: a running ingestion service on the real broker (``kafka_settings`` is the session
fixture of the root ``conftest.py``), with its own consumer group and var dir."""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator

import pytest
from ingestion_harness import RunningIngestion, start_ingestion, stop_ingestion

from llmops_config import PlatformSettings


@pytest.fixture(scope="module")
async def ingestion(
    kafka_settings: PlatformSettings, tmp_path_factory: pytest.TempPathFactory
) -> AsyncIterator[RunningIngestion]:
    running, broker = await start_ingestion(kafka_settings, tmp_path_factory.mktemp("ingestion-var"))
    yield running
    await stop_ingestion(running, broker)


@pytest.fixture
def tenant() -> str:
    """A tenant of this test alone: the shared topics carry every test's records."""
    return f"tenant-{uuid.uuid4().hex[:8]}"
