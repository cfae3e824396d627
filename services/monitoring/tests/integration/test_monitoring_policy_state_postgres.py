"""The drift policy's memory in the shared PostgreSQL store (#18), on a real ``postgres``: a replica
taking over from another (another process, another machine) finds its cooldowns, request counts
and epoch; two replicas starting at once draw one epoch; the SQLite default is untouched."""

from __future__ import annotations

import sqlite3
import uuid
from concurrent.futures import ThreadPoolExecutor

import pytest

from llmops_monitoring.adapters.policy_state import PolicyStateStore, PostgresPolicyStateStore, open_policy_state
from llmops_monitoring.domain.policy import PolicyState
from llmops_storage.state_store import StateStoreSettings
from tests.postgres_server import fresh_database

pytestmark = pytest.mark.integration


@pytest.fixture
def store_settings(postgres_url: str) -> StateStoreSettings:
    return StateStoreSettings(url=fresh_database(postgres_url, f"monitoring_{uuid.uuid4().hex[:8]}"))


def test_a_replica_taking_over_finds_the_cooldown_and_the_epoch(store_settings: StateStoreSettings) -> None:
    active = open_policy_state(store_settings, sqlite3.connect(":memory:"))
    assert isinstance(active, PostgresPolicyStateStore)
    state = PolicyState(consecutive_breaches=2, request_times=(1000.5, 2000.25), requests=3)
    active.save("banking", state)
    first_id = active.request_event_id("banking", 3, "training_requested")
    active.close()  # the active replica is gone

    standby = open_policy_state(store_settings, sqlite3.connect(":memory:"))
    assert standby.load("banking") == state
    assert standby.load("other") == PolicyState()
    assert standby.request_event_id("banking", 3, "training_requested") == first_id  # same epoch: same ids
    standby.save("banking", PolicyState(consecutive_breaches=0, request_times=(1000.5, 2000.25), requests=3))
    assert standby.load("banking").consecutive_breaches == 0
    standby.close()


def test_replicas_starting_together_draw_one_epoch(store_settings: StateStoreSettings) -> None:
    with ThreadPoolExecutor(4) as threads:
        stores = list(threads.map(lambda _: PostgresPolicyStateStore(store_settings), range(4)))
    assert len({store.epoch for store in stores}) == 1
    for store in stores:
        store.close()


def test_the_default_is_the_services_sqlite() -> None:
    local = sqlite3.connect(":memory:")
    store = open_policy_state(StateStoreSettings(url=""), local)
    assert type(store) is PolicyStateStore
    store.save("m", PolicyState(consecutive_breaches=1))
    assert local.execute("SELECT consecutive_breaches FROM drift_policy_state").fetchone() == (1,)


def test_a_url_that_is_not_postgres_is_refused() -> None:
    with pytest.raises(ValueError, match="postgresql://"):
        StateStoreSettings(url="mysql://db/state")
