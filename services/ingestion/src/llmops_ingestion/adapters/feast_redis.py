"""Curated rows into Feast's own Redis online store (``LLMOPS_FEAST_ONLINE_STORE=redis``).

Not a plug-in: the layout is Feast's (one hash per entity key and project, a field per feature
named by murmur3 of ``<view>:<feature>``, the event time in ``_ts:<view>``), written through
Feast's ``RedisOnlineStore.online_write_batch``, so any Feast repository with the same project and
definitions reads it (the chart's, mounted at ``/etc/llmops/feast``). Only the protos are built
here, by ``feast_local.RowEncoder``, because Feast's DataFrame conversion costs more than the rest
of ingestion.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from feast.infra.online_stores.helpers import _mmh3, _redis_key
from feast.infra.online_stores.redis import RedisOnlineStore
from feast.protos.feast.types.Value_pb2 import Value as ValueProto
from feast.repo_config import RepoConfig

from llmops_ingestion.adapters.feast_local import RowEncoder


class RedisRowWriter:
    """Writes one feature view's rows to Redis as Feast's ``online_write_batch`` does; the same
    interface as ``feast_local.RecordRowWriter``. A row whose event time is not newer than the
    stored one is skipped (Feast's rule): a row pushed again, by a redelivery or a second
    replica, changes nothing."""

    def __init__(self, config: RepoConfig, view: Any, *, encoder: RowEncoder) -> None:
        """``config``: the repository's configuration (its online store Redis); ``view``: the
        applied ``FeatureView``. Connects and pings now, so a wrong address or password fails the
        service's start-up rather than its first push."""
        self._config = config
        self._view = view
        self._encoder = encoder
        self._store = RedisOnlineStore()
        # Feast's own client for this configuration (its connection-string parsing, timeouts, TLS).
        self._client = self._store._get_client(config.online_store)
        self._client.ping()
        # The fields of this view in each entity's hash: deleting them erases the view's row and
        # leaves another view's row of the same entity (both views share ``record_id``).
        self._fields = [_mmh3(f"{view.name}:{name}") for name in encoder.features] + [f"_ts:{view.name}".encode()]

    def write(self, rows: Sequence[dict[str, Any]], *, entity_key_serialization_version: int) -> None:
        encoder = self._encoder
        data: list[tuple[Any, dict[str, ValueProto], Any, Any]] = []
        for row in rows:
            event_ts, created_ts = encoder.timestamps(row)
            values = dict(encoder.values(row).val)
            data.append((encoder.entity_key(row[encoder.entity]), values, event_ts, created_ts))
        self._store.online_write_batch(self._config, self._view, data, None)

    def delete(self, record_ids: Sequence[str], *, entity_key_serialization_version: int) -> int:
        """Remove this view's rows of ``record_ids`` (an erasure); returns how many there were.
        Redis drops a hash left without fields, so an entity erased from every view leaves no key."""
        if not record_ids:
            return 0
        with self._client.pipeline(transaction=False) as pipe:
            for record_id in record_ids:
                key = _redis_key(
                    self._config.project,
                    self._encoder.entity_key(record_id),
                    entity_key_serialization_version=entity_key_serialization_version,
                )
                pipe.hdel(key, *self._fields)
            removed = pipe.execute()
        return sum(1 for count in removed if count)

    def close(self) -> None:
        self._client.close()
