"""Curated records in Feast: a generated repository under ``var/`` with the SQLite online store
and the file offline store, fed through the push source (offline and online together)."""

from __future__ import annotations

import logging
from collections.abc import Sequence
from datetime import datetime
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
    TIMESTAMP_FIELD,
    feature_definitions,
    offline_schema,
)

logger = logging.getLogger(__name__)

OFFLINE_FILE = "curated_records.parquet"


class FeastCuratedStore:
    """Pushes feature rows and reads them back point-in-time. Every method blocks: call it
    from a worker thread (``asyncio.to_thread``), never on the event loop."""

    def __init__(self, repo_dir: Path, *, project: str = "llmops") -> None:
        self._repo_dir = repo_dir.resolve()
        self._project = project
        self._store: Any = None

    @property
    def offline_path(self) -> Path:
        return self._repo_dir / "data" / OFFLINE_FILE

    def open(self) -> None:
        """Write the repository configuration, create the offline file, apply the definitions."""
        import pyarrow.parquet as pq
        from feast import FeatureStore

        data = self._repo_dir / "data"
        data.mkdir(parents=True, exist_ok=True)
        config = {
            "project": self._project,
            "provider": "local",
            "registry": str(data / "registry.db"),
            "online_store": {"type": "sqlite", "path": str(data / "online_store.db")},
            "offline_store": {"type": "file"},
            "entity_key_serialization_version": 3,
        }
        # Written as a file (not only passed as a RepoConfig) so `feast -c var/feast ...` works
        # for an operator inspecting the store.
        (self._repo_dir / "feature_store.yaml").write_text(yaml.safe_dump(config, sort_keys=False))
        if not self.offline_path.exists():  # Feast needs the file before apply and the first push
            pq.write_table(offline_schema().empty_table(), self.offline_path)
        self._store = FeatureStore(repo_path=str(self._repo_dir))
        self._store.apply(feature_definitions(self.offline_path))
        logger.info("feast repository ready", extra={"repo": str(self._repo_dir)})

    def push(self, rows: Sequence[dict[str, Any]]) -> None:
        """Append rows to the offline store and upsert them in the online store."""
        if not rows:
            return
        from feast.data_source import PushMode

        self._require_open().push(PUSH_SOURCE, to_frame(rows), to=PushMode.ONLINE_AND_OFFLINE)

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
