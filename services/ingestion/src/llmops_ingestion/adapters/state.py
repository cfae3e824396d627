"""The service's own state, in the same database and transactions as ``ProcessedEvents``: the
service's SQLite file, or the shared PostgreSQL store (``LLMOPS_STATE_STORE_URL``) when replicas run
on several machines. The statements are written once (``?`` placeholders, ``ON CONFLICT``); the
store's ``execute_ddl`` gives the schema PostgreSQL's types (``llmops_storage.state_store``).

Tables:

* ``curated``: one row per accepted record or instruction example (``content``: ``records`` or
  ``instructions``; de-duplication by ``record_id`` and by ``(tenant, dedup_key)``, lineage
  position, labelled flag) and, until it reaches Feast, the feature row to push (a transactional
  outbox). Only redacted text is ever stored.
* ``served_requests`` / ``pending_feedback``: the two halves of the feedback flywheel, which
  may arrive in either order since they travel on different topics.
* ``served_generations`` / ``pending_generation_feedback``: the same for generations (redacted
  prompt and output, with the rating and corrected answer joined so far); like the two above they
  are kept for ``flywheel_retention`` only.
* ``preference_pairs``: chosen/rejected answers derived from feedback on generations, kept like
  curated rows (an instructions snapshot takes every pair up to its ``max_pair_seq``).
* ``snapshots``: which curated rows each snapshot covered (of its ``content`` series), whether its
  event went out, and the event that caused it (a retraining request), so handling that event again
  finds the snapshot.
* ``erasures`` / ``erased_records``: every erasure handled, and a tombstone per erased record id
  (curated and removed, or named by the request before it arrived): a record whose id has a
  tombstone is never stored again, however often it is redelivered; a tenant's erasure also
  refuses the tenant's records submitted up to its ``requested_at``.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from contextlib import AbstractContextManager
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from enum import StrEnum
from typing import Any

import msgspec

from llmops_ingestion.domain.feedback import PreferencePair, ServedGeneration, ServedRequest
from llmops_ingestion.domain.instructions import Turn
from llmops_ingestion.domain.snapshot import Position
from llmops_messaging import PostgresProcessedEvents, ProcessedEvents
from llmops_messaging.idempotency import PROCESSED_EVENTS_TABLES, WRITE_LOCK
from llmops_storage.migrate import PostgresTwin
from llmops_storage.state_store import SqlConnection, StateStoreSettings

_SCHEMA = """
CREATE TABLE IF NOT EXISTS curated (
    seq INTEGER PRIMARY KEY AUTOINCREMENT,
    record_id TEXT NOT NULL UNIQUE,
    tenant TEXT NOT NULL,
    dedup_key TEXT NOT NULL,
    labelled INTEGER NOT NULL,
    topic TEXT NOT NULL,
    partition INTEGER NOT NULL,
    "offset" INTEGER NOT NULL,
    ingested_at TEXT NOT NULL,
    outbox BLOB,
    content TEXT NOT NULL DEFAULT 'records',
    UNIQUE (tenant, dedup_key)
);
CREATE INDEX IF NOT EXISTS curated_outbox ON curated (seq) WHERE outbox IS NOT NULL;
CREATE TABLE IF NOT EXISTS served_requests (
    request_id TEXT PRIMARY KEY,
    tenant TEXT NOT NULL,
    text TEXT NOT NULL,
    model_name TEXT NOT NULL,
    model_version INTEGER NOT NULL,
    predicted_label TEXT NOT NULL,
    received_at TEXT NOT NULL
);
CREATE TABLE IF NOT EXISTS pending_feedback (
    request_id TEXT PRIMARY KEY,
    true_label TEXT NOT NULL,
    topic TEXT NOT NULL,
    partition INTEGER NOT NULL,
    "offset" INTEGER NOT NULL,
    received_at TEXT NOT NULL
);
CREATE TABLE IF NOT EXISTS served_generations (
    request_id TEXT PRIMARY KEY,
    tenant TEXT NOT NULL,
    model_name TEXT NOT NULL,
    model_version INTEGER NOT NULL,
    prompt_json TEXT NOT NULL,
    prompt_key TEXT NOT NULL,
    output TEXT NOT NULL,
    rating INTEGER,
    corrected_answer TEXT,
    received_at TEXT NOT NULL
);
CREATE INDEX IF NOT EXISTS served_generations_rated
    ON served_generations (tenant, prompt_key, received_at) WHERE rating IS NOT NULL;
