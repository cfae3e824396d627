"""``make lineage``: where a model version came from, from what serves back to the records it learned.

Read from what the platform already keeps, never from a service: the version's manifest in the
artifact store (file hashes, metrics, the training lineage: request, dataset, base-model weights,
code version, every hyperparameter), its snapshot's manifest (content hash and the exact
topic/partition/offset ranges of the records it holds), the evaluation gate's ``decision.json``,
the erasure records (``llmops_models.erasures``), and from the bus the training request, the
evaluation decision and the deployment history (deployments and audit topics) of the version.

The bus part is optional (``read_bus=False``, or a broker that cannot be reached): what the
artifact store holds is always shown, with a note saying what is missing and why.
"""

from __future__ import annotations

import asyncio
import json
import tempfile
from collections.abc import Sequence
from datetime import datetime
from pathlib import Path
from typing import Any

from aiokafka import AIOKafkaConsumer, TopicPartition
from pydantic import BaseModel, Field

from llmops_config import PlatformSettings
from llmops_config.kafka import kafka_client_options
from llmops_events import DecodeError, Envelope, KafkaRecord, decode
from llmops_events.topics import AUDIT, DEPLOYMENTS, EVALUATIONS, TOPICS_BY_NAME, TRAINING
from llmops_events.v1 import (
    AuditAction,
    AuditRecorded,
    DeploymentCanaryStarted,
    DeploymentPromoted,
    DeploymentRequested,
    DeploymentRolledBack,
    EvaluationCompleted,
    OffsetRange,
    TrainingRequested,
)
from llmops_models import ArtifactMissing, ManifestMismatch, ModelRegistry, combined_hash, evaluation_path
from llmops_models.erasures import erasures_of_dataset, read_erasures
from llmops_models.snapshots import SnapshotReader, content_of
from llmops_storage import ArtifactStore

HISTORY_TOPICS = (TRAINING, EVALUATIONS, DEPLOYMENTS, AUDIT)
"""The topics the bus part reads (each from its oldest retained message)."""


class DatasetLineage(BaseModel):
    """The snapshot a version was trained on."""

    dataset_id: str
    uri: str | None = None
    content: str | None = None
    created_at: datetime | None = None
    as_of: datetime | None = None
    """The point in time of the feature-store read that cut it."""
    row_count: int | None = None
    content_hash: str | None = None
    content_hash_matches: bool | None = None
    """Whether the snapshot still hashes as it did when the version was trained (from its manifest)."""
    split_counts: dict[str, int] = Field(default_factory=dict)
    feature_view: str | None = None
    offset_ranges: list[OffsetRange] = Field(default_factory=list)
    """The records it holds: ``[start, end)`` offsets per topic partition (empty for a snapshot that
    was written from a file, not cut from the bus)."""
    rows_per_range: list[int] = Field(default_factory=list)
    """How many of its rows were read inside each of ``offset_ranges`` (from the rows' own
    ``source_*`` columns; a range also spans messages that were refused, duplicates or not labelled)."""


class TrainingLineage(BaseModel):
    """The training request and everything the trainer resolved from it."""

    request_id: str | None = None
    requested_at: datetime | None = None
    """When the request was published (from the training topic, while it keeps it)."""
    reason: str | None = None
    requested_by: str | None = None
    task: str | None = None
    base_model: str | None = None
    base_model_weights_hash: str | None = None
    code_version: str | None = None
    hyperparameters: dict[str, Any] = Field(default_factory=dict)
    trainer: dict[str, Any] = Field(default_factory=dict)
    evidence: dict[str, Any] = Field(default_factory=dict)


class EvaluationLineage(BaseModel):
    """The evaluation gate's decision on the version."""

    decision: str
    reasons: list[str] = Field(default_factory=list)
    champion_version: int | None = None
    candidate_metrics: dict[str, Any] = Field(default_factory=dict)
    report_uri: str | None = None
    source: str = Field(examples=["artifact store", "bus"])


class DeploymentStep(BaseModel):
    """One event of the version's deployment history."""

    time: datetime
    event: str = Field(examples=["canary_started", "promoted", "rolled_back", "audit:canary_verdict"])
    detail: str = ""
    by: str = ""


class ErasureMark(BaseModel):
    """An erasure that removed records the version's snapshot holds."""

    erasure_id: str
    tenant: str
    scope: str
    erased_at: datetime
    requested_by: str
    reason: str = ""


