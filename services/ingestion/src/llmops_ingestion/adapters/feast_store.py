"""Curated records in Feast: a generated repository under ``var/`` with the SQLite online store
and the file offline store, fed through the push source (offline and online together)."""

from __future__ import annotations

import logging
import sqlite3
from collections.abc import Sequence
from datetime import UTC, datetime
from functools import lru_cache
from pathlib import Path
from typing import Any

import yaml

from llmops_ingestion.adapters.feast_repo import (
    CREATED_FIELD,
    ENTITY,
    FEATURE_VIEW,
    FEATURES,
    FLOAT_FEATURES,
    INT_FEATURES,
    PUSH_SOURCE,
    STRING_FEATURES,
    TIMESTAMP_FIELD,
    feature_definitions,
    offline_schema,
)

logger = logging.getLogger(__name__)

OFFLINE_FILE = "curated_records.parquet"
ONLINE_FILE = "online_store.db"
ENTITY_KEY_SERIALIZATION_VERSION = 3


class FeastCuratedStore:
    """Pushes feature rows and reads them back point-in-time. Every method blocks: call it
    from a worker thread (``asyncio.to_thread``), never on the event loop."""

    def __init__(self, repo_dir: Path, *, project: str = "llmops") -> None:
        self._repo_dir = repo_dir.resolve()
        self._project = project
        self._store: Any = None
        self._online: SqliteOnlineWriter | None = None
        self._worker: Any = None  # a ProcessPoolExecutor once start_push_worker() ran

    @property
    def offline_path(self) -> Path:
        return self._repo_dir / "data" / OFFLINE_FILE

    def open(self, *, apply: bool = True) -> None:
        """Write the repository configuration, create the offline file, apply the definitions
        (``apply=False``: a second handle on a repository another one applied)."""
        import pyarrow.parquet as pq
        from feast import FeatureStore

        data = self._repo_dir / "data"
        data.mkdir(parents=True, exist_ok=True)
        config = {
            "project": self._project,
            "provider": "local",
            "registry": str(data / "registry.db"),
            "online_store": {"type": "sqlite", "path": str(data / ONLINE_FILE)},
            "offline_store": {"type": "file"},
            "entity_key_serialization_version": ENTITY_KEY_SERIALIZATION_VERSION,
        }
        if apply:
            # Written as a file (not only passed as a RepoConfig) so `feast -c var/feast ...` works
            # for an operator inspecting the store.
            (self._repo_dir / "feature_store.yaml").write_text(yaml.safe_dump(config, sort_keys=False))
            if not self.offline_path.exists():  # Feast needs the file before apply and the first push
                pq.write_table(offline_schema().empty_table(), self.offline_path)
        self._store = FeatureStore(repo_path=str(self._repo_dir))
        if apply:
            self._store.apply(feature_definitions(self.offline_path))
        self._online = SqliteOnlineWriter.open(data / ONLINE_FILE, table=f"{self._project}_{FEATURE_VIEW}")
        if self._online is None:
            logger.warning("unexpected Feast online-store table layout; pushing through Feast (slower)")
        logger.info("feast repository ready", extra={"repo": str(self._repo_dir)})

    def push(self, rows: Sequence[dict[str, Any]]) -> None:
        """Append rows to the offline store and upsert them in the online store."""
        if not rows:
            return
        if self._worker is not None:
            self._worker.submit(_push_in_worker, list(rows)).result()
            return
        self._push_here(rows)

    def start_push_worker(self) -> None:
        """Run pushes in a child process from now on (started and warmed up here).

        A push is CPU work in Python (protobuf values, SQLite bindings, Parquet): in a thread of
        the consuming process it competes with consumption for the interpreter lock, and the
        lock's hand-offs between a busy event loop and a busy thread slow both. In a process of
        its own it uses the other core and leaves the consumer alone. Spawned, not forked: the
        parent has Kafka client threads.
        """
        import multiprocessing
        from concurrent.futures import ProcessPoolExecutor

        if self._worker is not None:
            return
        self._worker = ProcessPoolExecutor(
            max_workers=1,
            mp_context=multiprocessing.get_context("spawn"),
            initializer=_open_worker_store,
            initargs=(str(self._repo_dir), self._project),
        )
        self._worker.submit(_push_in_worker, []).result()  # opens Feast there before the first push

    def close(self) -> None:
        if self._worker is not None:
            self._worker.shutdown(wait=True)
            self._worker = None
        if self._online is not None:
            self._online.close()
            self._online = None

    def _push_here(self, rows: Sequence[dict[str, Any]]) -> None:
        from feast.data_source import PushMode

        store = self._require_open()
        if self._online is None:
            store.push(PUSH_SOURCE, to_frame(rows), to=PushMode.ONLINE_AND_OFFLINE)
            return
        self._online.write(rows)
        store.push(PUSH_SOURCE, to_frame(rows), to=PushMode.OFFLINE)

    def historical(self, record_ids: Sequence[str], *, as_of: datetime) -> Any:
        """The feature values of ``record_ids`` as known at ``as_of`` (point-in-time join): one
        row per id, however often a row was pushed."""
        import pandas as pd

        entity_df = pd.DataFrame({ENTITY: list(record_ids), TIMESTAMP_FIELD: pd.Timestamp(as_of)})
        features = [f"{FEATURE_VIEW}:{name}" for name in FEATURES]
        return self._require_open().get_historical_features(entity_df=entity_df, features=features).to_df()

    def online(self, record_ids: Sequence[str]) -> dict[str, list[Any]]:
        features = [f"{FEATURE_VIEW}:{name}" for name in FEATURES]
        entity_rows = [{ENTITY: record_id} for record_id in record_ids]
        return dict(self._require_open().get_online_features(features=features, entity_rows=entity_rows).to_dict())

    def _require_open(self) -> Any:
        if self._store is None:
            raise RuntimeError("FeastCuratedStore.open() has not been called")
        return self._store


