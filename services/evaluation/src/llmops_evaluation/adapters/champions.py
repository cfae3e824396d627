"""Which version of each model is the champion, as told by the deployments topic."""

from __future__ import annotations

import sqlite3


class ChampionRegistry:
    """A table in the service's SQLite state, fed by ``deployment.promoted`` / ``rolled_back`` events."""

    def __init__(self, connection: sqlite3.Connection) -> None:
        self._connection = connection
        connection.execute("CREATE TABLE IF NOT EXISTS champions (model_name TEXT PRIMARY KEY, version INTEGER)")

    def champion(self, model_name: str) -> int | None:
        row = self._connection.execute("SELECT version FROM champions WHERE model_name = ?", (model_name,)).fetchone()
        return None if row is None or row[0] is None else int(row[0])

    def set_champion(self, model_name: str, version: int | None) -> None:
        self._connection.execute(
            "INSERT INTO champions (model_name, version) VALUES (?, ?) "
            "ON CONFLICT(model_name) DO UPDATE SET version = excluded.version",
            (model_name, version),
        )