class VersionLineage(BaseModel):
    """``llmops lineage``'s answer (``--json`` prints it as is)."""

    model: str
    version: int
    kind: str | None = None
    serving: str = Field(examples=["champion", "canary", "not serving", "unknown"])
    artifact_uri: str
    created_at: datetime | None = None
    artifact_hash: str
    """One hash over the hashes of every file of the version (``llmops_models.combined_hash``)."""
    files: dict[str, str] = Field(default_factory=dict)
    verified: bool | None = None
    """With ``verify``: whether every file still hashes as the manifest says."""
    metrics: dict[str, float] = Field(default_factory=dict)
    training: TrainingLineage
    dataset: DatasetLineage | None = None
    evaluation: EvaluationLineage | None = None
    canary_verdict: str = Field(examples=["promoted", "rolled back", "canary running", "not deployed"])
    deployments: list[DeploymentStep] = Field(default_factory=list)
    trained_on_erased_data: bool = False
    erasures: list[ErasureMark] = Field(default_factory=list)
    notes: list[str] = Field(default_factory=list)
    """What could not be read, and why."""


# --- the bus ---------------------------------------------------------------------------------------


async def read_history(
    settings: PlatformSettings,
    *,
    model: str,
    topics: Sequence[str] = HISTORY_TOPICS,
    max_per_partition: int = 100_000,
    timeout_s: float = 60.0,
) -> list[Envelope[Any]]:
    """The events about ``model`` on ``topics`` (those the broker has), oldest first per topic: the
    latest ``max_per_partition`` messages of each partition, up to its end when the read began."""
    options = kafka_client_options(settings, service="lineage")
    consumer = AIOKafkaConsumer(
        **options.aiokafka(group_id=f"{settings.kafka_client_id_prefix}-lineage", enable_auto_commit=False)
    )
    found: list[Envelope[Any]] = []
    await consumer.start()
    try:
        async with asyncio.timeout(timeout_s):
            existing = await consumer.topics()
            partitions = [
                TopicPartition(options.topic(topic), partition)
                for topic in topics
                if options.topic(topic) in existing
                for partition in range(TOPICS_BY_NAME[topic].partitions)
            ]
            if not partitions:
                return found
            consumer.assign(partitions)
            ends = await consumer.end_offsets(partitions)
            starts = await consumer.beginning_offsets(partitions)
            for partition in partitions:
                consumer.seek(partition, max(starts[partition], ends[partition] - max_per_partition))
            pending = {partition for partition in partitions if ends[partition] > starts[partition]}
            while pending:
                batches = await consumer.getmany(*pending, timeout_ms=1000)
                for partition, messages in batches.items():
                    for message in messages:
                        if message.offset >= ends[partition]:
                            continue
                        record = KafkaRecord(message.key, message.value or b"", tuple(message.headers or ()))
                        try:
                            envelope: Envelope[Any] = decode(record)
                        except DecodeError:
                            continue  # the DLQ's business, not lineage's
                        if _about(envelope.data, model):
                            found.append(envelope)
                for partition in list(pending):
                    if await consumer.position(partition) >= ends[partition]:
                        pending.discard(partition)
    finally:
        await consumer.stop()
    return found


def _about(event: Any, model: str) -> bool:
    if isinstance(event, AuditRecorded):
        return event.model == model
    return getattr(event, "model_name", None) == model


# --- assembling --------------------------------------------------------------------------------------


def champion_of(events: Sequence[Envelope[Any]]) -> int | None:
    """The version serving as champion after the deployment events (oldest first), if any."""
    champion: int | None = None
    for envelope in events:
        event = envelope.data
        if isinstance(event, DeploymentPromoted):
            champion = event.model_version
        elif isinstance(event, DeploymentRolledBack) and event.model_version == champion:
            champion = event.restored_version
    return champion


def _canary_of(events: Sequence[Envelope[Any]]) -> int | None:
    canary: int | None = None
    for envelope in events:
        event = envelope.data
        if isinstance(event, DeploymentCanaryStarted):
            canary = event.model_version
        elif isinstance(event, DeploymentPromoted | DeploymentRolledBack) and event.model_version == canary:
            canary = None
    return canary


