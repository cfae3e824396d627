"""Feast stores for the embedded default: a SQLite online store with one row per record and a
file offline store that appends a Parquet part per push.

Both are ordinary Feast plug-ins (``feature_store.yaml`` names them by class path), so Feast
reads and writes them through its own API (``get_online_features``, ``get_historical_features``,
``push``, ``materialize``). They exist because Feast's built-in local stores cost more per record
than the whole rest of ingestion:

* Feast's SQLite online store keeps one row per *feature*: 16 upserts into a table with two
  indexes per record, ~150 µs of SQLite alone. Here a record is one row (its features as one
  serialized ``feast.types.Map``), ~10 µs.
* Feast's file offline store appends by reading the whole Parquet file, concatenating and
  writing it all back, so each push costs as much as everything stored so far. Here a push adds
  one part file to the source's directory; parts are merged eight at a time into the next tier
  (as an LSM tree does), so the directory stays small and each row is rewritten only
  log₈(rows/push) times.

Readers tolerate a row that is, for a moment, in a merged part and in one of its inputs: the
point-in-time join yields one row per record id. A lock file keeps a merge from deleting parts
under a reader in another process.
"""

from __future__ import annotations

import fcntl
import os
import sqlite3
import time
import uuid
from collections.abc import Callable, Collection, Iterator, Sequence
from contextlib import contextmanager
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, Literal

import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq
from feast import Entity
from feast.feature_view import FeatureView
from feast.infra.key_encoding_utils import serialize_entity_key
from feast.infra.offline_stores.dask import DaskOfflineStore, DaskOfflineStoreConfig
from feast.infra.offline_stores.file_source import FileSource
from feast.infra.online_stores.sqlite import SqliteOnlineStore, SqliteOnlineStoreConfig
from feast.protos.feast.types.EntityKey_pb2 import EntityKey as EntityKeyProto
from feast.protos.feast.types.Value_pb2 import Map as MapProto
from feast.protos.feast.types.Value_pb2 import Value as ValueProto
from feast.repo_config import RepoConfig
from feast.utils import to_naive_utc

ONLINE_STORE_TYPE = f"{__name__}.RecordRowSqliteOnlineStore"
OFFLINE_STORE_TYPE = f"{__name__}.PartitionedFileOfflineStore"

# --- online -----------------------------------------------------------------------------------


def record_table(project: str, view_name: str) -> str:
    """The online table of a feature view. Named apart from the table Feast's own SQLite store
    would create, so a database written by that store is never misread."""
    return f"{project}_{view_name}__by_record"


def _quoted(identifier: str) -> str:
    return '"' + identifier.replace('"', '""') + '"'


def create_record_table(connection: sqlite3.Connection, table: str) -> None:
    connection.execute(
        f"CREATE TABLE IF NOT EXISTS {_quoted(table)} (entity_key BLOB PRIMARY KEY, features BLOB NOT NULL,"
        " event_ts timestamp, created_ts timestamp) WITHOUT ROWID"
    )


def upsert_statement(table: str) -> str:
    return (
        f"INSERT INTO {_quoted(table)} (entity_key, features, event_ts, created_ts) VALUES (?, ?, ?, ?) "
        "ON CONFLICT(entity_key) DO UPDATE SET features = excluded.features, "
        "event_ts = excluded.event_ts, created_ts = excluded.created_ts"
    )


def encode_features(values: dict[str, ValueProto]) -> bytes:
    """A record's feature values as stored: one ``Map`` message, deterministic byte for byte."""
    return MapProto(val=values).SerializeToString(deterministic=True)


class RecordRowSqliteOnlineStoreConfig(SqliteOnlineStoreConfig):
    type: Literal["llmops_ingestion.adapters.feast_local.RecordRowSqliteOnlineStore"] = ONLINE_STORE_TYPE  # type: ignore[assignment]


