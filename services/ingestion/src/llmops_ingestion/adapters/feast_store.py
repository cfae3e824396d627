"""Curated records and instruction examples in Feast: a generated repository under ``var/`` with the
local stores of ``feast_local`` (SQLite online store, one row per record; Parquet parts offline), fed
through the push sources, a feature view for each (``llmops_features``). With
``LLMOPS_FEAST_ONLINE_STORE=redis`` the online store is Feast's Redis store instead (``feast_redis``);
the registry and the offline parts stay in the repository."""

from __future__ import annotations

import logging
import sqlite3
from collections.abc import Callable, Sequence
from datetime import datetime
from functools import cached_property
from pathlib import Path
from typing import Any

import yaml

from llmops_features import (
    CREATED_FIELD,
    ENTITY,
    INSTRUCTIONS_VIEW,
    RECORDS_VIEW,
    TIMESTAMP_FIELD,
    ViewSpec,
    feature_definitions,
    offline_schema,
)
from llmops_features.online_store import FeastOnlineStoreSettings
from llmops_ingestion.adapters.language import language_detector
from llmops_ingestion.domain.curation import describe_many

logger = logging.getLogger(__name__)

OFFLINE_DIR = "curated_records"
INSTRUCTIONS_OFFLINE_DIR = "curated_instructions"
LEGACY_OFFLINE_FILE = "curated_records.parquet"  # Feast's file store layout, before the parts
ONLINE_FILE = "online_store.db"
ENTITY_KEY_SERIALIZATION_VERSION = 3
PROJECT = "llmops"  # the chart's Feast repository names the same project: Redis keys carry it


