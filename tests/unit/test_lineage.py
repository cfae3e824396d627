"""``llmops lineage`` assembled from an artifact store and bus events, without a broker: the version's
hashes, training lineage, snapshot with its offset ranges, evaluation decision, deployment history
and canary verdict, and the mark of an erasure (issue 17, items 6 and 7). The real thing, on the
real broker with a trained model, is ``tests/integration/test_lineage_erasure.py``."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pandas as pd
import pytest

from llmops_cli.lineage import assemble, canary_verdict, champion_of, deployment_history, render
from llmops_events import Envelope, EventData
from llmops_events.v1 import (
    AuditAction,
    AuditRecorded,
    DeploymentCanaryStarted,
    DeploymentPromoted,
    DeploymentRolledBack,
)
from llmops_models import (
    ArtifactMissing,
    ModelRegistry,
    build_manifest,
    combined_hash,
    evaluation_path,
    hash_folder,
    write_manifest,
)
from llmops_models.erasures import ErasedVersion, ErasureRecord, write_erasure
from llmops_models.snapshots import publish_snapshot
from llmops_storage import ArtifactStore

T0 = datetime(2026, 12, 1, 8, 0, tzinfo=UTC)
MODEL = "banking-intents"
DATASET = "records-20261201T080000Z-abcdef"


def _store(tmp_path: Path) -> ArtifactStore:
    store = ArtifactStore(str(tmp_path / "artifacts"))
    frame = pd.DataFrame(
        {
            "record_id": ["acme/r-1", "acme/r-2"],
            "tenant": ["acme", "acme"],
            "text": ["a", "b"],
            "label": ["x", "y"],
            "split": ["train", "validation"],
            "source_topic": ["llmops.records.raw.v1", "llmops.records.raw.v1"],
            "source_partition": [0, 0],
            "source_offset": [10, 11],
        }
    )
    publish_snapshot(
        store,
        frame,
        {
            "dataset_id": DATASET,
            "content": "records",
            "created_at": T0.isoformat(),
            "as_of": T0.isoformat(),
            "row_count": 2,
            "content_hash": "sha256:feed",
            "split_counts": {"train": 1, "validation": 1, "test": 0},
            "files": {"train": "train.parquet", "validation": "validation.parquet"},
            "feature_view": "curated_records",
            "lineage": [
                {"topic": "llmops.records.raw.v1", "partition": 0, "start": 10, "end": 12},
                {"topic": "llmops.records.raw.v1", "partition": 3, "start": 4, "end": 5},
            ],
        },
    )
    for version in (1, 2):
        folder = tmp_path / f"v{version}"
        folder.mkdir()
        (folder / "adapter_model.safetensors").write_bytes(f"weights {version}".encode())
        manifest = build_manifest(
            model_name=MODEL,
            version=version,
            kind="classifier",
            files=hash_folder(folder),
            lineage={
                "request_id": f"req-{version}",
                "reason": "manual",
                "requested_by": "operator:alice",
                "dataset_id": DATASET,
                "dataset_content_hash": "sha256:feed",
                "base_model": "sentence-transformers/all-MiniLM-L6-v2",
                "base_model_weights_hash": "sha256:base",
                "code_version": "abc123",
                "task": "sequence-classification",
                "hyperparameters": {"epochs": 2, "seed": 42},
                "trainer": {"pooling": "mean"},
            },
            metrics={"accuracy": 0.75},
            created_at=T0,
        )
        write_manifest(folder, manifest)
        ModelRegistry(store).publish(MODEL, version, folder)
    decision = {"decision": "approved", "reasons": [], "champion_version": 1, "candidate_metrics": {"accuracy": 0.75}}
    store.write_bytes(f"{evaluation_path(MODEL, 2)}/decision.json", json.dumps(decision).encode())
    return store


def _events() -> list[Envelope[Any]]:
    def at(minutes: int, data: EventData) -> Envelope[Any]:
        return Envelope.wrap(data, source="/llmops/deployment").model_copy(
            update={"time": T0 + timedelta(minutes=minutes)}
        )

    return [
        at(1, DeploymentPromoted(model_name=MODEL, model_version=1)),
        at(2, DeploymentCanaryStarted(model_name=MODEL, model_version=2, champion_version=1, traffic_share=0.1)),
        at(
            3,
            AuditRecorded(
                action=AuditAction.CANARY_VERDICT,
                principal="service:deployment",
                model=MODEL,
                version=2,
                reason="error rate within limits",
                details={"verdict": "promote"},
            ),
        ),
        at(4, DeploymentPromoted(model_name=MODEL, model_version=2, previous_version=1, reason="canary passed")),
    ]


def test_the_champion_follows_promotions_and_rollbacks() -> None:
    events = _events()
    assert champion_of(events) == 2
    rolled_back = Envelope.wrap(
        DeploymentRolledBack(model_name=MODEL, model_version=2, restored_version=1), source="/llmops/deployment"
    )
    assert champion_of([*events, rolled_back]) == 1
    assert canary_verdict(deployment_history([*events, rolled_back], 2)) == "promote"  # the audit's verdict wins
    assert canary_verdict(deployment_history(events[:2], 2)) == "canary running"
    assert canary_verdict([]) == "not deployed"


def test_lineage_of_the_serving_version(tmp_path: Path) -> None:
    store = _store(tmp_path)
    lineage = assemble(store, model=MODEL, events=_events(), verify=True)
    assert (lineage.version, lineage.serving, lineage.canary_verdict) == (2, "champion", "promote")
    assert lineage.verified is True
    assert lineage.artifact_hash == combined_hash(lineage.files)
    assert lineage.training.request_id == "req-2" and lineage.training.hyperparameters["seed"] == 42
    assert lineage.dataset is not None and lineage.dataset.content_hash_matches is True
    assert [(r.partition, r.start, r.end) for r in lineage.dataset.offset_ranges] == [(0, 10, 12), (3, 4, 5)]
    assert lineage.dataset.rows_per_range == [2, 0]
    assert lineage.evaluation is not None and lineage.evaluation.decision == "approved"
    assert [step.event for step in lineage.deployments] == ["canary_started", "audit:canary_verdict", "promoted"]
    assert not lineage.trained_on_erased_data
    text = render(lineage)
    assert "llmops.records.raw.v1 partition 0 offsets 10..11 (2 messages, 2 rows of the snapshot)" in text
    assert "llmops.records.raw.v1 partition 3 offsets 4..4" in text
    assert "canary verdict           promote" in text


def test_a_version_trained_on_erased_data_says_so(tmp_path: Path) -> None:
    store = _store(tmp_path)
    write_erasure(
        store,
        ErasureRecord(
            erasure_id="e-1",
            tenant="acme",
            subject_record_ids=["acme/r-1"],
            requested_by="operator:alice",
            requested_at=T0,
            erased_at=T0 + timedelta(minutes=5),
            erased_records=1,
            datasets=[DATASET],
            model_versions=[ErasedVersion(model=MODEL, version=1, dataset_id=DATASET)],
        ),
    )
    # Version 1 was listed when the erasure ran; version 2 is marked too: it learned from the same snapshot.
    lineage = assemble(store, model=MODEL, version=1, events=_events())
    assert lineage.trained_on_erased_data and lineage.erasures[0].erasure_id == "e-1"
    assert lineage.serving == "not serving"
    assert "TRAINED ON ERASED DATA" in render(lineage)
    assert assemble(store, model=MODEL, version=2).trained_on_erased_data


def test_without_the_bus_the_latest_version_is_shown_with_a_note(tmp_path: Path) -> None:
    store = _store(tmp_path)
    lineage = assemble(store, model=MODEL)
    assert lineage.version == 2 and lineage.serving == "unknown" and lineage.canary_verdict == "not deployed"
    assert any("latest version" in note for note in lineage.notes)
    with pytest.raises(ArtifactMissing):
        assemble(store, model=MODEL, version=7)
    with pytest.raises(ArtifactMissing):
        assemble(store, model="no-such-model")