class RecordRowSqliteOnlineStore(SqliteOnlineStore):  # type: ignore[misc]
    """Feast's SQLite online store (same file, connection and timestamp handling), one row per
    entity instead of one per feature."""

    def online_write_batch(
        self,
        config: RepoConfig,
        table: FeatureView,
        data: list[tuple[EntityKeyProto, dict[str, ValueProto], datetime, datetime | None]],
        progress: Callable[[int], Any] | None,
    ) -> None:
        version = config.entity_key_serialization_version
        rows = [
            (
                serialize_entity_key(entity_key, entity_key_serialization_version=version),
                encode_features(values),
                to_naive_utc(event_ts),
                to_naive_utc(created_ts) if created_ts is not None else None,
            )
            for entity_key, values, event_ts, created_ts in data
        ]
        connection = self._get_conn(config)
        with connection:
            connection.executemany(upsert_statement(record_table(config.project, table.name)), rows)
        if progress:
            progress(len(rows))

    def online_read(
        self,
        config: RepoConfig,
        table: FeatureView,
        entity_keys: list[EntityKeyProto],
        requested_features: list[str] | None = None,
    ) -> list[tuple[datetime | None, dict[str, ValueProto] | None]]:
        version = config.entity_key_serialization_version
        keys = [serialize_entity_key(key, entity_key_serialization_version=version) for key in entity_keys]
        name = _quoted(record_table(config.project, table.name))
        found: dict[bytes, tuple[bytes, datetime]] = {}
        connection = self._get_conn(config)
        for start in range(0, len(keys), 500):
            chunk = keys[start : start + 500]
            marks = ",".join("?" * len(chunk))
            query = f"SELECT entity_key, features, event_ts FROM {name} WHERE entity_key IN ({marks})"
            found.update((key, (features, ts)) for key, features, ts in connection.execute(query, chunk))
        result: list[tuple[datetime | None, dict[str, ValueProto] | None]] = []
        for key in keys:
            if key not in found:
                result.append((None, None))
                continue
            features, event_ts = found[key]
            stored = MapProto.FromString(features)
            values = {feature: stored.val[feature] for feature in (requested_features or stored.val.keys())}
            result.append((_as_utc(event_ts), values))
        return result

    def update(
        self,
        config: RepoConfig,
        tables_to_delete: Sequence[FeatureView],
        tables_to_keep: Sequence[FeatureView],
        entities_to_delete: Sequence[Entity],
        entities_to_keep: Sequence[Entity],
        partial: bool,
    ) -> None:
        connection = self._get_conn(config)
        for view in tables_to_keep:
            create_record_table(connection, record_table(config.project, view.name))
        for view in tables_to_delete:
            connection.execute(f"DROP TABLE IF EXISTS {_quoted(record_table(config.project, view.name))}")
        connection.commit()

    def plan(self, config: RepoConfig, desired_registry_proto: Any) -> list[Any]:
        return []  # no infra objects of Feast's own SQLite layout


def _as_utc(moment: datetime | None) -> datetime | None:
    """A stored timestamp (Feast's connection parses it to a naive UTC datetime) made aware."""
    if moment is None:
        return None
    return moment.astimezone(UTC) if moment.tzinfo else moment.replace(tzinfo=UTC)


class RowEncoder:
    """A curated row as Feast's protos: its entity key and its feature values, built from the row's
    known types. Feast's push converts a DataFrame to ``Value`` protos column by column through
    generic type dispatch (~300 µs a row here); the online writers (SQLite here, Redis in
    ``feast_redis``) store what this builds exactly as Feast's ``online_write_batch`` would (tests
    compare the two byte for byte)."""

    def __init__(
        self,
        *,
        entity: str,
        string_features: Sequence[str],
        int_features: Sequence[str],
        float_features: Sequence[str],
        timestamp_field: str,
        created_field: str,
    ) -> None:
        self._entity = entity
        self._strings = tuple(string_features)
        self._ints = tuple(int_features)
        self._floats = tuple(float_features)
        self._timestamp = timestamp_field
        self._created = created_field

    @property
    def entity(self) -> str:
        return self._entity

    @property
    def features(self) -> tuple[str, ...]:
        return (*self._strings, *self._ints, *self._floats)

    def entity_key(self, record_id: str) -> EntityKeyProto:
        return EntityKeyProto(join_keys=[self._entity], entity_values=[ValueProto(string_val=record_id)])

    def values(self, row: dict[str, Any]) -> MapProto:
        # Set in place: building a Value per feature and copying them into the map costs twice as much.
        features = MapProto()
        stored = features.val
        for name in self._strings:
            text = row[name]
            if text is None:
                stored[name].Clear()  # a null is an empty Value, as Feast writes it
            else:
                stored[name].string_val = text
        for name in self._ints:
            stored[name].int64_val = int(row[name])
        for name in self._floats:
            stored[name].float_val = float(row[name])
        return features

    def timestamps(self, row: dict[str, Any]) -> tuple[datetime, datetime]:
        """The row's event and created timestamps, as datetimes."""
        return _as_datetime(row[self._timestamp]), _as_datetime(row[self._created])