class FeastCuratedStore:
    """Pushes feature rows and reads them back point-in-time. Every method blocks: call it
    from a worker thread (``asyncio.to_thread``), never on the event loop."""

    def __init__(
        self,
        repo_dir: Path,
        *,
        project: str = PROJECT,
        languages: Sequence[str] | None = (),
        online_store: FeastOnlineStoreSettings | None = None,
    ) -> None:
        """``languages``: the candidates of language detection (empty: all the model knows;
        None: no detection, every language ``und``). ``online_store``: where online rows go
        (default: the embedded SQLite store)."""
        self._repo_dir = repo_dir.resolve()
        self._project = project
        self._languages = None if languages is None else tuple(languages)
        # Unset: the embedded SQLite store, whatever the environment says (settings are passed in).
        self._online_settings = online_store or FeastOnlineStoreSettings.model_construct()
        self._store: Any = None
        self._online: dict[str, Any] = {}  # view name → a RecordRowWriter or RedisRowWriter once open
        self._worker: Any = None  # a ProcessPoolExecutor once start_push_worker() ran

    @property
    def offline_path(self) -> Path:
        """The records' offline source: a directory of Parquet parts (``feast_local.PartDirectory``)."""
        return self._repo_dir / "data" / OFFLINE_DIR

    @property
    def instructions_offline_path(self) -> Path:
        """The instruction examples' offline source, likewise."""
        return self._repo_dir / "data" / INSTRUCTIONS_OFFLINE_DIR

    def _offline_path(self, spec: ViewSpec) -> Path:
        return self.instructions_offline_path if spec is INSTRUCTIONS_VIEW else self.offline_path

    def open(self, *, apply: bool = True) -> None:
        """Write the repository configuration, create the offline directory, apply the definitions
        (``apply=False``: a second handle on a repository another one applied)."""
        from feast import FeatureStore
        from feast.repo_config import RepoConfig

        from llmops_ingestion.adapters.feast_local import (
            OFFLINE_STORE_TYPE,
            ONLINE_STORE_TYPE,
            PartDirectory,
            RecordRowWriter,
            RowEncoder,
            record_table,
        )

        data = self._repo_dir / "data"
        data.mkdir(parents=True, exist_ok=True)
        redis = self._online_settings.online_store == "redis"

        def config(*, with_password: bool) -> dict[str, Any]:
            return {
                "project": self._project,
                "provider": "local",
                "registry": str(data / "registry.db"),
                "online_store": (
                    self._online_settings.redis_config(with_password=with_password)
                    if redis
                    else {"type": ONLINE_STORE_TYPE, "path": str(data / ONLINE_FILE)}
                ),
                "offline_store": {"type": OFFLINE_STORE_TYPE},
                "entity_key_serialization_version": ENTITY_KEY_SERIALIZATION_VERSION,
            }

        if apply:
            # Written as a file (not only passed as a RepoConfig) so `feast -c var/feast ...` works
            # for an operator inspecting the store; a Redis password only as a ${variable}.
            written = config(with_password=False)
            (self._repo_dir / "feature_store.yaml").write_text(yaml.safe_dump(written, sort_keys=False))
            for spec in _VIEWS:
                PartDirectory(self._offline_path(spec)).initialise(offline_schema(spec))
            legacy = data / LEGACY_OFFLINE_FILE
            if legacy.exists():  # a repository written before the parts: its rows become a part
                legacy.replace(self.offline_path / "part-00-00000000000000000000-legacy.parquet")
        # In memory, with the password itself: the file's ${variable} is only set where the
        # settings came from the environment.
        repo_config = RepoConfig(**config(with_password=True))
        repo_config.repo_path = self._repo_dir
        self._store = FeatureStore(repo_path=str(self._repo_dir), config=repo_config)
        if apply:
            self._store.apply(
                feature_definitions(self.offline_path, instructions_offline_path=self.instructions_offline_path)
            )
        for spec in _VIEWS:
            encoder = RowEncoder(
                entity=ENTITY,
                string_features=spec.string_features,
                int_features=spec.int_features,
                float_features=spec.float_features,
                timestamp_field=TIMESTAMP_FIELD,
                created_field=CREATED_FIELD,
            )
            if redis:
                from llmops_ingestion.adapters.feast_redis import RedisRowWriter

                view = self._store.get_feature_view(spec.name)
                self._online[spec.name] = RedisRowWriter(self._store.config, view, encoder=encoder)
            else:
                self._online[spec.name] = RecordRowWriter(
                    sqlite3.connect(str(data / ONLINE_FILE), check_same_thread=False),
                    record_table(self._project, spec.name),
                    encoder=encoder,
                )
        online = f"redis {self._online_settings.redis_url}" if redis else "sqlite"  # the address, never the password
        logger.info("feast repository ready", extra={"repo": str(self._repo_dir), "online_store": online})

    def push(self, rows: Sequence[dict[str, Any]]) -> None:
        """Add the descriptors to the rows of records, append them to the offline store and upsert
        them in the online store."""
        self._push(rows, RECORDS_VIEW)

    def push_instructions(self, rows: Sequence[dict[str, Any]]) -> None:
        """``push`` for instruction examples (their own feature view)."""
        self._push(rows, INSTRUCTIONS_VIEW)

    def _push(self, rows: Sequence[dict[str, Any]], spec: ViewSpec) -> None:
        if not rows:
            return
        if self._worker is not None:
            self._worker.submit(_push_in_worker, list(rows), spec.name).result()
            return
        self._push_here(rows, spec)

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
            initargs=(str(self._repo_dir), self._project, self._languages, self._online_settings),
        )
        self._worker.submit(_push_in_worker, [], RECORDS_VIEW.name).result()  # opens Feast there before the first push

    def close(self) -> None:
        if self._worker is not None:
            self._worker.shutdown(wait=True)
            self._worker = None
        for writer in self._online.values():
            writer.close()
        self._online = {}

    def _push_here(self, rows: Sequence[dict[str, Any]], spec: ViewSpec = RECORDS_VIEW) -> None:
        from feast.data_source import PushMode

        store = self._require_open()
        rows = with_descriptors(rows, detect_languages=self._detect_languages)
        # Online through the direct writer (Feast's DataFrame-to-proto conversion would cost
        # more than the rest of ingestion), offline through Feast's push.
        self._online[spec.name].write(rows, entity_key_serialization_version=ENTITY_KEY_SERIALIZATION_VERSION)
        store.push(spec.push_source, to_frame(rows, spec), to=PushMode.OFFLINE)

    @cached_property
    def _detect_languages(self) -> Callable[[Sequence[str]], Sequence[str]] | None:
        """Loaded on the first push (~60 MB of model tables): with the push worker, only the
        worker pushes, so the consuming process never needs it."""
        return None if self._languages is None else language_detector(self._languages).many

    def load_language_model(self) -> None:
        """Load it now rather than on the first push."""
        _ = self._detect_languages

    def historical(self, record_ids: Sequence[str], *, as_of: datetime) -> Any:
        """The feature values of records ``record_ids`` as known at ``as_of`` (point-in-time join):
        one row per id, however often a row was pushed."""
        return self._historical(record_ids, as_of=as_of, spec=RECORDS_VIEW)

    def historical_instructions(self, record_ids: Sequence[str], *, as_of: datetime) -> Any:
        """``historical`` for instruction examples."""
        return self._historical(record_ids, as_of=as_of, spec=INSTRUCTIONS_VIEW)

    def _historical(self, record_ids: Sequence[str], *, as_of: datetime, spec: ViewSpec) -> Any:
        import pandas as pd

        from llmops_ingestion.adapters.feast_local import PartDirectory

        entity_df = pd.DataFrame({ENTITY: list(record_ids), TIMESTAMP_FIELD: pd.Timestamp(as_of)})
        features = [f"{spec.name}:{name}" for name in spec.features]
        with PartDirectory(self._offline_path(spec)).reading():
            return self._require_open().get_historical_features(entity_df=entity_df, features=features).to_df()

    def erase(self, record_ids: Sequence[str], *, tenant: str | None = None) -> int:
        """Remove the rows of ``record_ids`` (with ``tenant``: also any row of that tenant) from
        both feature views, offline and online (online also every id found offline, so a row the
        caller did not know of goes too); returns the offline rows removed (a record pushed twice
        has two). Pushes must not run meanwhile: the caller holds the push lock."""
        from llmops_ingestion.adapters.feast_local import PartDirectory

        self._require_open()
        removed = 0
        for spec in _VIEWS:
            found = PartDirectory(self._offline_path(spec)).remove_rows(
                record_ids=record_ids, tenant=tenant, entity=ENTITY
            )
            removed += len(found)
            self._online[spec.name].delete(
                sorted({*record_ids, *found}), entity_key_serialization_version=ENTITY_KEY_SERIALIZATION_VERSION
            )
        return removed

    def online(self, record_ids: Sequence[str], *, view: ViewSpec = RECORDS_VIEW) -> dict[str, list[Any]]:
        """The online feature values of ``record_ids`` (of instruction examples with
        ``view=INSTRUCTIONS_VIEW``)."""
        features = [f"{view.name}:{name}" for name in view.features]
        entity_rows = [{ENTITY: record_id} for record_id in record_ids]
        return dict(self._require_open().get_online_features(features=features, entity_rows=entity_rows).to_dict())

    def _require_open(self) -> Any:
        if self._store is None:
            raise RuntimeError("FeastCuratedStore.open() has not been called")
        return self._store


