"""Erasure in the ingestion service, without a broker or Feast (issue 17, item 7): the rows leave the
service's store and the feature store, tombstones keep a redelivered record out, the next snapshot
is a new one without them, the erasure record names the snapshot and the version trained on it,
and the audit trail gets one event for the erasure and one per such version. The real broker and
the real Feast store are in ``tests/integration/test_lineage_erasure.py``."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pandas as pd

from llmops_events import Envelope, derived_id
from llmops_events.topics import RECORDS_RAW
from llmops_events.v1 import AuditAction, AuditRecorded, ErasureRequested, RecordSubmitted
from llmops_features import CREATED_FIELD, ENTITY, INT_FEATURES, TIMESTAMP_FIELD
from llmops_ingestion.adapters.metrics import IngestionMetrics
from llmops_ingestion.adapters.state import IngestionState
from llmops_ingestion.domain.erasure import curated_ids, is_erased_tenant
from llmops_ingestion.domain.snapshot import Position, SplitRatios
from llmops_ingestion.domain.validation import ValidationRules
from llmops_ingestion.handlers import CurationConfig, IngestionService
from llmops_messaging import Delivery, Origin, ProcessedEvents
from llmops_models import ModelRegistry, build_manifest, hash_folder, write_manifest
from llmops_models.erasures import read_erasures
from llmops_models.snapshots import SnapshotReader
from llmops_privacy.redaction import RedactionResult
from llmops_storage import ArtifactStore, open_store

OpenProcessed = Callable[[], ProcessedEvents]
"""The ``open_processed`` fixture (conftest.py): each test runs on SQLite, then on PostgreSQL."""

NOW = datetime(2026, 11, 30, tzinfo=UTC)


class MemoryFeatures:
    """The feature store in memory, with erasure."""

    def __init__(self) -> None:
        self.rows: dict[str, dict[str, Any]] = {}

    def push(self, rows: Sequence[dict[str, Any]]) -> None:
        for row in rows:
            self.rows[row[ENTITY]] = dict(row)

    def historical(self, record_ids: Sequence[str], *, as_of: datetime) -> Any:
        frame = pd.DataFrame([self.rows[record_id] for record_id in record_ids])
        for name in INT_FEATURES:
            frame[name] = 0
        return frame

    def erase(self, record_ids: Sequence[str], *, tenant: str | None = None) -> int:
        doomed = {key for key, row in self.rows.items() if key in set(record_ids) or row["tenant"] == tenant}
        for key in doomed:
            del self.rows[key]
        return len(doomed)


class RecordingSink:
    def __init__(self) -> None:
        self.sent: list[Envelope[Any]] = []

    async def publish(self, data: Any, *, id: str | None = None) -> Envelope[Any]:
        envelope = Envelope.wrap(data, source="/llmops/ingestion", id=id)
        self.sent.append(envelope)
        return envelope


def _row(record_id: str, tenant: str, index: int) -> dict[str, Any]:
    stamp = (NOW + timedelta(seconds=index)).isoformat()
    return {
        ENTITY: record_id,
        "tenant": tenant,
        "source": "crm",
        "text": f"text {index}",
        "label": "card_arrival" if index % 2 else "lost_card",
        TIMESTAMP_FIELD: stamp,
        CREATED_FIELD: stamp,
    }


def _service(
    tmp_path: Path, open_processed: OpenProcessed
) -> tuple[IngestionService, MemoryFeatures, RecordingSink, ArtifactStore]:
    processed = open_processed()
    state = IngestionState(processed)
    with processed.transaction() as connection:
        for index, (tenant, name) in enumerate([("acme", f"r-{i}") for i in range(6)] + [("other", "o-1")]):
            record_id = f"{tenant}/{name}"
            IngestionState.store_curated(
                connection,
                record_id=record_id,
                tenant=tenant,
                dedup_key=f"k-{index}",
                labelled=True,
                position=Position(RECORDS_RAW, 0, index),
                feature_row=_row(record_id, tenant, index),
                ingested_at=NOW,
            )
    features, sink = MemoryFeatures(), RecordingSink()
    artifacts = open_store(str(tmp_path / "artifacts"))
    service = IngestionService(
        config=CurationConfig(
            rules=ValidationRules(),
            split_ratios=SplitRatios(),
            snapshot_every_n_labelled=0,
            dataset_name="banking",
            push_batch_size=100,
            flywheel_retention=timedelta(days=3),
        ),
        redact=lambda text: RedactionResult(text),
        processed=processed,
        state=state,
        features=features,
        artifacts=artifacts,
        events=sink,
        metrics=IngestionMetrics(),
    )
    return service, features, sink, artifacts


def _publish_version(store: ArtifactStore, tmp_path: Path, *, dataset_id: str) -> None:
    """A model version whose lineage names ``dataset_id`` (the files do not matter here)."""
    folder = tmp_path / "version"
    folder.mkdir()
    (folder / "adapter.bin").write_bytes(b"weights")
    manifest = build_manifest(
        model_name="banking-intents",
        version=1,
        kind="classifier",
        files=hash_folder(folder),
        lineage={"request_id": "req-1", "dataset_id": dataset_id},
        metrics={"accuracy": 0.9},
        created_at=NOW,
    )
    write_manifest(folder, manifest)
    ModelRegistry(store).publish("banking-intents", 1, folder)


def _erasure(**fields: Any) -> Envelope[ErasureRequested]:
    return Envelope.wrap(ErasureRequested(requested_by="operator:alice", **fields), source="/llmops/erase")


def _record(tenant: str, record_id: str, *, offset: int, time: datetime | None = None) -> Delivery:
    envelope = Envelope.wrap(
        RecordSubmitted(tenant=tenant, source="crm", text=f"again {record_id}", record_id=record_id, label="refund"),
        source="/test",
    )
    if time is not None:
        envelope = envelope.model_copy(update={"time": time})
    return Delivery(envelope, Origin(RECORDS_RAW, 1, offset, "ingestion"))


def test_subject_ids_are_scoped_to_the_tenant_in_either_form() -> None:
    assert curated_ids("acme", ["r-2", "acme/r-1", "r-2"]) == ("acme/r-1", "acme/r-2")
    # Another tenant's curated form is a record id of this tenant, never that tenant's record.
    assert curated_ids("acme", ["other/o-1"]) == ("acme/other/o-1",)


def test_a_tenant_erasure_covers_records_submitted_up_to_its_request() -> None:
    erased = {"acme": NOW}
    assert is_erased_tenant(erased, "acme", NOW - timedelta(days=2))
    assert is_erased_tenant(erased, "acme", NOW)
    assert not is_erased_tenant(erased, "acme", NOW + timedelta(seconds=1))  # new data after the erasure
    assert not is_erased_tenant(erased, "other", NOW - timedelta(days=2))
    assert is_erased_tenant(erased, "acme", (NOW - timedelta(hours=1)).replace(tzinfo=None))  # naive: UTC


async def test_a_subjects_records_leave_every_store_and_stay_erased(
    tmp_path: Path, open_processed: OpenProcessed
) -> None:
    service, features, sink, artifacts = _service(tmp_path, open_processed)
    await service.push_pending()
    first = await service.cut_snapshot()
    _publish_version(artifacts, tmp_path, dataset_id=first.dataset_id)
    assert {"acme/r-1", "acme/r-2"} <= set(features.rows)

    request = _erasure(tenant="acme", subject_record_ids=["r-1", "acme/r-2", "r-99"], reason="GDPR art. 17")
    await service.on_erasure(request)

    assert not {"acme/r-1", "acme/r-2"} & set(features.rows)
    assert {"acme/r-0", "acme/r-3", "other/o-1"} <= set(features.rows)  # nothing else goes
    # The erasure record names the snapshot that held them and the version trained on it.
    (record,) = read_erasures(artifacts)
    assert (record.erasure_id, record.erased_records) == (request.id, 2)
    assert record.subject_record_ids == ["acme/r-1", "acme/r-2", "acme/r-99"]
    assert record.datasets == [first.dataset_id]
    assert [(v.model, v.version) for v in record.model_versions] == [("banking-intents", 1)]
    # Audited: the erasure by its principal, and the version as trained on erased data.
    audits = [envelope for envelope in sink.sent if isinstance(envelope.data, AuditRecorded)]
    assert [(a.data.action, a.data.principal, a.data.model, a.data.version) for a in audits] == [
        (AuditAction.ERASURE, "operator:alice", None, None),
        (AuditAction.ERASURE, "operator:alice", "banking-intents", 1),
    ]
    assert audits[0].id == derived_id(request.id, AuditRecorded.event_type)
    assert audits[0].data.details["records_erased"] == "2" and audits[0].data.tenant == "acme"

    # Nothing new arrived, yet the next snapshot is a new one: the last holds erased rows.
    second = await service.cut_snapshot()
    assert second.dataset_id != first.dataset_id
    ids = set(SnapshotReader(artifacts).record_ids(second.dataset_id)["record_id"])
    assert ids == {"acme/r-0", "acme/r-3", "acme/r-4", "acme/r-5", "other/o-1"}

    # Redelivered (and one named before it ever came): refused, not stored, not pushed.
    verdicts = await service.on_records([_record("acme", "r-1", offset=50), _record("acme", "r-99", offset=51)])
    assert verdicts == [None, None]
    await service.push_pending()
    assert not {"acme/r-1", "acme/r-99"} & set(features.rows)
    assert service._metrics.duplicates.labels("erased")._value.get() == 2

    # Handled again (a crash before the offset commit): same record, same audit ids, nothing more.
    sent = len(sink.sent)
    await service.on_erasure(request)
    assert [e.id for e in sink.sent[sent:]] == [a.id for a in audits]
    assert len(read_erasures(artifacts)) == 1


async def test_a_tenants_erasure_refuses_its_older_records_and_keeps_its_newer_ones(
    tmp_path: Path, open_processed: OpenProcessed
) -> None:
    service, features, sink, _ = _service(tmp_path, open_processed)
    await service.push_pending()
    request = _erasure(tenant="other", requested_at=NOW + timedelta(days=1))
    await service.on_erasure(request)
    assert not [row for row in features.rows.values() if row["tenant"] == "other"]
    assert len([row for row in features.rows.values() if row["tenant"] == "acme"]) == 6
    # A record submitted before the erasure but consumed only now (another partition, a replay)
    # stays erased; one submitted after it is new data.
    late = _record("other", "o-2", offset=60, time=NOW + timedelta(hours=23))
    new = _record("other", "o-3", offset=61, time=NOW + timedelta(days=2))
    assert await service.on_records([late, new]) == [None, None]
    await service.push_pending()
    assert sorted(key for key, row in features.rows.items() if row["tenant"] == "other") == ["other/o-3"]
    (audit,) = [envelope.data for envelope in sink.sent if isinstance(envelope.data, AuditRecorded)]
    assert audit.details["scope"] == "tenant" and audit.details["records_erased"] == "1"


async def test_a_tenants_erasure_applied_by_one_replica_is_seen_by_another_sharing_the_store(
    tmp_path: Path, open_processed: OpenProcessed
) -> None:
    """Replicas share one state store (docs/scale-out.md) and the privacy topic's one partition gives
    an erasure to one of them: the other must refuse the tenant's older records from then on."""
    first, _, _, _ = _service(tmp_path, open_processed)
    second, second_features, _, _ = _service(tmp_path, open_processed)  # another replica on the same database
    await first.on_erasure(_erasure(tenant="other", requested_at=NOW + timedelta(days=1)))
    late = _record("other", "o-2", offset=70, time=NOW + timedelta(hours=23))
    new = _record("other", "o-3", offset=71, time=NOW + timedelta(days=2))
    assert await second.on_records([late, new]) == [None, None]
    await second.push_pending()
    assert "other/o-2" not in second_features.rows and "other/o-3" in second_features.rows