class RecordRowWriter:
    """Writes curated rows straight into ``RecordRowSqliteOnlineStore``'s table (see ``RowEncoder``)."""

    def __init__(self, connection: sqlite3.Connection, table: str, *, encoder: RowEncoder) -> None:
        self._connection = connection
        self._upsert = upsert_statement(table)
        self._delete = f"DELETE FROM {_quoted(table)} WHERE entity_key = ?"
        self._encoder = encoder

    def write(self, rows: Sequence[dict[str, Any]], *, entity_key_serialization_version: int) -> None:
        encoder = self._encoder
        values = []
        for row in rows:
            key = serialize_entity_key(
                encoder.entity_key(row[encoder.entity]),
                entity_key_serialization_version=entity_key_serialization_version,
            )
            event_ts, created_ts = encoder.timestamps(row)
            values.append(
                (
                    key,
                    encoder.values(row).SerializeToString(deterministic=True),
                    to_naive_utc(event_ts),
                    to_naive_utc(created_ts),
                )
            )
        with self._connection:
            self._connection.executemany(self._upsert, values)

    def delete(self, record_ids: Sequence[str], *, entity_key_serialization_version: int) -> int:
        """Remove the rows of ``record_ids`` (an erasure); returns how many there were."""
        keys = [
            (
                serialize_entity_key(
                    self._encoder.entity_key(record_id),
                    entity_key_serialization_version=entity_key_serialization_version,
                ),
            )
            for record_id in record_ids
        ]
        with self._connection:
            before = self._connection.total_changes
            self._connection.executemany(self._delete, keys)
            return self._connection.total_changes - before

    def close(self) -> None:
        self._connection.close()


def _as_datetime(stamp: Any) -> datetime:
    """ISO 8601 (rows from the outbox), a datetime, or a pandas Timestamp (rows read back)."""
    moment = datetime.fromisoformat(stamp) if isinstance(stamp, str) else stamp
    return moment.to_pydatetime() if hasattr(moment, "to_pydatetime") else moment


# --- offline ----------------------------------------------------------------------------------

FANOUT = 8  # parts of one tier merged into one part of the next
_LOCK = ".lock"


class PartitionedFileOfflineStoreConfig(DaskOfflineStoreConfig):  # type: ignore[misc]
    type: Literal["llmops_ingestion.adapters.feast_local.PartitionedFileOfflineStore"] = OFFLINE_STORE_TYPE  # type: ignore[assignment]


class PartitionedFileOfflineStore(DaskOfflineStore):  # type: ignore[misc]
    """Feast's file (Dask) offline store over a directory of Parquet parts; a push appends one."""

    @staticmethod
    def offline_write_batch(
        config: RepoConfig, feature_view: FeatureView, table: pa.Table, progress: Callable[[int], Any] | None
    ) -> None:
        source = feature_view.batch_source
        if not isinstance(source, FileSource):
            raise TypeError(f"{feature_view.name}: the partitioned offline store needs a FileSource")
        directory = Path(FileSource.get_uri_for_file_path(repo_path=config.repo_path, uri=source.file_options.uri))
        PartDirectory(directory).append(table)
        if progress:
            progress(table.num_rows)


