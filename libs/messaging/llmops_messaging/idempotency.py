"""Remembering which events a handler has already applied, so redelivery has no second effect."""

from __future__ import annotations

import sqlite3
import threading
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from datetime import UTC, datetime
from pathlib import Path

_CHUNK = 500  # ids per IN (...) query, well below SQLite's limit on bound variables


class ProcessedEvents:
    """A SQLite table of event ids a consumer group has applied.

    Services whose effect also lives in SQLite can apply the effect and mark the event in
    one transaction (``transaction()``), which makes the handler exactly-once in effect;
    others mark after the effect is durable, which is at-least-once with a narrow window.
    """

    def __init__(self, path: Path | str, *, consumer: str) -> None:
        self._consumer = consumer
        if str(path) != ":memory:":
            Path(path).parent.mkdir(parents=True, exist_ok=True)
        self._connection = sqlite3.connect(str(path), check_same_thread=False, isolation_level=None)
        self._connection.execute("PRAGMA journal_mode=WAL")
        # WAL + NORMAL: a committed transaction survives a crash of the process (what at-least-once
        # needs, since offsets are committed after it); only a power cut can lose the last few.
        # FULL would cost an fsync per event, the slowest step of ingestion.
        self._connection.execute("PRAGMA synchronous=NORMAL")
        # Up to 64 MiB of pages in memory (SQLite's default is 2 MiB): the unique indexes that
        # de-duplicate are probed at random keys, and re-reading evicted pages was a visible cost.
        self._connection.execute("PRAGMA cache_size=-65536")
        # Checkpoint the WAL every ~40 MiB rather than every 4 MiB: each checkpoint syncs the
        # database file inside some writer's COMMIT (~20 ms here), and a page written several
        # times between two checkpoints (an outbox row inserted, then cleared) is copied once.
        self._connection.execute("PRAGMA wal_autocheckpoint=10000")
        # WITHOUT ROWID: the key is the table, one B-tree to update per event instead of two.
        self._connection.execute(
            "CREATE TABLE IF NOT EXISTS processed_events ("
            " consumer TEXT NOT NULL, event_id TEXT NOT NULL, processed_at TEXT NOT NULL,"
            " PRIMARY KEY (consumer, event_id)) WITHOUT ROWID"
        )
        self._lock = threading.Lock()

    @property
    def connection(self) -> sqlite3.Connection:
        return self._connection

    def has_processed(self, event_id: str) -> bool:
        row = self._connection.execute(
            "SELECT 1 FROM processed_events WHERE consumer = ? AND event_id = ?", (self._consumer, event_id)
        ).fetchone()
        return row is not None

    def processed_among(self, event_ids: Sequence[str]) -> set[str]:
        """The ids of ``event_ids`` already applied (one query per 500 ids, for batches)."""
        found: set[str] = set()
        for start in range(0, len(event_ids), _CHUNK):
            chunk = list(event_ids[start : start + _CHUNK])
            marks = ",".join("?" * len(chunk))
            rows = self._connection.execute(
                f"SELECT event_id FROM processed_events WHERE consumer = ? AND event_id IN ({marks})",
                (self._consumer, *chunk),
            ).fetchall()
            found.update(row[0] for row in rows)
        return found

    def mark_processed_many(self, event_ids: Sequence[str]) -> None:
        """Record several events at once; call it inside ``transaction()`` (one commit, not one per id)."""
        now = datetime.now(UTC).isoformat()
        self._connection.executemany(
            "INSERT OR IGNORE INTO processed_events (consumer, event_id, processed_at) VALUES (?, ?, ?)",
            [(self._consumer, event_id, now) for event_id in event_ids],
        )

    def mark_processed(self, event_id: str) -> bool:
        """Record the event; False when it was already recorded."""
        cursor = self._connection.execute(
            "INSERT OR IGNORE INTO processed_events (consumer, event_id, processed_at) VALUES (?, ?, ?)",
            (self._consumer, event_id, datetime.now(UTC).isoformat()),
        )
        return cursor.rowcount == 1

    @contextmanager
    def transaction(self) -> Iterator[sqlite3.Connection]:
        """One SQLite transaction for the caller's effect and the ``mark_processed`` that goes with it."""
        with self._lock:
            self._connection.execute("BEGIN IMMEDIATE")
            try:
                yield self._connection
            except BaseException:
                self._connection.execute("ROLLBACK")
                raise
            self._connection.execute("COMMIT")

    def close(self) -> None:
        self._connection.close()
