"""The champion per model, folded from the deployments topic.

Two ways to hold it. ``FollowedChampions`` reads the compacted deployments topic whole, without a
consumer group, in every replica (the topic is the source of truth and a replay is cheap): a second
replica of the service knows every champion, however the group's partitions are spread. That is what
evaluation uses (docs/scale-out.md). ``ChampionTable`` folds the deployments events a consumer group
delivers and keeps the result in the service's SQLite (the group's offsets move on, so the fold alone
would be empty after a restart); it is right only for a service whose one replica reads the topic.
"""

from __future__ import annotations

import sqlite3
from typing import Any, Protocol

from llmops_config import PlatformSettings
from llmops_events import Envelope
from llmops_events.base import EventData
from llmops_events.topics import DEPLOYMENTS
from llmops_events.v1 import DeploymentRolledBack
from llmops_messaging.follower import TopicFollower
from llmops_serving.state import DeploymentBook


class Champions(Protocol):
    """What a service acting on the champion needs: the version now, and a way to be current first."""

    def champion(self, model_name: str) -> int | None: ...

    async def sync(self, *, timeout: float) -> None: ...


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

    async def sync(self, *, timeout: float) -> None:
        """Nothing to wait for: the table is fed by the service's own consumer, in order."""

    def champion(self, model_name: str) -> int | None:
        row = self._connection.execute("SELECT version FROM champions WHERE model_name = ?", (model_name,)).fetchone()
        return None if row is None or row[0] is None else int(row[0])


class FollowedChampions:
    """The champion per model from the whole deployments topic, read by this replica alone (a
    group-less follower replayed from the beginning on start), so every replica answers the same."""

    def __init__(self, platform: PlatformSettings, *, client_id: str, topic: str = DEPLOYMENTS) -> None:
        self._book = DeploymentBook()
        self._follower = TopicFollower(platform, topic, client_id=client_id, on_event=self._apply, start_at="beginning")

    async def start(self, *, timeout: float = 30.0) -> None:
        """Replay the topic to its current end, then keep following it."""
        await self._follower.start(timeout=timeout)

    async def stop(self) -> None:
        await self._follower.stop()

    async def sync(self, *, timeout: float) -> None:
        """Wait until every deployments event published before this call is folded in (call it just
        before acting on a champion: a promotion published a moment ago is then seen)."""
        await self._follower.sync(timeout=timeout)

    def champion(self, model_name: str) -> int | None:
        state = self._book.get(model_name)
        return None if state is None else state.champion_version

    def _apply(self, envelope: Envelope[Any]) -> None:
        self._book.apply(envelope.data)