class PartDirectory:
    """A directory of Parquet parts named ``part-<tier>-<ns>-<id>.parquet``; the offline source."""

    def __init__(self, path: Path) -> None:
        self.path = path

    def parts(self, tier: int | None = None) -> list[Path]:
        pattern = "part-*.parquet" if tier is None else f"part-{tier:02d}-*.parquet"
        return sorted(self.path.glob(pattern))

    def initialise(self, schema: pa.Schema) -> None:
        """Dask cannot read an empty directory and Feast reads the schema at ``apply``: an empty
        part typed like the rows (a pandas-written empty file would type every column ``null``)."""
        self.path.mkdir(parents=True, exist_ok=True)
        if not self.parts():
            self._write(schema.empty_table(), tier=0)

    def append(self, table: pa.Table) -> None:
        """Add ``table`` as a part (cast to the parts' schema, as Feast's file store casts to its
        file's), then merge any tier that has ``FANOUT`` parts. Its columns must be the parts'
        columns, in order, as Feast's file store requires of a push."""
        schema = pq.read_schema(self.parts()[0])
        if schema.names != table.column_names:
            raise ValueError(f"{self.path}: columns {table.column_names}, expected {schema.names} in this order")
        self._write(table if table.schema == schema else table.cast(schema), tier=0)
        for tier in range(0, 16):
            if len(self.parts(tier)) < FANOUT:
                break
            self._merge(tier)

    def remove_rows(
        self, *, record_ids: Collection[str], tenant: str | None = None, entity: str = "record_id"
    ) -> list[str]:
        """Rewrite every part holding a row of ``record_ids`` (or, with ``tenant``, of that tenant)
        without those rows: Parquet cannot delete in place, and an erasure must leave no copy.
        Each part is replaced atomically under the exclusive lock, so a reader in another process
        sees it before or after, never half-written. The caller makes sure no append (and so no
        merge) runs meanwhile. Returns the ids of the rows removed (once per copy)."""
        wanted = pa.array(sorted(record_ids), type=pa.string())
        removed: list[str] = []
        emptied: pa.Schema | None = None
        with self._locked(fcntl.LOCK_EX):
            for part in self.parts():
                table = pq.read_table(part)
                drop = pc.is_in(table[entity], value_set=wanted)
                if tenant is not None and "tenant" in table.column_names:
                    drop = pc.or_(drop, pc.equal(table["tenant"], tenant))
                drop = pc.fill_null(drop, False)
                if not pc.any(drop).as_py():
                    continue
                removed += table.filter(drop)[entity].to_pylist()
                kept = table.filter(pc.invert(drop))
                if kept.num_rows == 0:
                    # An empty part among full ones breaks Dask's divisions in Feast's
                    # point-in-time join: it goes (the directory keeps one part, below).
                    part.unlink()
                    emptied = table.schema
                    continue
                staging = self.path / f".{part.name}.erase.tmp"
                pq.write_table(kept, staging)
                os.replace(staging, part)
            if emptied is not None and not self.parts():
                self._write(emptied.empty_table(), tier=0)  # Dask cannot read an empty directory
        return removed

    @contextmanager
    def reading(self) -> Iterator[None]:
        """Held while reading the parts: a merge (in any process) waits before deleting its inputs."""
        with self._locked(fcntl.LOCK_SH):
            yield

    def _merge(self, tier: int) -> None:
        inputs = self.parts(tier)[:FANOUT]
        merged = pa.concat_tables([pq.read_table(part) for part in inputs], promote_options="none")
        self._write(merged, tier=tier + 1)
        with self._locked(fcntl.LOCK_EX):
            for part in inputs:
                part.unlink(missing_ok=True)  # another writer may have merged it already

    def _write(self, table: pa.Table, *, tier: int) -> None:
        name = f"part-{tier:02d}-{time.time_ns():020d}-{uuid.uuid4().hex[:8]}.parquet"
        staging = self.path / f".{name}.tmp"  # hidden from readers until renamed
        pq.write_table(table, staging)
        os.replace(staging, self.path / name)

    @contextmanager
    def _locked(self, mode: int) -> Iterator[None]:
        with open(self.path / _LOCK, "a+b") as handle:
            fcntl.flock(handle, mode)
            try:
                yield
            finally:
                fcntl.flock(handle, fcntl.LOCK_UN)
