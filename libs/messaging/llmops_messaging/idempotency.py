"""Remembering which events a handler has already applied, so redelivery has no second effect.

The same database remembers which positions went to the DLQ and how many times each message's
handler was started (``start_attempts``), so a message that kills its process is not retried
forever. None of it is kept forever: rows older than the retention window are pruned
(``maybe_prune``, which the consumer calls as it delivers). The window must outlive every
redelivery: a message can be read again as long as Kafka keeps it (see ``ProcessedEventsSettings``).

The store is the service's SQLite file (``ProcessedEvents``) or, for replicas on several machines,
the shared PostgreSQL store (``PostgresProcessedEvents``, ``open_processed_events``): the same
tables and statements, written once with ``?`` placeholders (``llmops_storage.state_store``).
"""

from __future__ import annotations

import logging
import sqlite3
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any, ClassVar

from pydantic import Field
from pydantic_settings import BaseSettings, SettingsConfigDict

from llmops_storage.state_store import (
    PostgresSql,
    SqlConnection,
    StateStoreSettings,
    ddl_statements,
    postgres_ddl,
)

logger = logging.getLogger(__name__)

_CHUNK = 500  # ids per IN (...) query, well below SQLite's limit on bound variables
_PRUNE_CHUNK = 10_000  # rows per DELETE: a backlog is pruned over several calls, never in one long write

DAY_S = 24 * 60 * 60
KAFKA_DEFAULT_SEGMENT_S = 7 * DAY_S
"""Kafka deletes whole log segments, a segment once its newest record is past ``retention.ms``; a
segment rolls after ``segment.ms`` (7 days by default), so a record can be readable for up to
retention + 7 days."""

AttemptKey = tuple[str, int, int, str]
"""A message's position (topic, partition, offset) and the fingerprint of its key and value."""
RunRange = tuple[str, int, int, int]
"""Offsets ``[first, last]`` of one partition (topic, partition, first, last) that a run covers."""


class ProcessedEventsSettings(BaseSettings):
    """How long the processed-events store remembers, from ``LLMOPS_PROCESSED_EVENTS_*``."""

    model_config = SettingsConfigDict(
        env_prefix="LLMOPS_PROCESSED_EVENTS_", extra="ignore", use_attribute_docstrings=True
    )

    retention_s: float = Field(default=15 * DAY_S, gt=0)
    """How long an applied event id, a dead-lettered position and an attempt count are kept. It must
    outlive every redelivery of the message: the event streams keep 7 days and Kafka may keep a
    record one more segment (7 days) beyond that, so a group that starts again from the earliest
    offset (its committed offsets expired after 7 idle days) can read 14-day-old events. 15 days."""

    prune_interval_s: float = Field(default=600.0, gt=0)
    """Least time between two prunes (one indexed DELETE per table, run after a delivery)."""


@dataclass(frozen=True, slots=True)
class Attempts:
    """What the store knows of the attempts at one message."""

    count: int
    """Times its handler was started (a start is recorded before the handler runs)."""
    first_failed_at: float | None
    """When an attempt first failed (seconds since the epoch), if one did."""
    last_error: str | None


