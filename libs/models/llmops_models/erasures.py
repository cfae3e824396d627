"""Erasure records: what an erasure removed, and which snapshots and model versions held it.

Snapshots and model versions are immutable (a version must stay reproducible from its snapshot),
so an erasure cannot rewrite them; it is recorded beside them instead, in
``erasures/<erasure_id>.json``, written by the ingestion service once the records are gone from the
feature store. Lineage (``llmops lineage``) reads these records: a version whose snapshot is among
an erasure's ``datasets`` was trained on erased data, whenever it was trained.
"""

from __future__ import annotations

import logging
from collections.abc import Collection, Iterable
from datetime import datetime

from pydantic import BaseModel, ConfigDict, Field

from llmops_models.layout import ERASURES_PREFIX, erasure_path, is_valid_name
from llmops_models.registry import ModelRegistry
from llmops_models.snapshots import SnapshotReader
from llmops_storage import ArtifactStore

logger = logging.getLogger(__name__)


class ErasedVersion(BaseModel):
    """A model version trained on a snapshot that held erased records."""

    model_config = ConfigDict(frozen=True)

    model: str
    version: int = Field(ge=1)
    dataset_id: str


class ErasureRecord(BaseModel):
    """``erasures/<erasure_id>.json``."""

    model_config = ConfigDict(frozen=True)

    erasure_id: str
    """The id of the ``erasure.requested`` event."""
    tenant: str
    subject_record_ids: list[str] | None = None
    """The curated record ids asked for (``<tenant>/<id>``); None: the whole tenant."""
    requested_by: str
    reason: str = ""
    requested_at: datetime
    erased_at: datetime
    erased_records: int = Field(ge=0)
    """Curated rows removed from the service's store and the feature store (online and offline)."""
    datasets: list[str] = Field(default_factory=list)
    """Snapshots that hold at least one erased record (they stay as they are: immutable)."""
    model_versions: list[ErasedVersion] = Field(default_factory=list)
    """Versions trained on one of ``datasets`` when the erasure was done."""


def snapshots_holding(reader: SnapshotReader, *, tenant: str, record_ids: Collection[str] | None) -> list[str]:
    """The complete snapshots with a row of ``tenant`` (``record_ids`` None) or with one of the
    curated ``record_ids``. Reads only the id columns of each snapshot."""
    found = []
    for dataset_id in reader.dataset_ids():
        try:
            rows = reader.record_ids(dataset_id)
        except (OSError, ValueError) as error:
            logger.warning("snapshot unreadable; skipped", extra={"dataset_id": dataset_id, "error": repr(error)})
            continue
        hit = rows["tenant"] == tenant if record_ids is None else rows["record_id"].isin(list(record_ids))
        if bool(hit.any()):
            found.append(dataset_id)
    return found


def versions_trained_on(registry: ModelRegistry, dataset_ids: Iterable[str]) -> list[ErasedVersion]:
    """Every published version whose lineage names one of ``dataset_ids``."""
    wanted = set(dataset_ids)
    if not wanted:
        return []
    found = []
    for model in registry.model_names():
        for version in registry.published_versions(model):
            lineage = dict(registry.manifest(model, version).get("lineage") or {})
            dataset_id = str(lineage.get("dataset_id") or "")
            if dataset_id in wanted:
                found.append(ErasedVersion(model=model, version=version, dataset_id=dataset_id))
    return found


def write_erasure(store: ArtifactStore, record: ErasureRecord) -> str:
    """Write (or overwrite, when an erasure is handled again) the record; returns its URI."""
    return store.write_json(erasure_path(record.erasure_id), record.model_dump(mode="json"))


def read_erasures(store: ArtifactStore) -> list[ErasureRecord]:
    """Every erasure record, oldest first."""
    records = []
    for name in store.list(ERASURES_PREFIX):
        erasure_id = name.removesuffix(".json")
        if not name.endswith(".json") or not is_valid_name(erasure_id):
            continue
        try:
            records.append(ErasureRecord.model_validate(store.read_json(erasure_path(erasure_id))))
        except (OSError, ValueError) as error:
            logger.warning("erasure record unreadable; skipped", extra={"erasure": name, "error": repr(error)})
    return sorted(records, key=lambda record: (record.erased_at, record.erasure_id))


def erasures_of_dataset(erasures: Iterable[ErasureRecord], dataset_id: str) -> list[ErasureRecord]:
    """The erasures that removed records ``dataset_id`` holds: a version trained on it learned from
    erased data."""
    return [record for record in erasures if dataset_id in record.datasets]