def to_frame(rows: Sequence[dict[str, Any]]) -> Any:
    """A push DataFrame with the dtypes the feature view declares (Feast checks them)."""
    import numpy as np
    import pandas as pd

    frame = pd.DataFrame(list(rows))
    for name in INT_FEATURES:
        frame[name] = frame[name].astype(np.int64)
    for name in FLOAT_FEATURES:
        frame[name] = frame[name].astype(np.float32)
    for name in (TIMESTAMP_FIELD, CREATED_FIELD):
        frame[name] = pd.to_datetime(frame[name], utc=True).astype("datetime64[ns, UTC]")
    return frame


_WORKER_STORE: FeastCuratedStore | None = None


def _open_worker_store(repo_dir: str, project: str) -> None:
    global _WORKER_STORE
    logging.getLogger("feast").setLevel(logging.WARNING)
    _WORKER_STORE = FeastCuratedStore(Path(repo_dir), project=project)
    _WORKER_STORE.open(apply=False)


def _push_in_worker(rows: list[dict[str, Any]]) -> None:
    if _WORKER_STORE is None:
        raise RuntimeError("the push worker has no Feast store")
    if rows:
        _WORKER_STORE._push_here(rows)


class SqliteOnlineWriter:
    """Upserts curated rows into the table of Feast's SQLite online store, as Feast does, ~20x faster.

    Feast's own write converts the DataFrame to protobuf values column by column through generic
    type dispatch and then runs one ``INSERT ... ON CONFLICT`` per feature of each row (about
    1.5 ms a row here): at thousands of records a second it would need more than the whole
    machine. This writer serialises the same ``ValueProto``s and entity keys with Feast's own
    functions and upserts the same rows with one ``executemany`` per push. Feast still owns the
    table (created by ``apply``) and reads it (``get_online_features``); a unit test checks that
    both writers leave identical rows, and ``open`` returns None (so the service falls back to
    Feast's write) when the table's columns are not the ones this writer knows.
    """

    COLUMNS = ("entity_key", "feature_name", "value", "value_text", "event_ts", "created_ts")
    TABLE_LAYOUT = ("entity_key", "feature_name", "value", "value_text", "vector_value", "event_ts", "created_ts")
    """The table Feast 0.67 creates; ``vector_value`` stays NULL, as Feast leaves it without vector search."""

    def __init__(self, connection: sqlite3.Connection, table: str) -> None:
        self._connection = connection
        quoted = '"' + table.replace('"', '""') + '"'
        self._upsert = (
            f"INSERT INTO {quoted} ({', '.join(self.COLUMNS)}) VALUES (?, ?, ?, ?, ?, ?) "
            "ON CONFLICT(entity_key, feature_name) DO UPDATE SET value = excluded.value, "
            "value_text = excluded.value_text, event_ts = excluded.event_ts, created_ts = excluded.created_ts"
        )

    @classmethod
    def open(cls, path: Path, *, table: str) -> SqliteOnlineWriter | None:
        # Feast's SQLite store registers how datetimes are stored (process-wide); timestamps are
        # handed over as Feast hands them over, so they are stored the same way.
        import feast.infra.online_stores.sqlite  # noqa: F401

        connection = sqlite3.connect(str(path), check_same_thread=False)
        columns = tuple(row[0] for row in connection.execute("SELECT name FROM pragma_table_info(?)", (table,)))
        if columns != cls.TABLE_LAYOUT:
            connection.close()
            return None
        return cls(connection, table)

    def write(self, rows: Sequence[dict[str, Any]]) -> None:
        from feast.infra.key_encoding_utils import serialize_entity_key
        from feast.protos.feast.types.EntityKey_pb2 import EntityKey
        from feast.protos.feast.types.Value_pb2 import Value

        # Feast stores a datetime through the adapter its SQLite module registers; applied here once
        # per row rather than by sqlite3 once per feature value.
        adapt = sqlite3.adapters.get((datetime, sqlite3.PrepareProtocol), lambda moment: moment)
        values: list[tuple[Any, ...]] = []
        for row in rows:
            key = serialize_entity_key(
                EntityKey(join_keys=[ENTITY], entity_values=[Value(string_val=row[ENTITY])]),
                entity_key_serialization_version=ENTITY_KEY_SERIALIZATION_VERSION,
            )
            event_ts = adapt(_naive_utc(row[TIMESTAMP_FIELD]))
            created_ts = adapt(_naive_utc(row[CREATED_FIELD]))
            for name in STRING_FEATURES:
                text = row[name]
                if text is None:  # Feast stores a null as an empty value without text
                    values.append((key, name, b"", None, event_ts, created_ts))
                else:
                    values.append((key, name, Value(string_val=text).SerializeToString(), text, event_ts, created_ts))
            for name in INT_FEATURES:
                serialized, text = _int_value(int(row[name]))
                values.append((key, name, serialized, text, event_ts, created_ts))
            for name in FLOAT_FEATURES:
                value = Value(float_val=float(row[name]))
                values.append((key, name, value.SerializeToString(), str(value.float_val), event_ts, created_ts))
        with self._connection:
            self._connection.executemany(self._upsert, values)

    def close(self) -> None:
        self._connection.close()


@lru_cache(maxsize=16384)
def _int_value(number: int) -> tuple[bytes, str]:
    from feast.protos.feast.types.Value_pb2 import Value

    return Value(int64_val=number).SerializeToString(), str(number)


def _naive_utc(stamp: str | datetime) -> datetime:
    """A row's timestamp (ISO 8601 from the outbox, or a datetime) as the naive UTC datetime Feast stores."""
    moment = stamp if isinstance(stamp, datetime) else datetime.fromisoformat(stamp)
    if hasattr(moment, "to_pydatetime"):  # a pandas Timestamp (rows read back from the offline store)
        moment = moment.to_pydatetime()
    return moment.astimezone(UTC).replace(tzinfo=None) if moment.tzinfo else moment
