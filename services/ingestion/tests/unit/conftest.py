"""The store the ingestion state's tests run against: each test that builds state through
``open_processed`` runs twice, on the service's SQLite file and on a real PostgreSQL (the shared
store of ``LLMOPS_STATE_STORE_URL``, one server per session from the root ``postgres_url`` fixture,
a fresh database per test). The PostgreSQL variant is skipped only where no server is installed."""

from __future__ import annotations

import uuid
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from llmops_messaging import PostgresProcessedEvents, ProcessedEvents
from llmops_storage.state_store import StateStoreSettings

OpenProcessed = Callable[[], ProcessedEvents]
"""Opens the test's store once more: each call is another connection to the same database (a
replica sharing it)."""


@pytest.fixture(params=["sqlite", "postgresql"])
def open_processed(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[OpenProcessed]:
    opened: list[ProcessedEvents] = []
    if request.param == "postgresql":
        from tests.postgres_server import fresh_database

        url = fresh_database(request.getfixturevalue("postgres_url"), f"ingestion_{uuid.uuid4().hex[:12]}")
        settings = StateStoreSettings(url=url, connect_timeout_s=10, statement_timeout_s=30)

        def open_store() -> ProcessedEvents:
            opened.append(PostgresProcessedEvents(settings, consumer="ingestion"))
            return opened[-1]
    else:

        def open_store() -> ProcessedEvents:
            opened.append(ProcessedEvents(tmp_path / "state.db", consumer="ingestion"))
            return opened[-1]

    yield open_store
    for store in opened:
        store.close()
