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
        # Positions this consumer group sent to the DLQ: the DLQ copy is written before the batch's
        # offsets are committed, so a redelivered batch must not send it again. The fingerprint
        # (of key and value) tells a recreated topic's new message at an old offset apart.
        self._connection.execute(
            "CREATE TABLE IF NOT EXISTS dead_lettered ("
            " consumer TEXT NOT NULL, topic TEXT NOT NULL, topic_partition INTEGER NOT NULL,"
            " message_offset INTEGER NOT NULL, fingerprint TEXT NOT NULL, reason TEXT NOT NULL,"
            " dead_lettered_at TEXT NOT NULL,"
            " PRIMARY KEY (consumer, topic, topic_partition, message_offset)) WITHOUT ROWID"
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

    def mark_dead_lettered(self, topic: str, partition: int, offset: int, *, fingerprint: str, reason: str) -> None:
        """Record that the message at this position went to the DLQ (after the DLQ has it)."""
        with self.transaction():
            self._connection.execute(
                "INSERT OR REPLACE INTO dead_lettered (consumer, topic, topic_partition, message_offset, fingerprint,"
                " reason, dead_lettered_at) VALUES (?, ?, ?, ?, ?, ?, ?)",
                (self._consumer, topic, partition, offset, fingerprint, reason, datetime.now(UTC).isoformat()),
            )

    def dead_lettered_between(self, topic: str, partition: int, first: int, last: int) -> dict[int, str]:
        """Offset → fingerprint of the messages of ``[first, last]`` in this partition already dead-lettered
        (one range query per partition of a batch; nearly always empty)."""
        rows = self._connection.execute(
            "SELECT message_offset, fingerprint FROM dead_lettered WHERE consumer = ? AND topic = ?"
            " AND topic_partition = ? AND message_offset BETWEEN ? AND ?",
            (self._consumer, topic, partition, first, last),
        ).fetchall()
        return {offset: fingerprint for offset, fingerprint in rows}

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
