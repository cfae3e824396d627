"""The drift policy's memory per model (breach streak, request times, requests so far) in the
service's SQLite state, so a restart neither forgets a cooldown nor starts a retraining storm.

A retraining request's events are named after the state it was decided from (``request_event_id``):
the database's epoch, the model and the request's number. A request published but not recorded
(the process died in between) is decided again from the same state, so it is re-published under
the same ids and downstream skips it as a duplicate. The epoch, drawn once per database, keeps a
fresh database (``var/`` wiped) from reusing the ids of the old one's requests."""

from __future__ import annotations

import json
import sqlite3
import uuid
from typing import Any

from llmops_monitoring.domain.policy import PolicyState
from llmops_storage.migrate import PostgresTwin
from llmops_storage.state_store import PostgresSql, SqlConnection, StateStoreSettings

_NAMESPACE = uuid.UUID("0f6a3c1e-6d1b-5c8e-9b7a-2f4d8e1c7a53")


class PolicyStateStore:
    def __init__(self, connection: sqlite3.Connection) -> None:
        self._connection = connection
        connection.execute(
            "CREATE TABLE IF NOT EXISTS drift_policy_state ("
            " model_name TEXT PRIMARY KEY, consecutive_breaches INTEGER NOT NULL, request_times TEXT NOT NULL,"
            " requests INTEGER NOT NULL DEFAULT 0)"
        )
        columns = {row[1] for row in connection.execute("PRAGMA table_info(drift_policy_state)")}
        if "requests" not in columns:  # a database of an earlier version
            connection.execute("ALTER TABLE drift_policy_state ADD COLUMN requests INTEGER NOT NULL DEFAULT 0")
        connection.execute("CREATE TABLE IF NOT EXISTS drift_policy_epoch (epoch TEXT NOT NULL)")
        connection.execute(
            "INSERT INTO drift_policy_epoch (epoch) SELECT ? WHERE NOT EXISTS (SELECT 1 FROM drift_policy_epoch)",
            (uuid.uuid4().hex,),
        )
        self.epoch: str = connection.execute("SELECT epoch FROM drift_policy_epoch").fetchone()[0]

    def load(self, model_name: str) -> PolicyState:
        row = self._connection.execute(
            "SELECT consecutive_breaches, request_times, requests FROM drift_policy_state WHERE model_name = ?",
            (model_name,),
        ).fetchone()
        return _policy_state(row)

    def save(self, model_name: str, state: PolicyState) -> None:
        self._connection.execute(
            "INSERT INTO drift_policy_state (model_name, consecutive_breaches, request_times, requests)"
            " VALUES (?, ?, ?, ?) ON CONFLICT(model_name) DO UPDATE SET"
            " consecutive_breaches = excluded.consecutive_breaches, request_times = excluded.request_times,"
            " requests = excluded.requests",
            (model_name, state.consecutive_breaches, json.dumps(list(state.request_times)), state.requests),
        )

    def request_event_id(self, model_name: str, number: int, event: str) -> str:
        """The id of ``event`` (``drift_detected``, ``training_requested``) of the model's request ``number``."""
        return str(uuid.uuid5(_NAMESPACE, f"{self.epoch}/{model_name}/{number}/{event}"))

    def close(self) -> None:
        """Nothing to close: the SQLite connection belongs to the service's processed-events store."""


POLICY_STATE_LOCK = "llmops.drift_policy_state"
"""The advisory lock under which the tables are created and the epoch drawn (replicas starting at once)."""


class PostgresPolicyStateStore(PolicyStateStore):
    """The same memory in the shared PostgreSQL store (``LLMOPS_STATE_STORE_URL``): with several
    monitoring replicas (one active, the others standbys), the replica that takes over finds the
    cooldowns, request counts and epoch of the one before, so a failover neither forgets a cooldown
    nor re-uses a request's event id. A connection that breaks fails the operation in progress and
    is replaced on the next one (``PostgresSql``)."""

    def __init__(self, settings: StateStoreSettings) -> None:
        self._pg = PostgresSql(settings)
        with self._pg.transaction(advisory_lock=POLICY_STATE_LOCK) as connection:
            create_policy_state_tables(connection)
            connection.execute(
                "INSERT INTO drift_policy_epoch (epoch) VALUES (?) ON CONFLICT DO NOTHING", (uuid.uuid4().hex,)
            )
            row = connection.execute("SELECT epoch FROM drift_policy_epoch").fetchone()
        assert row is not None
        self.epoch = str(row[0])

    def load(self, model_name: str) -> PolicyState:
        row = self._pg.execute(
            "SELECT consecutive_breaches, request_times, requests FROM drift_policy_state WHERE model_name = ?",
            (model_name,),
        ).fetchone()
        return _policy_state(row)

    def save(self, model_name: str, state: PolicyState) -> None:
        self._pg.execute(
            "INSERT INTO drift_policy_state (model_name, consecutive_breaches, request_times, requests)"
            " VALUES (?, ?, ?, ?) ON CONFLICT (model_name) DO UPDATE SET"
            " consecutive_breaches = excluded.consecutive_breaches, request_times = excluded.request_times,"
            " requests = excluded.requests",
            (model_name, state.consecutive_breaches, json.dumps(list(state.request_times)), state.requests),
        )

    def close(self) -> None:
        self._pg.close()


def create_policy_state_tables(connection: SqlConnection) -> None:
    """The policy memory's tables in PostgreSQL (call it in a transaction holding ``POLICY_STATE_LOCK``);
    no epoch is drawn, so a migration can bring the SQLite store's own."""
    connection.execute(
        "CREATE TABLE IF NOT EXISTS drift_policy_state ("
        " model_name TEXT PRIMARY KEY, consecutive_breaches INTEGER NOT NULL, request_times TEXT NOT NULL,"
        " requests INTEGER NOT NULL DEFAULT 0)"
    )
    connection.execute(
        "CREATE TABLE IF NOT EXISTS drift_policy_epoch (only_row BOOLEAN PRIMARY KEY DEFAULT TRUE"
        " CHECK (only_row), epoch TEXT NOT NULL)"
    )


def postgres_state_twin() -> PostgresTwin:
    """The policy memory as the shared PostgreSQL store holds it, for ``llmops state migrate``. The
    epoch comes over with it (no new one is drawn), so the request ids stay those of the SQLite
    store; the rest of the service's SQLite file (its processed events) stays per replica."""
    return PostgresTwin(
        service="monitoring",
        tables=("drift_policy_state", "drift_policy_epoch"),
        create_tables=_create_postgres_tables,
        write_lock=POLICY_STATE_LOCK,
    )


def _create_postgres_tables(settings: StateStoreSettings) -> None:
    sql = PostgresSql(settings)
    try:
        with sql.transaction(advisory_lock=POLICY_STATE_LOCK) as connection:
            create_policy_state_tables(connection)
    finally:
        sql.close()


def open_policy_state(settings: StateStoreSettings, local: sqlite3.Connection) -> PolicyStateStore:
    """The shared PostgreSQL store when ``LLMOPS_STATE_STORE_URL`` names one, else the service's SQLite."""
    if settings.shared:
        return PostgresPolicyStateStore(settings)
    return PolicyStateStore(local)


def _policy_state(row: Any) -> PolicyState:
    """A ``drift_policy_state`` row (either store's), or no row: a model never breached."""
    if row is None:
        return PolicyState()
    return PolicyState(
        consecutive_breaches=int(row[0]),
        request_times=tuple(float(t) for t in json.loads(row[1])),
        requests=int(row[2]),
    )