def deployment_history(events: Sequence[Envelope[Any]], version: int) -> list[DeploymentStep]:
    """The deployment and audit events about ``version``, in time order."""
    steps: list[DeploymentStep] = []
    for envelope in events:
        event = envelope.data
        match event:
            case DeploymentRequested(model_version=v) if v == version:
                steps.append(DeploymentStep(time=envelope.time, event="requested", by=event.requested_by))
            case DeploymentCanaryStarted(model_version=v) if v == version:
                detail = f"{event.traffic_share:.0%} of traffic, champion v{event.champion_version}"
                steps.append(DeploymentStep(time=envelope.time, event="canary_started", detail=detail))
            case DeploymentPromoted(model_version=v) if v == version:
                previous = f"after v{event.previous_version}" if event.previous_version else "first version"
                detail = f"{previous}: {event.reason}" if event.reason else previous
                steps.append(DeploymentStep(time=envelope.time, event="promoted", detail=detail, by=event.promoted_by))
            case DeploymentRolledBack(model_version=v) if v == version:
                restored = f"v{event.restored_version} restored" if event.restored_version else "nothing restored"
                detail = f"{restored}: {event.reason}" if event.reason else restored
                steps.append(
                    DeploymentStep(time=envelope.time, event="rolled_back", detail=detail, by=event.rolled_back_by)
                )
            case AuditRecorded(version=v) if v == version:
                verdict = event.details.get("verdict")
                detail = f"{verdict}: {event.reason}" if verdict else event.reason
                steps.append(
                    DeploymentStep(
                        time=envelope.time, event=f"audit:{event.action.value}", detail=detail, by=event.principal
                    )
                )
    return sorted(steps, key=lambda step: step.time)


def canary_verdict(steps: Sequence[DeploymentStep]) -> str:
    """The verdict on the version's deployment: the audit's canary verdict when there is one, else
    what the deployment events say happened last."""
    for step in reversed(steps):
        if step.event == f"audit:{AuditAction.CANARY_VERDICT.value}":
            return step.detail.split(":", 1)[0] or "judged"
    for step in reversed(steps):
        if step.event == "promoted":
            return "promoted"
        if step.event == "rolled_back":
            return "rolled back"
        if step.event == "canary_started":
            return "canary running"
    return "requested, not yet live" if any(step.event == "requested" for step in steps) else "not deployed"


def _evaluation(
    store: ArtifactStore, events: Sequence[Envelope[Any]], model: str, version: int
) -> EvaluationLineage | None:
    path = f"{evaluation_path(model, version)}/decision.json"
    if store.exists(path):
        record = dict(store.read_json(path))
        return EvaluationLineage(
            decision=str(record.get("decision")),
            reasons=[f"{reason.get('rule')}: {reason.get('message')}" for reason in record.get("reasons") or []],
            champion_version=record.get("champion_version"),
            candidate_metrics=dict(record.get("candidate_metrics") or {}),
            report_uri=record.get("report_uri"),
            source="artifact store",
        )
    decided = [e.data for e in events if isinstance(e.data, EvaluationCompleted) and e.data.model_version == version]
    if not decided:
        return None
    last = decided[-1]
    return EvaluationLineage(
        decision=last.decision.value,
        reasons=[f"{reason.rule}: {reason.message}" for reason in last.reasons],
        champion_version=last.champion_version,
        candidate_metrics=dict(last.candidate_metrics),
        report_uri=last.report_uri,
        source="bus",
    )


def _dataset(store: ArtifactStore, dataset_id: str, trained_hash: str | None, notes: list[str]) -> DatasetLineage:
    reader = SnapshotReader(store)
    if not reader.is_complete(dataset_id):
        notes.append(f"snapshot {dataset_id} is not in the artifact store")
        return DatasetLineage(dataset_id=dataset_id)
    manifest = reader.manifest(dataset_id)
    ranges = [OffsetRange.model_validate(entry) for entry in manifest.get("lineage") or []]
    if not ranges:
        notes.append(f"snapshot {dataset_id} has no offset ranges: it was written from a file, not cut from the bus")
    content_hash = manifest.get("content_hash")
    positions = reader.positions(dataset_id)
    rows_per_range = [
        int(
            (
                (positions["source_topic"] == entry.topic)
                & (positions["source_partition"] == entry.partition)
                & (positions["source_offset"] >= entry.start)
                & (positions["source_offset"] < entry.end)
            ).sum()
        )
        for entry in ranges
    ]
    return DatasetLineage(
        dataset_id=dataset_id,
        uri=store.uri(f"datasets/{dataset_id}"),
        content=content_of(manifest),
        created_at=manifest.get("created_at"),
        as_of=manifest.get("as_of"),
        row_count=manifest.get("row_count"),
        content_hash=content_hash,
        content_hash_matches=None if trained_hash is None else content_hash == trained_hash,
        split_counts=dict(manifest.get("split_counts") or {}),
        feature_view=manifest.get("feature_view"),
        offset_ranges=ranges,
        rows_per_range=rows_per_range if len(positions) else [],
    )


