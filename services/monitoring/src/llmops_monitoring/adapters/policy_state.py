"""The drift policy's memory per model (breach streak, request times) in the service's SQLite
state, so a restart neither forgets a cooldown nor starts a retraining storm."""

from __future__ import annotations

import json
import sqlite3

from llmops_monitoring.domain.policy import PolicyState


class PolicyStateStore:
    def __init__(self, connection: sqlite3.Connection) -> None:
        self._connection = connection
        connection.execute(
            "CREATE TABLE IF NOT EXISTS drift_policy_state ("
            " model_name TEXT PRIMARY KEY, consecutive_breaches INTEGER NOT NULL, request_times TEXT NOT NULL)"
        )

    def load(self, model_name: str) -> PolicyState:
        row = self._connection.execute(
            "SELECT consecutive_breaches, request_times FROM drift_policy_state WHERE model_name = ?", (model_name,)
        ).fetchone()
        if row is None:
            return PolicyState()
        return PolicyState(consecutive_breaches=int(row[0]), request_times=tuple(float(t) for t in json.loads(row[1])))

    def save(self, model_name: str, state: PolicyState) -> None:
        self._connection.execute(
            "INSERT INTO drift_policy_state (model_name, consecutive_breaches, request_times) VALUES (?, ?, ?) "
            "ON CONFLICT(model_name) DO UPDATE SET consecutive_breaches = excluded.consecutive_breaches,"
            " request_times = excluded.request_times",
            (model_name, state.consecutive_breaches, json.dumps(list(state.request_times))),
        )