class ProcessedEvents:
    """A SQLite table of event ids a consumer group has applied.

    Services whose effect also lives in SQLite can apply the effect and mark the event in
    one transaction (``transaction()``), which makes the handler exactly-once in effect;
    others mark after the effect is durable, which is at-least-once with a narrow window.
    """

    def __init__(
        self,
        path: Path | str,
        *,
        consumer: str,
        retention_s: float | None = None,
        prune_interval_s: float | None = None,
        clock: Callable[[], datetime] | None = None,
    ) -> None:
        """``retention_s`` and ``prune_interval_s`` default to ``ProcessedEventsSettings``; ``clock``
        (aware ``datetime``s, tests) to now in UTC."""
        self._configure(consumer, retention_s, prune_interval_s, clock)
        if str(path) != ":memory:":
            Path(path).parent.mkdir(parents=True, exist_ok=True)
        self._connection = sqlite3.connect(str(path), check_same_thread=False, isolation_level=None)
        self._sql: SqlConnection = self._connection
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
        self.execute_ddl(_SCHEMA)

    def _configure(
        self,
        consumer: str,
        retention_s: float | None,
        prune_interval_s: float | None,
        clock: Callable[[], datetime] | None,
    ) -> None:
        self._consumer = consumer
        if retention_s is None or prune_interval_s is None:
            settings = ProcessedEventsSettings()
            retention_s = settings.retention_s if retention_s is None else retention_s
            prune_interval_s = settings.prune_interval_s if prune_interval_s is None else prune_interval_s
        self.retention_s = retention_s
        self.prune_interval_s = prune_interval_s
        self._clock = clock or (lambda: datetime.now(UTC))
        self._last_prune: datetime | None = None
        self._prune_again = False
        self._lock = threading.Lock()

    dialect: ClassVar[str] = "sqlite"
    """The store's SQL dialect: ``sqlite`` or ``postgresql``."""

    @property
    def connection(self) -> sqlite3.Connection:
        """The SQLite connection (for tables of the service kept beside these; SQLite only)."""
        return self._connection

    @property
    def sql(self) -> SqlConnection:
        """The connection, whichever the store (statements with ``?`` placeholders)."""
        return self._sql

    def execute_ddl(self, script: str) -> None:
        """Run ``CREATE``/``ALTER`` statements written for SQLite (``;``-separated)."""
        for statement in ddl_statements(script):
            self._sql.execute(statement)

    def columns(self, table: str) -> set[str]:
        """The names of ``table``'s columns (to add those of a newer version)."""
        return {row[1] for row in self._sql.execute(f"PRAGMA table_info({table})")}

    def has_processed(self, event_id: str) -> bool:
        row = self._sql.execute(
            "SELECT 1 FROM processed_events WHERE consumer = ? AND event_id = ?", (self._consumer, event_id)
        ).fetchone()
        return row is not None

    def processed_among(self, event_ids: Sequence[str]) -> set[str]:
        """The ids of ``event_ids`` already applied (one query per 500 ids, for batches)."""
        found: set[str] = set()
        for start in range(0, len(event_ids), _CHUNK):
            chunk = list(event_ids[start : start + _CHUNK])
            marks = ",".join("?" * len(chunk))
            rows = self._sql.execute(
                f"SELECT event_id FROM processed_events WHERE consumer = ? AND event_id IN ({marks})",
                (self._consumer, *chunk),
            ).fetchall()
            found.update(row[0] for row in rows)
        return found

    def mark_processed_many(self, event_ids: Sequence[str]) -> None:
        """Record several events at once; call it inside ``transaction()`` (one commit, not one per id)."""
        now = self._now()
        self._sql.executemany(
            "INSERT INTO processed_events (consumer, event_id, processed_at) VALUES (?, ?, ?) ON CONFLICT DO NOTHING",
            [(self._consumer, event_id, now) for event_id in event_ids],
        )

    def mark_processed(self, event_id: str) -> bool:
        """Record the event; False when it was already recorded."""
        cursor = self._sql.execute(
            "INSERT INTO processed_events (consumer, event_id, processed_at) VALUES (?, ?, ?) ON CONFLICT DO NOTHING",
            (self._consumer, event_id, self._now()),
        )
        return cursor.rowcount == 1

    def mark_dead_lettered(self, topic: str, partition: int, offset: int, *, fingerprint: str, reason: str) -> None:
        """Record that the message at this position went to the DLQ (after the DLQ has it)."""
        with self.transaction():
            self._sql.execute(
                "INSERT INTO dead_lettered (consumer, topic, topic_partition, message_offset, fingerprint,"
                " reason, dead_lettered_at) VALUES (?, ?, ?, ?, ?, ?, ?)"
                " ON CONFLICT (consumer, topic, topic_partition, message_offset) DO UPDATE SET"
                " fingerprint = excluded.fingerprint, reason = excluded.reason,"
                " dead_lettered_at = excluded.dead_lettered_at",
                (self._consumer, topic, partition, offset, fingerprint, reason, self._now()),
            )
            self._sql.execute(
                "DELETE FROM handler_attempts WHERE consumer = ? AND topic = ? AND topic_partition = ?"
                " AND message_offset = ?",
                (self._consumer, topic, partition, offset),
            )

    def dead_lettered_between(self, topic: str, partition: int, first: int, last: int) -> dict[int, str]:
        """Offset → fingerprint of the messages of ``[first, last]`` in this partition already dead-lettered
        (one range query per partition of a batch; nearly always empty)."""
        rows = self._sql.execute(
            "SELECT message_offset, fingerprint FROM dead_lettered WHERE consumer = ? AND topic = ?"
            " AND topic_partition = ? AND message_offset BETWEEN ? AND ?",
            (self._consumer, topic, partition, first, last),
        ).fetchall()
        return {offset: fingerprint for offset, fingerprint in rows}

    # --- attempts at a handler ---------------------------------------------------------------

    def attempts_between(self, topic: str, partition: int, first: int, last: int) -> dict[int, tuple[int, str]]:
        """Offset → (attempts, fingerprint) of the messages of ``[first, last]`` in this partition whose
        handler was started and that were neither applied nor dead-lettered since (nearly always empty)."""
        rows = self._sql.execute(
            "SELECT message_offset, attempts, fingerprint FROM handler_attempts WHERE consumer = ? AND topic = ?"
            " AND topic_partition = ? AND message_offset BETWEEN ? AND ?",
            (self._consumer, topic, partition, first, last),
        ).fetchall()
        return {offset: (attempts, fingerprint) for offset, attempts, fingerprint in rows}

    def start_attempts(self, keys: Sequence[AttemptKey]) -> list[int]:
        """Count one more attempt at each message, durably and before its handler runs (one commit);
        returns the attempts each had before. A recorded count whose fingerprint differs (another
        message at that offset: the topic was recreated) starts again from zero."""
        now = self._now()
        before: list[int] = []
        with self.transaction() as connection:
            for key in keys:
                (after,) = connection.execute(_START_ATTEMPT, (self._consumer, *key, now)).fetchone()
                before.append(after - 1)
        return before

    def undo_attempts(self, keys: Sequence[AttemptKey]) -> None:
        """Take back one attempt at each message: its handler did not get to run its course through
        no fault of the message (the service is stopping; a run of several failed as a whole)."""
        with self.transaction() as connection:
            connection.executemany(
                "UPDATE handler_attempts SET attempts = attempts - 1 WHERE consumer = ? AND topic = ?"
                " AND topic_partition = ? AND message_offset = ? AND fingerprint = ? AND attempts > 0",
                [(self._consumer, *key) for key in keys],
            )

    def record_failure(self, key: AttemptKey, *, at: float, error: str) -> Attempts:
        """An attempt at the message failed at ``at`` (seconds since the epoch): remember the first
        failure's time and the last error; returns what is known of its attempts."""
        topic, partition, offset, fingerprint = key
        with self.transaction() as connection:
            connection.execute(
                "UPDATE handler_attempts SET first_failed_at = coalesce(first_failed_at, ?), last_error = ?,"
                " updated_at = ? WHERE consumer = ? AND topic = ? AND topic_partition = ? AND message_offset = ?"
                " AND fingerprint = ?",
                (at, error[:2000], self._now(), self._consumer, topic, partition, offset, fingerprint),
            )
            row = connection.execute(
                "SELECT attempts, first_failed_at, last_error FROM handler_attempts WHERE consumer = ?"
                " AND topic = ? AND topic_partition = ? AND message_offset = ? AND fingerprint = ?",
                (self._consumer, topic, partition, offset, fingerprint),
            ).fetchone()
        if row is None:  # (the attempt was not recorded: count this one)
            return Attempts(count=1, first_failed_at=at, last_error=error)
        return Attempts(count=row[0], first_failed_at=row[1], last_error=row[2])

    def attempts(self, key: AttemptKey) -> Attempts | None:
        topic, partition, offset, fingerprint = key
        row = self._sql.execute(
            "SELECT attempts, first_failed_at, last_error FROM handler_attempts WHERE consumer = ? AND topic = ?"
            " AND topic_partition = ? AND message_offset = ? AND fingerprint = ?",
            (self._consumer, topic, partition, offset, fingerprint),
        ).fetchone()
        return None if row is None else Attempts(count=row[0], first_failed_at=row[1], last_error=row[2])

    def finish(self, event_ids: Sequence[str], keys: Sequence[AttemptKey] = (), runs: Sequence[RunRange] = ()) -> None:
        """The messages at ``keys`` (or the runs ``runs``) were applied: mark their events (those not
        marked yet) and forget their attempts, in one transaction."""
        with self.transaction() as connection:
            if event_ids:
                self.mark_processed_many(event_ids)
            if keys:
                connection.executemany(
                    "DELETE FROM handler_attempts WHERE consumer = ? AND topic = ? AND topic_partition = ?"
                    " AND message_offset = ?",
                    [(self._consumer, topic, partition, offset) for topic, partition, offset, _ in keys],
                )
            if runs:
                self._end_runs(connection, runs)

    # --- runs of a batch handler ---------------------------------------------------------------

    def start_runs(self, runs: Sequence[RunRange]) -> None:
        """A batch handler is about to be started on these offset ranges (one per partition); durable."""
        now = self._now()
        with self.transaction() as connection:
            connection.executemany(
                "INSERT INTO handler_runs (consumer, topic, topic_partition, first_offset, last_offset,"
                " started_at) VALUES (?, ?, ?, ?, ?, ?)"
                " ON CONFLICT (consumer, topic, topic_partition, first_offset) DO UPDATE SET"
                " last_offset = excluded.last_offset, started_at = excluded.started_at",
                [(self._consumer, *run, now) for run in runs],
            )

    def end_runs(self, runs: Sequence[RunRange]) -> None:
        """Forget the unfinished runs within these ranges (their messages were applied or given up on).
        A run only partly within them stays: its other messages have not been applied yet."""
        with self.transaction() as connection:
            self._end_runs(connection, runs)

    def run_started_within(self, topic: str, partition: int, first: int, last: int) -> bool:
        """Whether a run that overlaps ``[first, last]`` of this partition was started and never finished."""
        row = self._sql.execute(
            "SELECT 1 FROM handler_runs WHERE consumer = ? AND topic = ? AND topic_partition = ?"
            " AND first_offset <= ? AND last_offset >= ? LIMIT 1",
            (self._consumer, topic, partition, last, first),
        ).fetchone()
        return row is not None

    def _end_runs(self, connection: SqlConnection, runs: Sequence[RunRange]) -> None:
        connection.executemany(
            "DELETE FROM handler_runs WHERE consumer = ? AND topic = ? AND topic_partition = ?"
            " AND first_offset >= ? AND last_offset <= ?",
            [(self._consumer, topic, partition, first, last) for topic, partition, first, last in runs],
        )

    # --- retention ---------------------------------------------------------------------------

    def prune(self, *, limit: int = _PRUNE_CHUNK) -> int:
        """Delete this consumer's rows older than the retention window (at most ``limit`` per table);
        returns how many went."""
        cutoff = (self._clock() - timedelta(seconds=self.retention_s)).isoformat()
        deleted = 0
        full = False
        for table, column in _AGED:
            key = _KEYS[table]
            with self.transaction() as connection:
                cursor = connection.execute(
                    f"DELETE FROM {table} WHERE consumer = ? AND ({key}) IN (SELECT {key} FROM {table}"
                    f" WHERE consumer = ? AND {column} < ? LIMIT ?)",
                    (self._consumer, self._consumer, cutoff, limit),
                )
            deleted += cursor.rowcount
            full = full or cursor.rowcount >= limit
        self._prune_again = full
        self._last_prune = self._clock()
        return deleted

    def maybe_prune(self) -> int | None:
        """``prune`` if ``prune_interval_s`` has passed since the last one (or a backlog is left, or it
        never ran in this process); None when it was not due. Cheap to call after every delivery."""
        last = self._last_prune
        if (
            last is not None
            and not self._prune_again
            and (self._clock() - last).total_seconds() < self.prune_interval_s
        ):
            return None
        started = time.monotonic()
        deleted = self.prune()
        if deleted:
            logger.info(
                "processed-events state pruned",
                extra={
                    "consumer_group": self._consumer,
                    "rows": deleted,
                    "retention_s": self.retention_s,
                    "seconds": round(time.monotonic() - started, 3),
                },
            )
        return deleted

    def _now(self) -> str:
        return self._clock().isoformat()

    @contextmanager
    def transaction(self) -> Iterator[SqlConnection]:
        """One SQLite transaction for the caller's effect and the ``mark_processed`` that goes with it."""
        with self._lock:
            self._connection.execute("BEGIN IMMEDIATE")
            try:
                yield self._connection
                # Inside the try: a COMMIT that fails (SQLITE_FULL: the disk is full) must not leave
                # the transaction open, or every later BEGIN fails even once there is space again.
                self._connection.execute("COMMIT")
            except BaseException:
                if self._connection.in_transaction:  # SQLite may have rolled it back already
                    try:
                        self._connection.execute("ROLLBACK")
                    except sqlite3.Error:
                        logger.exception("rolling back a failed transaction failed")
                raise

    def close(self) -> None:
        self._connection.close()