CREATE INDEX IF NOT EXISTS served_generations_received ON served_generations (received_at);
CREATE TABLE IF NOT EXISTS pending_generation_feedback (
    request_id TEXT PRIMARY KEY,
    rating INTEGER,
    corrected_answer TEXT,
    topic TEXT NOT NULL,
    partition INTEGER NOT NULL,
    "offset" INTEGER NOT NULL,
    received_at TEXT NOT NULL
);
CREATE INDEX IF NOT EXISTS pending_generation_feedback_received ON pending_generation_feedback (received_at);
CREATE TABLE IF NOT EXISTS preference_pairs (
    seq INTEGER PRIMARY KEY AUTOINCREMENT,
    pair_id TEXT NOT NULL UNIQUE,
    tenant TEXT NOT NULL,
    messages_json TEXT NOT NULL,
    chosen TEXT NOT NULL,
    rejected TEXT NOT NULL,
    source TEXT NOT NULL,
    split_key TEXT NOT NULL,
    topic TEXT NOT NULL,
    partition INTEGER NOT NULL,
    "offset" INTEGER NOT NULL,
    created_at TEXT NOT NULL
);
CREATE TABLE IF NOT EXISTS erasures (
    erasure_id TEXT PRIMARY KEY,
    tenant TEXT NOT NULL,
    subjects_json TEXT,
    requested_by TEXT NOT NULL,
    reason TEXT NOT NULL,
    requested_at TEXT NOT NULL,
    erased_at TEXT NOT NULL
);
CREATE INDEX IF NOT EXISTS erasures_tenant ON erasures (tenant) WHERE subjects_json IS NULL;
CREATE TABLE IF NOT EXISTS erased_records (
    record_id TEXT PRIMARY KEY,
    tenant TEXT NOT NULL,
    erasure_id TEXT NOT NULL,
    content TEXT,
    labelled INTEGER NOT NULL DEFAULT 0
);
CREATE INDEX IF NOT EXISTS erased_records_erasure ON erased_records (erasure_id);
CREATE TABLE IF NOT EXISTS snapshots (
    dataset_id TEXT PRIMARY KEY,
    max_seq INTEGER NOT NULL,
    created_at TEXT NOT NULL,
    event_json TEXT NOT NULL,
    published INTEGER NOT NULL DEFAULT 0,
    content TEXT NOT NULL DEFAULT 'records'
);
"""

RECORDS = "records"
INSTRUCTIONS = "instructions"


def postgres_state_twin() -> PostgresTwin:
    """Ingestion's state as the shared PostgreSQL store holds it, for ``llmops state migrate``: every
    table of its SQLite file (the processed events and the service's own), created as the service
    creates them."""
    return PostgresTwin(
        service="ingestion",
        tables=(*PROCESSED_EVENTS_TABLES, *re.findall(r"CREATE TABLE IF NOT EXISTS (\w+)", _SCHEMA)),
        create_tables=_create_postgres_tables,
        write_lock=WRITE_LOCK,
    )


def _create_postgres_tables(settings: StateStoreSettings) -> None:
    processed = PostgresProcessedEvents(settings, consumer="ingestion")
    try:
        IngestionState(processed)
    finally:
        processed.close()


class StoreOutcome(StrEnum):
    ACCEPTED = "accepted"
    DUPLICATE_RECORD_ID = "duplicate_record_id"
    DUPLICATE_TEXT = "duplicate_text"
    ERASED = "erased"
    """The record id has an erasure's tombstone: it is never stored again."""


@dataclass(frozen=True, slots=True)
class Erasure:
    """An erasure request as the state keeps it: the whole tenant (``record_ids`` None) or the
    listed curated record ids (``<tenant>/<id>``)."""

    erasure_id: str
    tenant: str
    record_ids: tuple[str, ...] | None
    requested_by: str
    reason: str
    requested_at: datetime


@dataclass(frozen=True, slots=True)
class ErasedRecord:
    """A tombstone: a record id an erasure removed (``content`` None: named by the request, never
    curated here, so nothing had to be removed)."""

    record_id: str
    content: str | None
    labelled: bool


@dataclass(frozen=True, slots=True)
class PendingFeedback:
    request_id: str
    true_label: str
    position: Position


@dataclass(frozen=True, slots=True)
class PendingGenerationFeedback:
    """A rating and/or corrected answer (redacted) waiting for its generation's log."""

    request_id: str
    rating: int | None
    corrected_answer: str | None
    position: Position


@dataclass(frozen=True, slots=True)
class StoredPair:
    """A preference pair as a snapshot takes it: the pair and where the feedback that made it was read."""

    pair: PreferencePair
    position: Position


@dataclass(frozen=True, slots=True)
class SnapshotMember:
    record_id: str
    position: Position


@dataclass(frozen=True, slots=True)
class CuratedRow:
    """What ``store_curated_many`` stores of one curated record."""

    record_id: str
    tenant: str
    dedup_key: str
    labelled: bool
    position: Position
    feature_row: dict[str, Any]
    content: str = RECORDS
    """The series the row belongs to: ``records`` or ``instructions``."""


@dataclass(frozen=True, slots=True)
class OutboxRow:
    """A feature row waiting for Feast: its place in the outbox, its series and the row."""

    seq: int
    content: str
    row: dict[str, Any]


_CHUNK = 500  # values per IN (...) query

# The outbox holds each feature row as JSON (UTF-8 bytes); msgspec encodes a row ~5x faster than
# the standard library, which mattered at thousands of records a second.
_encode_outbox = msgspec.json.Encoder().encode
_decode_outbox = msgspec.json.Decoder(dict[str, Any]).decode


def _existing_ids(connection: SqlConnection, record_ids: Sequence[str], *, table: str = "curated") -> set[str]:
    """The ids of ``record_ids`` already in ``table`` (curated rows, or erasures' tombstones)."""
    found: set[str] = set()
    unique = list(dict.fromkeys(record_ids))
    for start in range(0, len(unique), _CHUNK):
        chunk = unique[start : start + _CHUNK]
        query = f"SELECT record_id FROM {table} WHERE record_id IN ({','.join('?' * len(chunk))})"
        found.update(row[0] for row in connection.execute(query, chunk))
    return found


def _existing_texts(connection: SqlConnection, pairs: Sequence[tuple[str, str]]) -> set[tuple[str, str]]:
    """The (tenant, dedup_key) pairs already stored; queried per tenant, which the unique index serves."""
    by_tenant: dict[str, list[str]] = {}
    for tenant, key in dict.fromkeys(pairs):
        by_tenant.setdefault(tenant, []).append(key)
    found: set[tuple[str, str]] = set()
    for tenant, keys in by_tenant.items():
        for start in range(0, len(keys), _CHUNK):
            chunk = keys[start : start + _CHUNK]
            query = f"SELECT dedup_key FROM curated WHERE tenant = ? AND dedup_key IN ({','.join('?' * len(chunk))})"
            found.update((tenant, row[0]) for row in connection.execute(query, (tenant, *chunk)))
    return found


class IngestionState:
    """Queries over the service's tables; writes take the caller's open connection/transaction."""

    def __init__(self, processed: ProcessedEvents) -> None:
        self._processed = processed
        self._connection = processed.sql
        # In one write transaction: replicas starting together on a shared store create it once.
        with processed.transaction():
            processed.execute_ddl(_SCHEMA)
            if "cause" not in processed.columns("snapshots"):  # a database from before causes were recorded
                processed.execute_ddl("ALTER TABLE snapshots ADD COLUMN cause TEXT")
            # A database from before instruction examples: everything in it is records.
            for table in ("curated", "snapshots"):
                if "content" not in processed.columns(table):
                    processed.execute_ddl(f"ALTER TABLE {table} ADD COLUMN content TEXT NOT NULL DEFAULT 'records'")
            if "max_pair_seq" not in processed.columns("snapshots"):  # from before preference pairs: none covered
                processed.execute_ddl("ALTER TABLE snapshots ADD COLUMN max_pair_seq INTEGER NOT NULL DEFAULT 0")
            processed.execute_ddl(
                "CREATE UNIQUE INDEX IF NOT EXISTS snapshots_cause ON snapshots (cause) WHERE cause IS NOT NULL"
            )

    # --- curated records ------------------------------------------------------------------

    @staticmethod
    def store_curated(
        connection: SqlConnection,
        *,
        record_id: str,
        tenant: str,
        dedup_key: str,
        labelled: bool,
        position: Position,
        feature_row: dict[str, Any],
        ingested_at: datetime,
        content: str = RECORDS,
    ) -> StoreOutcome:
        """Insert a curated record unless its id or its text (per tenant) is already known, or an
        erasure removed its id."""
        if connection.execute("SELECT 1 FROM erased_records WHERE record_id = ?", (record_id,)).fetchone():
            return StoreOutcome.ERASED
        if connection.execute("SELECT 1 FROM curated WHERE record_id = ?", (record_id,)).fetchone():
            return StoreOutcome.DUPLICATE_RECORD_ID
        if connection.execute(
            "SELECT 1 FROM curated WHERE tenant = ? AND dedup_key = ?", (tenant, dedup_key)
        ).fetchone():
            return StoreOutcome.DUPLICATE_TEXT
        connection.execute(
            "INSERT INTO curated"
            ' (record_id, tenant, dedup_key, labelled, topic, partition, "offset", ingested_at, outbox, content)'
            " VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?) ON CONFLICT DO NOTHING",
            (
                record_id,
                tenant,
                dedup_key,
                int(labelled),
                position.topic,
                position.partition,
                position.offset,
                ingested_at.isoformat(),
                _encode_outbox(feature_row),
                content,
            ),
        )
        return StoreOutcome.ACCEPTED

    @staticmethod
    def store_curated_many(
        connection: SqlConnection, records: Sequence[CuratedRow], *, ingested_at: datetime
    ) -> list[StoreOutcome]:
        """``store_curated`` for a batch, in order, with a few queries instead of three per record:
        a record is a duplicate of one stored before or of one earlier in the batch."""
        known_ids = _existing_ids(connection, [r.record_id for r in records])
        known_texts = _existing_texts(connection, [(r.tenant, r.dedup_key) for r in records])
        erased = _existing_ids(connection, [r.record_id for r in records], table="erased_records")
        outcomes: list[StoreOutcome] = []
        rows: list[tuple[Any, ...]] = []
        stamp = ingested_at.isoformat()
        for record in records:
            if record.record_id in erased:
                outcomes.append(StoreOutcome.ERASED)
                continue
            if record.record_id in known_ids:
                outcomes.append(StoreOutcome.DUPLICATE_RECORD_ID)
                continue
            if (record.tenant, record.dedup_key) in known_texts:
                outcomes.append(StoreOutcome.DUPLICATE_TEXT)
                continue
            known_ids.add(record.record_id)
            known_texts.add((record.tenant, record.dedup_key))
            outcomes.append(StoreOutcome.ACCEPTED)
            rows.append(
                (
                    record.record_id,
                    record.tenant,
                    record.dedup_key,
                    int(record.labelled),
                    record.position.topic,
                    record.position.partition,
                    record.position.offset,
                    stamp,
                    _encode_outbox(record.feature_row),
                    record.content,
                )
            )
        connection.executemany(
            "INSERT INTO curated"
            ' (record_id, tenant, dedup_key, labelled, topic, partition, "offset", ingested_at, outbox, content)'
            " VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?) ON CONFLICT DO NOTHING",
            rows,
        )
        return outcomes

    def outbox(self, limit: int) -> list[OutboxRow]:
        """Feature rows not yet confirmed in Feast, oldest first."""
        rows = self._connection.execute(
            "SELECT seq, content, outbox FROM curated WHERE outbox IS NOT NULL ORDER BY seq LIMIT ?", (limit,)
        ).fetchall()
        return [OutboxRow(seq, content, _decode_outbox(payload)) for seq, content, payload in rows]

    def outbox_size(self) -> int:
        return int(self._connection.execute("SELECT count(*) FROM curated WHERE outbox IS NOT NULL").fetchone()[0])

    def mark_pushed(self, seqs: Sequence[int]) -> None:
        with self._write() as connection:
            connection.executemany("UPDATE curated SET outbox = NULL WHERE seq = ?", [(seq,) for seq in seqs])

    def max_seq(self) -> int:
        return int(self._connection.execute("SELECT coalesce(max(seq), 0) FROM curated").fetchone()[0])

    def labelled_since_last_snapshot(self, content: str = RECORDS) -> int:
        """Labelled rows of the ``content`` series stored after its last snapshot (for instruction
        examples, preference pairs made since count too: they are new training data as well)."""
        rows = int(
            self._connection.execute(
                "SELECT count(*) FROM curated WHERE labelled = 1 AND content = ? AND seq > "
                "(SELECT coalesce(max(max_seq), 0) FROM snapshots WHERE content = ?)",
                (content, content),
            ).fetchone()[0]
        )
        if content != INSTRUCTIONS:
            return rows
        pairs = int(
            self._connection.execute(
                "SELECT count(*) FROM preference_pairs WHERE seq > "
                "(SELECT coalesce(max(max_pair_seq), 0) FROM snapshots WHERE content = ?)",
                (content,),
            ).fetchone()[0]
        )
        return rows + pairs

    def labelled_members(self, *, up_to_seq: int, content: str = RECORDS) -> list[SnapshotMember]:
        rows = self._connection.execute(
            'SELECT record_id, topic, partition, "offset" FROM curated'
            " WHERE labelled = 1 AND content = ? AND seq <= ? ORDER BY seq",
            (content, up_to_seq),
        ).fetchall()
        return [
            SnapshotMember(record_id, Position(topic, partition, offset))
            for record_id, topic, partition, offset in rows
        ]

    # --- feedback flywheel ----------------------------------------------------------------

    @staticmethod
    def remember_request(connection: SqlConnection, request: ServedRequest, *, received_at: datetime) -> None:
        connection.execute(
            "INSERT INTO served_requests VALUES (?, ?, ?, ?, ?, ?, ?) ON CONFLICT DO NOTHING",
            (
                request.request_id,
                request.tenant,
                request.text,
                request.model_name,
                request.model_version,
                request.predicted_label,
                received_at.isoformat(),
            ),
        )

    def served_request(self, request_id: str) -> ServedRequest | None:
        row = self._connection.execute(
            "SELECT request_id, tenant, text, model_name, model_version, predicted_label FROM served_requests"
            " WHERE request_id = ?",
            (request_id,),
        ).fetchone()
        return ServedRequest(*row) if row else None

    @staticmethod
    def park_feedback(connection: SqlConnection, feedback: PendingFeedback, *, received_at: datetime) -> None:
        connection.execute(
            'INSERT INTO pending_feedback (request_id, true_label, topic, partition, "offset", received_at)'
            " VALUES (?, ?, ?, ?, ?, ?) ON CONFLICT (request_id) DO UPDATE SET true_label = excluded.true_label,"
            ' topic = excluded.topic, partition = excluded.partition, "offset" = excluded."offset",'
            " received_at = excluded.received_at",
            (
                feedback.request_id,
                feedback.true_label,
                feedback.position.topic,
                feedback.position.partition,
                feedback.position.offset,
                received_at.isoformat(),
            ),
        )

    def pending_feedback(self, request_id: str) -> PendingFeedback | None:
        row = self._connection.execute(
            'SELECT request_id, true_label, topic, partition, "offset" FROM pending_feedback WHERE request_id = ?',
            (request_id,),
        ).fetchone()
        return PendingFeedback(row[0], row[1], Position(row[2], row[3], row[4])) if row else None

    @staticmethod
    def drop_pending_feedback(connection: SqlConnection, request_id: str) -> None:
        connection.execute("DELETE FROM pending_feedback WHERE request_id = ?", (request_id,))

    def prune_flywheel(self, *, older_than: timedelta, now: datetime | None = None) -> None:
        """Forget served requests and generations and parked feedback older than the inference topic
        keeps them (preference pairs made from them stay: they are training data)."""
        cutoff = ((now or datetime.now(UTC)) - older_than).isoformat()
        with self._write() as connection:
            connection.execute("DELETE FROM served_requests WHERE received_at < ?", (cutoff,))
            connection.execute("DELETE FROM pending_feedback WHERE received_at < ?", (cutoff,))
            connection.execute("DELETE FROM served_generations WHERE received_at < ?", (cutoff,))
            connection.execute("DELETE FROM pending_generation_feedback WHERE received_at < ?", (cutoff,))

    # --- generations and preference pairs -------------------------------------------------

    @staticmethod
    def remember_generation(connection: SqlConnection, generation: ServedGeneration, *, received_at: datetime) -> None:
        """Store a generation, or add its feedback to the stored one (the first rating and the first
        corrected answer stay: feedback delivered twice changes nothing)."""
        connection.execute(
            "INSERT INTO served_generations (request_id, tenant, model_name, model_version, prompt_json,"
            " prompt_key, output, rating, corrected_answer, received_at) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?)"
            " ON CONFLICT (request_id) DO UPDATE SET"
            " rating = coalesce(served_generations.rating, excluded.rating),"
            " corrected_answer = coalesce(served_generations.corrected_answer, excluded.corrected_answer)",
            (
                generation.request_id,
                generation.tenant,
                generation.model_name,
                generation.model_version,
                generation.prompt_json,
                generation.prompt_key,
                generation.output,
                generation.rating,
                generation.corrected_answer,
                received_at.isoformat(),
            ),
        )

    def served_generation(self, request_id: str) -> ServedGeneration | None:
        row = self._connection.execute(
            f"SELECT {_GENERATION_COLUMNS} FROM served_generations WHERE request_id = ?", (request_id,)
        ).fetchone()
        return _generation(row) if row else None

    def rated_generations(self, *, tenant: str, prompt_key: str, exclude: str, limit: int) -> list[ServedGeneration]:
        """Up to ``limit`` rated generations of ``tenant`` for the same prompt, newest first, other
        than request ``exclude``."""
        rows = self._connection.execute(
            f"SELECT {_GENERATION_COLUMNS} FROM served_generations"
            " WHERE tenant = ? AND prompt_key = ? AND rating IS NOT NULL AND request_id != ?"
            " ORDER BY received_at DESC, request_id LIMIT ?",
            (tenant, prompt_key, exclude, limit),
        ).fetchall()
        return [_generation(row) for row in rows]

    @staticmethod
    def park_generation_feedback(
        connection: SqlConnection, feedback: PendingGenerationFeedback, *, received_at: datetime
    ) -> None:
        """Park feedback for a generation not seen yet; feedback parked before keeps what it had."""
        connection.execute(
            "INSERT INTO pending_generation_feedback"
            ' (request_id, rating, corrected_answer, topic, partition, "offset", received_at)'
            " VALUES (?, ?, ?, ?, ?, ?, ?) ON CONFLICT (request_id) DO UPDATE SET"
            " rating = coalesce(pending_generation_feedback.rating, excluded.rating),"
            " corrected_answer = coalesce(pending_generation_feedback.corrected_answer, excluded.corrected_answer)",
            (
                feedback.request_id,
                feedback.rating,
                feedback.corrected_answer,
                feedback.position.topic,
                feedback.position.partition,
                feedback.position.offset,
                received_at.isoformat(),
            ),
        )

    def pending_generation_feedback(self, request_id: str) -> PendingGenerationFeedback | None:
        row = self._connection.execute(
            'SELECT request_id, rating, corrected_answer, topic, partition, "offset"'
            " FROM pending_generation_feedback WHERE request_id = ?",
            (request_id,),
        ).fetchone()
        if row is None:
            return None
        return PendingGenerationFeedback(row[0], row[1], row[2], Position(row[3], row[4], row[5]))

    @staticmethod
    def drop_pending_generation_feedback(connection: SqlConnection, request_id: str) -> None:
        connection.execute("DELETE FROM pending_generation_feedback WHERE request_id = ?", (request_id,))

    @staticmethod
    def store_pairs(
        connection: SqlConnection, pairs: Sequence[PreferencePair], *, position: Position, created_at: datetime
    ) -> list[PreferencePair]:
        """Store pairs not stored before (by ``pair_id``); returns those that were new."""
        new: list[PreferencePair] = []
        for pair in pairs:
            cursor = connection.execute(
                "INSERT INTO preference_pairs (pair_id, tenant, messages_json, chosen, rejected, source,"
                ' split_key, topic, partition, "offset", created_at) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)'
                " ON CONFLICT DO NOTHING",
                (
                    pair.pair_id,
                    pair.tenant,
                    pair.messages_json,
                    pair.chosen,
                    pair.rejected,
                    pair.source,
                    pair.split_key,
                    position.topic,
                    position.partition,
                    position.offset,
                    created_at.isoformat(),
                ),
            )
            if cursor.rowcount:
                new.append(pair)
        return new

    def max_pair_seq(self) -> int:
        return int(self._connection.execute("SELECT coalesce(max(seq), 0) FROM preference_pairs").fetchone()[0])

    def pairs(self, *, up_to_seq: int) -> list[StoredPair]:
        """Every preference pair stored up to ``up_to_seq``, in the order they were made."""
        rows = self._connection.execute(
            "SELECT pair_id, tenant, messages_json, chosen, rejected, source, split_key, topic, partition,"
            ' "offset" FROM preference_pairs WHERE seq <= ? ORDER BY seq',
            (up_to_seq,),
        ).fetchall()
        return [StoredPair(PreferencePair(*row[:7]), Position(row[7], row[8], row[9])) for row in rows]

    # --- erasures -------------------------------------------------------------------------

    @staticmethod
    def erase(connection: SqlConnection, erasure: Erasure, *, erased_at: datetime) -> None:
        """Remove the erasure's curated rows (outbox included: a row not yet pushed never reaches
        Feast) and leave a tombstone per id; for a whole tenant also its served requests and
        generations and its preference pairs (they hold its redacted texts). Idempotent: handled
        again, it finds its tombstones and removes nothing more."""
        subjects = None if erasure.record_ids is None else msgspec.json.encode(list(erasure.record_ids)).decode()
        connection.execute(
            "INSERT INTO erasures (erasure_id, tenant, subjects_json, requested_by, reason, requested_at,"
            " erased_at) VALUES (?, ?, ?, ?, ?, ?, ?) ON CONFLICT DO NOTHING",
            (
                erasure.erasure_id,
                erasure.tenant,
                subjects,
                erasure.requested_by,
                erasure.reason,
                erasure.requested_at.isoformat(),
                erased_at.isoformat(),
            ),
        )
        if erasure.record_ids is None:
            matched = connection.execute(
                "SELECT record_id, content, labelled FROM curated WHERE tenant = ?", (erasure.tenant,)
            ).fetchall()
        else:
            matched = []
            ids = list(dict.fromkeys(erasure.record_ids))
            for start in range(0, len(ids), _CHUNK):
                chunk = ids[start : start + _CHUNK]
                matched += connection.execute(
                    "SELECT record_id, content, labelled FROM curated"
                    f" WHERE tenant = ? AND record_id IN ({','.join('?' * len(chunk))})",
                    (erasure.tenant, *chunk),
                ).fetchall()
        connection.executemany(
            "INSERT INTO erased_records (record_id, tenant, erasure_id, content, labelled)"
            " VALUES (?, ?, ?, ?, ?) ON CONFLICT DO NOTHING",
            [
                (record_id, erasure.tenant, erasure.erasure_id, content, labelled)
                for record_id, content, labelled in matched
            ],
        )
        connection.executemany("DELETE FROM curated WHERE record_id = ?", [(record_id,) for record_id, _, _ in matched])
        if erasure.record_ids is not None:
            # Ids not curated (yet): a tombstone alone, so the record is refused when it comes.
            connection.executemany(
                "INSERT INTO erased_records (record_id, tenant, erasure_id, content, labelled)"
                " VALUES (?, ?, ?, NULL, 0) ON CONFLICT DO NOTHING",
                [(record_id, erasure.tenant, erasure.erasure_id) for record_id in erasure.record_ids],
            )
            return
        for table in ("served_requests", "served_generations", "preference_pairs"):
            connection.execute(f"DELETE FROM {table} WHERE tenant = ?", (erasure.tenant,))

    def erased_records(self, erasure_id: str) -> list[ErasedRecord]:
        """The tombstones an erasure left, in id order."""
        rows = self._connection.execute(
            "SELECT record_id, content, labelled FROM erased_records WHERE erasure_id = ? ORDER BY record_id",
            (erasure_id,),
        ).fetchall()
        return [ErasedRecord(record_id, content, bool(labelled)) for record_id, content, labelled in rows]

    def tenant_erasure_count(self) -> int:
        """How many whole-tenant erasures were applied (by any replica sharing this store)."""
        return int(self._connection.execute("SELECT count(*) FROM erasures WHERE subjects_json IS NULL").fetchone()[0])

    def tenant_erasures(self) -> dict[str, datetime]:
        """Per tenant erased as a whole, the latest ``requested_at``: its records submitted up to
        then are refused."""
        rows = self._connection.execute(
            "SELECT tenant, max(requested_at) FROM erasures WHERE subjects_json IS NULL GROUP BY tenant"
        ).fetchall()
        return {tenant: datetime.fromisoformat(moment) for tenant, moment in rows}

    def erased_since(self, moment: str, content: str = RECORDS) -> bool:
        """Whether an erasure removed a row of the ``content`` series after ``moment`` (ISO 8601),
        the creation of the series' last snapshot: that snapshot then holds erased rows and is no
        answer to "the latest data" any more."""
        row = self._connection.execute(
            "SELECT 1 FROM erased_records JOIN erasures USING (erasure_id)"
            " WHERE erased_records.content = ? AND erasures.erased_at > ? LIMIT 1",
            (content, moment),
        ).fetchone()
        return row is not None

    # --- snapshots ------------------------------------------------------------------------

    def record_snapshot(
        self,
        *,
        dataset_id: str,
        max_seq: int,
        created_at: datetime,
        event_json: str,
        cause: str | None = None,
        content: str = RECORDS,
        max_pair_seq: int = 0,
    ) -> None:
        """``cause``: the id of the event the snapshot was cut for (a retraining request), if any;
        ``max_pair_seq``: the last preference pair it holds (instruction snapshots)."""
        with self._write() as connection:
            connection.execute(
                "INSERT INTO snapshots (dataset_id, max_seq, created_at, event_json, cause, content, max_pair_seq)"
                " VALUES (?, ?, ?, ?, ?, ?, ?)",
                (dataset_id, max_seq, created_at.isoformat(), event_json, cause, content, max_pair_seq),
            )

    def snapshot_caused_by(self, event_id: str) -> str | None:
        """The event (JSON) of the snapshot cut for event ``event_id``, if one was."""
        row = self._connection.execute("SELECT event_json FROM snapshots WHERE cause = ?", (event_id,)).fetchone()
        return str(row[0]) if row else None

    def last_snapshot(self, content: str = RECORDS) -> str | None:
        """The event (JSON) of the latest snapshot of the ``content`` series, if any."""
        row = self._connection.execute(
            "SELECT event_json FROM snapshots WHERE content = ? ORDER BY max_seq DESC, created_at DESC LIMIT 1",
            (content,),
        ).fetchone()
        return str(row[0]) if row else None

    def unpublished_snapshots(self) -> list[tuple[str, str]]:
        return list(
            self._connection.execute(
                "SELECT dataset_id, event_json FROM snapshots WHERE published = 0 ORDER BY created_at"
            ).fetchall()
        )

    def mark_snapshot_published(self, dataset_id: str) -> None:
        with self._write() as connection:
            connection.execute("UPDATE snapshots SET published = 1 WHERE dataset_id = ?", (dataset_id,))

    def _write(self) -> AbstractContextManager[SqlConnection]:
        return self._processed.transaction()


_GENERATION_COLUMNS = "request_id, tenant, model_name, model_version, prompt_json, output, rating, corrected_answer"


def _generation(row: Sequence[Any]) -> ServedGeneration:
    request_id, tenant, model_name, model_version, prompt_json, output, rating, corrected = row
    prompt = tuple(Turn(turn["role"], turn["content"]) for turn in msgspec.json.decode(prompt_json))
    return ServedGeneration(request_id, tenant, model_name, model_version, prompt, output, rating, corrected)
