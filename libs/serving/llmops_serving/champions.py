"""The champion per model, folded from the deployments topic and kept in SQLite.

Evaluation (the gate compares against it) and monitoring (reports name it) both need it across
restarts: their consumer groups' offsets move on, so the fold alone would be empty after one.
"""

from __future__ import annotations

import sqlite3

from llmops_events.base import EventData
from llmops_events.v1 import DeploymentRolledBack
from llmops_serving.state import DeploymentBook


class ChampionTable:
    """``apply`` every deployments event; ``champion`` answers from the table."""

    def __init__(self, connection: sqlite3.Connection) -> None:
        self._connection = connection
        self._book = DeploymentBook()
        connection.execute("CREATE TABLE IF NOT EXISTS champions (model_name TEXT PRIMARY KEY, version INTEGER)")

    def apply(self, event: EventData) -> None:
        state = self._book.apply(event)
        # After a restart the in-memory fold starts empty: an event that does not name the champion
        # must not erase the one remembered (only a rollback, which names what serves now, may).
        if state is not None and (state.champion_version is not None or isinstance(event, DeploymentRolledBack)):
            self._connection.execute(
                "INSERT INTO champions (model_name, version) VALUES (?, ?) "
                "ON CONFLICT(model_name) DO UPDATE SET version = excluded.version",
                (state.model_name, state.champion_version),
            )

    def champion(self, model_name: str) -> int | None:
        row = self._connection.execute("SELECT version FROM champions WHERE model_name = ?", (model_name,)).fetchone()
        return None if row is None or row[0] is None else int(row[0])