WRITE_LOCK = "llmops.state_store.write"
"""The advisory lock every write transaction on the shared PostgreSQL store holds until it ends."""


class PostgresProcessedEvents(ProcessedEvents):
    """The same store in the shared PostgreSQL database (``LLMOPS_STATE_STORE_URL``), for replicas
    on several machines: the same tables and statements, and ``transaction()`` with the same
    guarantee as SQLite's ``BEGIN IMMEDIATE``: one write transaction at a time in the database,
    across every replica (a transaction-scoped advisory lock, taken first). A handler's checks
    (is this record id or text stored yet?) and its writes therefore see no other replica's
    writes in between, sequence numbers are handed out in commit order (a snapshot up to
    ``max(seq)`` never misses a row committed later with a smaller one), and the unique keys the
    inserts name in ``ON CONFLICT`` stay the last word. Reads outside a transaction run
    concurrently (each statement is its own transaction). Waits are bounded by the store's
    ``statement_timeout_s``; the connection by its ``connect_timeout_s``. A connection that breaks
    (the server restarted) fails the operation in progress with ``StateStoreUnavailable`` and is
    replaced on the next one (``PostgresSql``), so the consumer's retry of the batch goes through."""

    dialect: ClassVar[str] = "postgresql"

    def __init__(
        self,
        settings: StateStoreSettings,
        *,
        consumer: str,
        retention_s: float | None = None,
        prune_interval_s: float | None = None,
        clock: Callable[[], datetime] | None = None,
    ) -> None:
        self._configure(consumer, retention_s, prune_interval_s, clock)
        self._pg = PostgresSql(settings)
        self._sql = self._pg
        with self.transaction():  # (two replicas starting at once must not both create a table)
            self.execute_ddl(_SCHEMA)

    @property
    def connection(self) -> sqlite3.Connection:
        raise TypeError("the processed events are in PostgreSQL: use .sql (or transaction())")

    def execute_ddl(self, script: str) -> None:
        for statement in ddl_statements(script):
            self._sql.execute(postgres_ddl(statement))

    def columns(self, table: str) -> set[str]:
        rows = self._sql.execute(
            "SELECT column_name FROM information_schema.columns WHERE table_schema = current_schema()"
            " AND table_name = ?",
            (table,),
        )
        return {row[0] for row in rows}

    @contextmanager
    def transaction(self) -> Iterator[SqlConnection]:
        """One PostgreSQL transaction, holding the store's write lock, for the caller's effect and
        the ``mark_processed`` that goes with it; rolled back when the block raises."""
        with self._lock, self._pg.transaction(advisory_lock=WRITE_LOCK) as statements:
            yield statements

    def close(self) -> None:
        self._pg.close()