def with_descriptors(
    rows: Sequence[dict[str, Any]], *, detect_languages: Callable[[Sequence[str]], Sequence[str]] | None
) -> list[dict[str, Any]]:
    """The rows with their text's descriptors (language, length, token count, non-alphabetic
    share) as feature columns. Computed here, in the process that writes Feast, rather than in
    the consuming loop: they are derived from the stored (redacted) text and nothing before
    Feast needs them."""
    descriptors = describe_many([row["text"] for row in rows], detect_languages=detect_languages)
    return [
        {
            **row,
            "language": described.language,
            "length": described.length,
            "token_count": described.token_count,
            "non_alpha_share": described.non_alpha_share,
        }
        for row, described in zip(rows, descriptors, strict=True)
    ]


def to_frame(rows: Sequence[dict[str, Any]], spec: ViewSpec = RECORDS_VIEW) -> Any:
    """A push DataFrame with the dtypes the feature view declares (Feast checks them)."""
    import numpy as np
    import pandas as pd

    frame = pd.DataFrame(list(rows))
    for name in spec.int_features:
        frame[name] = frame[name].astype(np.int64)
    for name in spec.float_features:
        frame[name] = frame[name].astype(np.float32)
    for name in (TIMESTAMP_FIELD, CREATED_FIELD):
        frame[name] = pd.to_datetime(frame[name], utc=True).astype("datetime64[ns, UTC]")
    return frame


_VIEWS = (RECORDS_VIEW, INSTRUCTIONS_VIEW)
_VIEWS_BY_NAME = {spec.name: spec for spec in _VIEWS}
_WORKER_STORE: FeastCuratedStore | None = None


def _open_worker_store(
    repo_dir: str, project: str, languages: tuple[str, ...] | None, online_store: FeastOnlineStoreSettings
) -> None:
    global _WORKER_STORE
    logging.getLogger("feast").setLevel(logging.WARNING)
    _WORKER_STORE = FeastCuratedStore(Path(repo_dir), project=project, languages=languages, online_store=online_store)
    _WORKER_STORE.open(apply=False)
    _WORKER_STORE.load_language_model()  # here, so the first push does not wait for it


def _push_in_worker(rows: list[dict[str, Any]], view: str) -> None:
    if _WORKER_STORE is None:
        raise RuntimeError("the push worker has no Feast store")
    if rows:
        _WORKER_STORE._push_here(rows, _VIEWS_BY_NAME[view])