def assemble(
    store: ArtifactStore,
    *,
    model: str,
    version: int | None = None,
    events: Sequence[Envelope[Any]] = (),
    notes: Sequence[str] = (),
    verify: bool = False,
) -> VersionLineage:
    """The lineage of ``model`` version ``version`` (None: the champion the deployment events name,
    else the latest published version) from the artifact store and the bus ``events`` about the
    model (oldest first). ``ArtifactMissing`` when there is no such version."""
    registry = ModelRegistry(store)
    notes = list(notes)
    deployment_events = [e for e in events if e.data.topic in (DEPLOYMENTS, AUDIT)]
    if version is None:
        version = champion_of(deployment_events)
        if version is None:
            published = registry.published_versions(model)
            if not published:
                raise ArtifactMissing(f"model {model!r} has no published version in {store.root_uri}")
            version = published[-1]
            notes.append(f"no deployment of {model} on the bus: showing its latest version, v{version}")
    if not registry.is_published(model, version):
        raise ArtifactMissing(f"{model} v{version} is not published in {store.root_uri}")
    manifest = registry.manifest(model, version)
    verified = None
    if verify:
        with tempfile.TemporaryDirectory(prefix="llmops-lineage-") as scratch:
            try:
                registry.download_verified(model, version, Path(scratch) / "version")
                verified = True
            except ManifestMismatch as error:
                verified = False
                notes.append(f"verification failed: {error.detail}")
    lineage = dict(manifest.get("lineage") or {})
    requested_at = next(
        (
            e.time
            for e in events
            if isinstance(e.data, TrainingRequested) and lineage.get("request_id") and e.id == lineage["request_id"]
        ),
        None,
    )
    training = TrainingLineage(
        request_id=lineage.get("request_id") or manifest.get("request_id"),
        requested_at=requested_at,
        reason=lineage.get("reason"),
        requested_by=lineage.get("requested_by"),
        task=lineage.get("task"),
        base_model=lineage.get("base_model"),
        base_model_weights_hash=lineage.get("base_model_weights_hash"),
        code_version=lineage.get("code_version"),
        hyperparameters=dict(lineage.get("hyperparameters") or {}),
        trainer=dict(lineage.get("trainer") or {}),
        evidence=dict(lineage.get("evidence") or {}),
    )
    dataset_id = lineage.get("dataset_id")
    dataset = _dataset(store, str(dataset_id), lineage.get("dataset_content_hash"), notes) if dataset_id else None
    marks = []
    if dataset_id:
        for erasure in erasures_of_dataset(read_erasures(store), str(dataset_id)):
            scope = (
                "tenant" if erasure.subject_record_ids is None else f"{len(erasure.subject_record_ids)} record id(s)"
            )
            marks.append(
                ErasureMark(
                    erasure_id=erasure.erasure_id,
                    tenant=erasure.tenant,
                    scope=scope,
                    erased_at=erasure.erased_at,
                    requested_by=erasure.requested_by,
                    reason=erasure.reason,
                )
            )
    steps = deployment_history(deployment_events, version)
    champion, canary = champion_of(deployment_events), _canary_of(deployment_events)
    if not deployment_events:
        serving = "unknown"
    elif champion == version:
        serving = "champion"
    elif canary == version:
        serving = "canary"
    else:
        serving = "not serving"
    files = dict(manifest.get("files") or {})
    return VersionLineage(
        model=model,
        version=version,
        kind=manifest.get("kind"),
        serving=serving,
        artifact_uri=registry.uri(model, version),
        created_at=manifest.get("created_at"),
        artifact_hash=combined_hash(files),
        files=files,
        verified=verified,
        metrics={name: float(value) for name, value in dict(manifest.get("metrics") or {}).items()},
        training=training,
        dataset=dataset,
        evaluation=_evaluation(store, events, model, version),
        canary_verdict=canary_verdict(steps),
        deployments=steps,
        trained_on_erased_data=bool(marks),
        erasures=marks,
        notes=notes,
    )