def open_processed_events(
    store: StateStoreSettings, path: Path | str, *, consumer: str, **options: Any
) -> ProcessedEvents:
    """The shared PostgreSQL store when ``LLMOPS_STATE_STORE_URL`` names one, else SQLite at ``path``."""
    if store.shared:
        return PostgresProcessedEvents(store, consumer=consumer, **options)
    return ProcessedEvents(path, consumer=consumer, **options)


_AGED: tuple[tuple[str, str], ...] = (
    ("processed_events", "processed_at"),
    ("dead_lettered", "dead_lettered_at"),
    ("handler_attempts", "updated_at"),
    ("handler_runs", "started_at"),
)
PROCESSED_EVENTS_TABLES = tuple(table for table, _ in _AGED)
"""The store's tables (a migration copies them with the service's own)."""
_SCHEMA = """
-- WITHOUT ROWID: the key is the table, one B-tree to update per event instead of two.
CREATE TABLE IF NOT EXISTS processed_events (
    consumer TEXT NOT NULL, event_id TEXT NOT NULL, processed_at TEXT NOT NULL,
    PRIMARY KEY (consumer, event_id)) WITHOUT ROWID;
-- Positions this consumer group sent to the DLQ: the DLQ copy is written before the batch's
-- offsets are committed, so a redelivered batch must not send it again. The fingerprint
-- (of key and value) tells a recreated topic's new message at an old offset apart.
CREATE TABLE IF NOT EXISTS dead_lettered (
    consumer TEXT NOT NULL, topic TEXT NOT NULL, topic_partition INTEGER NOT NULL,
    message_offset INTEGER NOT NULL, fingerprint TEXT NOT NULL, reason TEXT NOT NULL,
    dead_lettered_at TEXT NOT NULL,
    PRIMARY KEY (consumer, topic, topic_partition, message_offset)) WITHOUT ROWID;
-- Attempts at a message's handler, by position: written before the handler runs, so a
-- process that dies in it has used one; deleted once the message is applied or dead-lettered.
CREATE TABLE IF NOT EXISTS handler_attempts (
    consumer TEXT NOT NULL, topic TEXT NOT NULL, topic_partition INTEGER NOT NULL,
    message_offset INTEGER NOT NULL, fingerprint TEXT NOT NULL, attempts INTEGER NOT NULL,
    first_failed_at REAL, last_error TEXT, updated_at TEXT NOT NULL,
    PRIMARY KEY (consumer, topic, topic_partition, message_offset)) WITHOUT ROWID;
-- Runs of several messages a batch handler was started on and has not finished: one row per
-- partition of the run (cheaper than a row per message). One left behind means the process
-- died in the run; its messages are then applied one at a time, each with its own attempts.
CREATE TABLE IF NOT EXISTS handler_runs (
    consumer TEXT NOT NULL, topic TEXT NOT NULL, topic_partition INTEGER NOT NULL,
    first_offset INTEGER NOT NULL, last_offset INTEGER NOT NULL, started_at TEXT NOT NULL,
    PRIMARY KEY (consumer, topic, topic_partition, first_offset)) WITHOUT ROWID;
""" + "".join(
    # For pruning by age: an insert appends to the right edge of these, a cheap second B-tree.
    f"CREATE INDEX IF NOT EXISTS {table}_age ON {table} (consumer, {column});\n"
    for table, column in _AGED
)
_KEYS = {
    "processed_events": "event_id",
    "dead_lettered": "topic, topic_partition, message_offset",
    "handler_attempts": "topic, topic_partition, message_offset",
    "handler_runs": "topic, topic_partition, first_offset",
}
_START_ATTEMPT = (
    "INSERT INTO handler_attempts (consumer, topic, topic_partition, message_offset, fingerprint, attempts,"
    " updated_at) VALUES (?, ?, ?, ?, ?, 1, ?)"
    " ON CONFLICT (consumer, topic, topic_partition, message_offset) DO UPDATE SET"
    " attempts = CASE WHEN handler_attempts.fingerprint = excluded.fingerprint"
    " THEN handler_attempts.attempts + 1 ELSE 1 END,"
    " first_failed_at = CASE WHEN handler_attempts.fingerprint = excluded.fingerprint"
    " THEN handler_attempts.first_failed_at END,"
    " last_error = CASE WHEN handler_attempts.fingerprint = excluded.fingerprint THEN handler_attempts.last_error END,"
    " fingerprint = excluded.fingerprint, updated_at = excluded.updated_at"
    " RETURNING attempts"
)