async def lineage_of(
    settings: PlatformSettings,
    store: ArtifactStore,
    *,
    model: str,
    version: int | None = None,
    read_bus: bool = True,
    verify: bool = False,
    timeout_s: float = 60.0,
) -> VersionLineage:
    """``assemble`` with the bus history read first (a broker that cannot be read is a note)."""
    events: list[Envelope[Any]] = []
    notes: list[str] = []
    if read_bus:
        try:
            events = await read_history(settings, model=model, timeout_s=timeout_s)
        except Exception as error:  # any broker failure is a note: the artifact store still answers
            notes.append(
                f"the bus could not be read ({error!r}): training request, evaluation and deployment events missing"
            )
    else:
        notes.append("the bus was not read: deployment history and canary verdict unknown")
    return await asyncio.to_thread(
        assemble, store, model=model, version=version, events=events, notes=notes, verify=verify
    )


# --- output ------------------------------------------------------------------------------------------


def render(lineage: VersionLineage) -> str:
    """The lineage as aligned text, one fact per line, for people."""
    lines: list[str] = []

    def row(name: str, value: Any) -> None:
        if value not in (None, "", [], {}):
            lines.append(f"  {name:<24} {value}")

    lines.append(f"{lineage.model} v{lineage.version} ({lineage.kind or 'unknown kind'}), {lineage.serving}")
    if lineage.trained_on_erased_data:
        lines.append("  ! TRAINED ON ERASED DATA: its snapshot holds records erased since (see erasures)")
    lines.append("artifact")
    row("uri", lineage.artifact_uri)
    row("created", lineage.created_at)
    row("hash (all files)", lineage.artifact_hash)
    for name, digest in lineage.files.items():
        row(f"  {name}", digest)
    if lineage.verified is not None:
        row("verified", "every file hashes as its manifest says" if lineage.verified else "NO: files changed")
    row("metrics", ", ".join(f"{name} {value:.4f}" for name, value in sorted(lineage.metrics.items())))
    training = lineage.training
    lines.append("training request")
    row("request id", training.request_id)
    row("requested at", training.requested_at)
    row("reason", training.reason)
    row("requested by", training.requested_by)
    row("task", training.task)
    row("base model", training.base_model)
    row("base weights hash", training.base_model_weights_hash)
    row("code version", training.code_version)
    row("hyperparameters", json.dumps(training.hyperparameters, sort_keys=True))
    row("trainer policy", json.dumps(training.trainer, sort_keys=True))
    if lineage.dataset is not None:
        dataset = lineage.dataset
        lines.append("dataset snapshot")
        row("id", dataset.dataset_id)
        row("uri", dataset.uri)
        row("series", dataset.content)
        row("cut at", dataset.created_at)
        row("feature store as of", dataset.as_of)
        row("rows", dataset.row_count)
        row("splits", ", ".join(f"{name} {count}" for name, count in dataset.split_counts.items()))
        row("content hash", dataset.content_hash)
        if dataset.content_hash_matches is not None:
            row("hash at training", "matches" if dataset.content_hash_matches else "DIFFERS: the snapshot changed")
        for index, entry in enumerate(dataset.offset_ranges):
            span = f"offsets {entry.start}..{entry.end - 1} ({entry.end - entry.start} messages"
            if index < len(dataset.rows_per_range):
                span += f", {dataset.rows_per_range[index]} rows of the snapshot"
            row("records from", f"{entry.topic} partition {entry.partition} {span})")
    if lineage.evaluation is not None:
        evaluation = lineage.evaluation
        lines.append(f"evaluation ({evaluation.source})")
        row("decision", evaluation.decision)
        row("champion compared", f"v{evaluation.champion_version}" if evaluation.champion_version else "none")
        for reason in evaluation.reasons:
            row("reason", reason)
        row("report", evaluation.report_uri)
    lines.append("deployment")
    row("canary verdict", lineage.canary_verdict)
    for step in lineage.deployments:
        by = f" by {step.by}" if step.by else ""
        row(step.time.isoformat(timespec="seconds"), f"{step.event}{by}" + (f": {step.detail}" if step.detail else ""))
    if lineage.erasures:
        lines.append("erasures")
        for mark in lineage.erasures:
            row(
                mark.erased_at.isoformat(timespec="seconds"),
                f"{mark.erasure_id}: {mark.scope} of tenant {mark.tenant} by {mark.requested_by}"
                + (f" ({mark.reason})" if mark.reason else ""),
            )
    for note in lineage.notes:
        lines.append(f"note: {note}")
    return "\n".join(lines)
