"""The ingestion service's handlers: decode → domain → store → publish.

Each record (or instruction example) is curated and stored in the service's SQLite database in one
transaction together with its event id (exactly-once in effect) and a feature row in an outbox; a
background task pushes the outbox to Feast in batches, because a Feast push costs tens of
milliseconds and records arrive by the thousand per second. Pushing a row twice is harmless:
snapshots read Feast with a point-in-time join, which yields one row per record id.

Records and instruction examples are two snapshot series (``DatasetContent``): each has its own
feature view, its own count policy and its own snapshots, never mixed.

An erasure (``erasure.requested``) removes a tenant's or a data subject's curated rows from the
service's store and from Feast (online and offline), leaves a tombstone per record id so a
redelivered record stays erased, records which snapshots and model versions held them
(``llmops_models.erasures``) and writes the audit trail.

Feedback closes two loops: a true label for a classification makes a labelled record; a corrected
answer for a generation makes an instruction example (``source=feedback``), and answers that
feedback compares make preference pairs, which the next instructions snapshot carries beside its
rows. Either half (the inference log, the feedback) may come first: the one that comes first waits
in the service's join state for at most ``flywheel_retention``.
"""

from __future__ import annotations

import asyncio
import json
import logging
from collections import Counter
from collections.abc import Callable, Sequence
from dataclasses import dataclass, replace
from datetime import UTC, datetime, timedelta
from typing import Any

import pandas as pd

from llmops_events import Envelope, derived_id
from llmops_events.v1 import (
    AuditAction,
    AuditRecorded,
    DatasetContent,
    DatasetSnapshotted,
    ErasureRequested,
    FeedbackSubmitted,
    InferenceLogged,
    InstructionSubmitted,
    TrainingReason,
    TrainingRequested,
    TrainingTask,
)
from llmops_features import (
    CREATED_FIELD,
    ENTITY,
    INSTRUCTIONS_VIEW,
    RECORDS_VIEW,
    TIMESTAMP_FIELD,
)
from llmops_ingestion.adapters.consumer import current_position
from llmops_ingestion.adapters.metrics import IngestionMetrics
from llmops_ingestion.adapters.snapshots import publish_snapshot, split_files
from llmops_ingestion.adapters.state import (
    CuratedRow,
    Erasure,
    IngestionState,
    PendingFeedback,
    PendingGenerationFeedback,
    StoreOutcome,
)
from llmops_ingestion.adapters.tokenizer import ChatTokenizer
from llmops_ingestion.domain.curation import CuratedRecord, RecordInput, curate, curate_batch
from llmops_ingestion.domain.erasure import as_utc, curated_ids, is_erased_tenant
from llmops_ingestion.domain.feedback import (
    PreferencePair,
    ServedGeneration,
    ServedRequest,
    correction_pair,
    instruction_from_correction,
    prompt_of,
    rating_pair,
    record_from_feedback,
)
from llmops_ingestion.domain.instructions import (
    AnswerFormat,
    CuratedInstruction,
    InstructionInput,
    Turn,
    curate_instructions,
    normalise_turn,
)
from llmops_ingestion.domain.ports import ChatTokenCounter, EventSink, FeatureStore
from llmops_ingestion.domain.snapshot import (
    Position,
    SplitRatios,
    build_manifest,
    content_columns,
    dataset_id_for,
    lineage_ranges,
    should_snapshot,
    split_of,
)
from llmops_ingestion.domain.validation import (
    RuleViolation,
    ValidationRules,
    check_answer,
    check_corrected_answer,
    check_label,
    check_output_format,
    check_record,
    check_token_count,
    check_turns,
)
from llmops_ingestion.errors import NothingToSnapshot
from llmops_messaging import Delivery, Origin, ProcessedEvents, Rejected
from llmops_messaging.tracing import annotate, triggered_span
from llmops_models import ModelRegistry
from llmops_models.erasures import ErasureRecord, snapshots_holding, versions_trained_on, write_erasure
from llmops_models.layout import erasure_path
from llmops_models.snapshots import POSITION_COLUMNS, PREFERENCE_COLUMNS, SnapshotReader
from llmops_privacy.redaction import PiiKind, RedactionResult
from llmops_storage import ArtifactStore

logger = logging.getLogger(__name__)

VALIDATE_STAGE = "validate"
AUDIT_DETAIL_LIMIT = 2000
"""Longest text of one audit detail (a list of versions is cut there; the erasure record in the
artifact store has all of them)."""


@dataclass(frozen=True, slots=True)
class CurationConfig:
    rules: ValidationRules
    split_ratios: SplitRatios
    snapshot_every_n_labelled: int
    dataset_name: str
    push_batch_size: int
    flywheel_retention: timedelta
    snapshot_every_n_instructions: int = 0
    """The count policy of the instructions series (0: only on demand)."""
    max_rated_answers_per_prompt: int = 16
    """Earlier rated answers to the same prompt a new rating is paired with (0: no rating pairs)."""


_FRESH_DATA_REASONS = frozenset({TrainingReason.DRIFT, TrainingReason.QUALITY})
_VIEWS = {DatasetContent.RECORDS: RECORDS_VIEW, DatasetContent.INSTRUCTIONS: INSTRUCTIONS_VIEW}


class IngestionService:
    """Handlers for records, inference logs and feedback, plus Feast pushes and snapshots."""

    def __init__(
        self,
        *,
        config: CurationConfig,
        redact: Callable[[str], RedactionResult],
        processed: ProcessedEvents,
        state: IngestionState,
        features: FeatureStore,
        artifacts: ArtifactStore,
        events: EventSink,
        metrics: IngestionMetrics,
        tokens: ChatTokenCounter | None = None,
    ) -> None:
        """``tokens``: measures instruction examples (default: the SmolLM2 tokenizer, loaded on the
        first example)."""
        self._config = config
        self._redact = redact
        self._processed = processed
        self._state = state
        self._features = features
        self._artifacts = artifacts
        self._events = events
        self._metrics = metrics
        self._tokens = tokens if tokens is not None else ChatTokenizer()
        # One push and one snapshot at a time: both read and clear shared state.
        self._push_lock = asyncio.Lock()
        self._snapshot_lock = asyncio.Lock()
        # Per series: the policy's running cut, and labelled rows since its last snapshot.
        self._snapshot_tasks: dict[DatasetContent, asyncio.Task[Any]] = {}
        self._labelled_pending: dict[DatasetContent, int | None] = {content: None for content in DatasetContent}
        # Tenants erased as a whole → the latest such erasure's requested_at (checked per record).
        self._erased_tenants = state.tenant_erasures()
        self._tenant_erasures_seen = state.tenant_erasure_count()

    # --- handlers -------------------------------------------------------------------------

    async def on_records(self, deliveries: Sequence[Delivery]) -> list[Rejected | None]:
        """A batch of records: validate each, curate all, store them in one transaction.

        The verdict list says which records were refused (they go to the DLQ alone); the rest
        are stored together with their event ids and outbox rows, so a crash before the offset
        commit redelivers them as duplicates with no second effect.
        """
        self._refresh_erased_tenants()
        verdicts: list[Rejected | None] = [None] * len(deliveries)
        valid: list[int] = []
        rules = self._config.rules
        erased = 0
        for index, delivery in enumerate(deliveries):
            record = delivery.envelope.data
            if self._is_erased(record.tenant, delivery.envelope.time):
                erased += 1  # applied: there is nothing to store
                continue
            violation = check_record(text=record.text, label=record.label, rules=rules)
            if violation is None:
                valid.append(index)
            else:
                verdicts[index] = Rejected(violation.reason.value, violation.detail, stage=VALIDATE_STAGE)
        self._metrics.records_in.labels("records").inc(len(deliveries))
        if erased:
            self._metrics.duplicates.labels(StoreOutcome.ERASED.value).inc(erased)
        inputs = [
            RecordInput(
                tenant=record.tenant,
                source=record.source,
                text=record.text,
                label=record.label,
                record_id=record.record_id,
                metadata=record.metadata,
                occurred_at=record.occurred_at,
            )
            for record in (deliveries[index].envelope.data for index in valid)
        ]
        curated = curate_batch(inputs, redact=self._redact)
        now = datetime.now(UTC)
        stamp = now.isoformat()
        rows = [
            CuratedRow(
                record_id=item.record_id,
                tenant=item.tenant,
                dedup_key=item.dedup_key,
                labelled=item.labelled,
                position=_position(deliveries[index].origin),
                feature_row=feature_row(item, now, stamp=stamp),
            )
            for index, item in zip(valid, curated, strict=True)
        ]
        with self._processed.transaction() as connection:
            outcomes = IngestionState.store_curated_many(connection, rows, ingested_at=now)
            self._processed.mark_processed_many([deliveries[index].envelope.id for index in valid])
        self._count_stored(curated, outcomes)
        return verdicts

    async def on_instructions(self, deliveries: Sequence[Delivery]) -> list[Rejected | None]:
        """A batch of instruction examples: checked, curated (every turn normalised and redacted),
        measured in tokens and stored in one transaction, as ``on_records`` does for records.

        Roles, blank or over-long turns and the declared format are checked on the example as
        submitted; the token count and the answer's format on the curated turns, since those are
        what is stored and trained on.
        """
        self._refresh_erased_tenants()
        verdicts: list[Rejected | None] = [None] * len(deliveries)
        rules = self._config.rules
        candidates: list[int] = []
        inputs: list[InstructionInput] = []
        for index, delivery in enumerate(deliveries):
            example: InstructionSubmitted = delivery.envelope.data
            if self._is_erased(example.tenant, delivery.envelope.time):
                self._metrics.duplicates.labels(StoreOutcome.ERASED.value).inc()
                continue
            answer_format = _answer_format(example)
            violation = check_turns(
                [turn.role for turn in example.messages], [turn.content for turn in example.messages], rules=rules
            ) or check_output_format(answer_format.labels, answer_format.json_schema)
            if violation is not None:
                verdicts[index] = _rejected(violation)
                continue
            candidates.append(index)
            inputs.append(
                InstructionInput(
                    tenant=example.tenant,
                    source=example.source,
                    turns=tuple(Turn(turn.role, turn.content) for turn in example.messages),
                    output_format=answer_format,
                    record_id=example.record_id,
                    metadata=example.metadata,
                    occurred_at=example.occurred_at,
                )
            )
        self._metrics.records_in.labels("instructions").inc(len(deliveries))
        if not candidates:
            return verdicts
        curated = curate_instructions(inputs, redact=self._redact)
        # Off the event loop: the first call loads the tokenizer (seconds), later ones take ~0.2 ms an example.
        token_counts = await asyncio.to_thread(self._tokens.count, [item.chat() for item in curated])
        now = datetime.now(UTC)
        stamp = now.isoformat()
        accepted: list[tuple[int, CuratedInstruction]] = []
        rows: list[CuratedRow] = []
        for index, item, tokens in zip(candidates, curated, token_counts, strict=True):
            fmt = item.output_format
            violation = check_token_count(tokens, rules=rules) or check_answer(
                item.answer, labels=fmt.labels, json_schema=fmt.json_schema
            )
            if violation is not None:
                verdicts[index] = _rejected(violation)
                continue
            accepted.append((index, item))
            rows.append(
                CuratedRow(
                    record_id=item.record_id,
                    tenant=item.tenant,
                    dedup_key=item.dedup_key,
                    labelled=True,
                    position=_position(deliveries[index].origin),
                    feature_row=instruction_feature_row(item, chat_tokens=tokens, ingested_at=now, stamp=stamp),
                    content=DatasetContent.INSTRUCTIONS.value,
                )
            )
        if not rows:
            return verdicts
        with self._processed.transaction() as connection:
            outcomes = IngestionState.store_curated_many(connection, rows, ingested_at=now)
            self._processed.mark_processed_many([deliveries[index].envelope.id for index, _ in accepted])
        self._count_stored([item for _, item in accepted], outcomes, content=DatasetContent.INSTRUCTIONS)
        return verdicts

    def _count_stored(
        self,
        curated: Sequence[CuratedRecord | CuratedInstruction],
        outcomes: Sequence[StoreOutcome],
        *,
        content: DatasetContent = DatasetContent.RECORDS,
        trigger_snapshot: bool = True,
    ) -> int:
        """Count the outcomes; returns how many labelled rows were accepted (and, unless
        ``trigger_snapshot`` is false, lets the count policy see them)."""
        duplicates: Counter[str] = Counter()
        accepted: Counter[bool] = Counter()
        redacted: Counter[PiiKind] = Counter()
        for item, outcome in zip(curated, outcomes, strict=True):
            if outcome is not StoreOutcome.ACCEPTED:
                duplicates[outcome.value] += 1
                continue
            accepted[item.labelled] += 1
            redacted.update(item.pii_counts)
        for kind_of_duplicate, count in duplicates.items():
            self._metrics.duplicates.labels(kind_of_duplicate).inc(count)
        if content is DatasetContent.INSTRUCTIONS:
            self._metrics.instructions_accepted.inc(accepted[True])
        else:
            for labelled, count in accepted.items():
                self._metrics.accepted.labels(str(labelled).lower()).inc(count)
        for kind, count in redacted.items():
            self._metrics.redacted.labels(kind.value).inc(count)
        if accepted[True] and trigger_snapshot:
            self._maybe_start_snapshot(new_labelled=accepted[True], content=content)
        return accepted[True]

    async def on_inference(self, envelope: Envelope[InferenceLogged]) -> None:
        """Remember a served request, or complete feedback that arrived before it."""
        logged = envelope.data
        self._refresh_erased_tenants()
        if self._is_erased(logged.tenant, envelope.time):
            return  # served before its tenant was erased: nothing of it may be kept
        if logged.generation is not None:
            await self._on_generation(envelope.id, logged)
            return
        # The gateway redacts already; redacting again is cheap and makes this service's
        # guarantee independent of every producer getting it right.
        served = ServedRequest(
            request_id=logged.request_id,
            tenant=logged.tenant,
            text=self._redact(logged.text).text,
            model_name=logged.model_name,
            model_version=logged.model_version,
            predicted_label=logged.label,
        )
        pending = self._state.pending_feedback(logged.request_id)
        if pending is None:
            with self._processed.transaction() as connection:
                IngestionState.remember_request(connection, served, received_at=datetime.now(UTC))
                # A rating parked in case this was a generation: it is not, and says nothing here.
                IngestionState.drop_pending_generation_feedback(connection, logged.request_id)
                self._processed.mark_processed(envelope.id)
            return
        self._curate_feedback(
            served, true_label=pending.true_label, position=pending.position, event_id=envelope.id, remember=True
        )

    async def on_feedback(self, envelope: Envelope[FeedbackSubmitted]) -> None:
        """Feedback with a true label turns its served request into a labelled record; a rating or a
        corrected answer for a generation joins it (``_join_generation``). Feedback for a request
        not seen yet waits for its log, in either or both halves of the join state."""
        feedback = envelope.data
        position = current_position()
        about_generation = feedback.rating is not None or feedback.corrected_answer is not None
        generation = self._state.served_generation(feedback.request_id) if about_generation else None
        if generation is not None:
            corrected = self._corrected_answer(feedback)
            await self._join_generation(
                generation.with_feedback(rating=feedback.rating, corrected_answer=corrected),
                event_id=envelope.id,
                position=position,
                from_feedback=True,
            )
            return
        if feedback.true_label is None:
            if self._state.served_request(feedback.request_id) is not None:
                return  # a rating of a classification says nothing about its label
            # Neither log seen yet: it may be a generation's, on its way.
            pending = PendingGenerationFeedback(
                feedback.request_id, feedback.rating, self._corrected_answer(feedback), position
            )
            with self._processed.transaction() as connection:
                IngestionState.park_generation_feedback(connection, pending, received_at=datetime.now(UTC))
                self._processed.mark_processed(envelope.id)
            return
        violation = check_label(feedback.true_label, rules=self._config.rules)
        if violation is not None:
            raise Rejected(violation.reason.value, violation.detail, stage=VALIDATE_STAGE)
        served = self._state.served_request(feedback.request_id)
        if served is None:  # the inference log has not arrived yet (another topic)
            corrected = self._corrected_answer(feedback) if about_generation else None
            with self._processed.transaction() as connection:
                IngestionState.park_feedback(
                    connection,
                    PendingFeedback(feedback.request_id, feedback.true_label, position),
                    received_at=datetime.now(UTC),
                )
                if about_generation:  # which half it belongs to shows when its log comes
                    IngestionState.park_generation_feedback(
                        connection,
                        PendingGenerationFeedback(feedback.request_id, feedback.rating, corrected, position),
                        received_at=datetime.now(UTC),
                    )
                self._processed.mark_processed(envelope.id)
            return
        self._curate_feedback(
            served, true_label=feedback.true_label, position=position, event_id=envelope.id, remember=False
        )

    def _curate_feedback(
        self, served: ServedRequest, *, true_label: str, position: Position, event_id: str, remember: bool
    ) -> None:
        derived = record_from_feedback(served, true_label=true_label)
        self._metrics.records_in.labels("feedback").inc()
        curated = curate(
            tenant=derived.tenant,
            source=derived.source,
            text=derived.text,
            label=derived.label,
            record_id=derived.record_id,
            metadata=derived.metadata,
            occurred_at=None,
            redact=self._redact,
        )
        self._store(curated, event_id=event_id, position=position, served=served if remember else None)

    # --- generations: corrected answers and preference pairs ---------------------------------

    async def _on_generation(self, event_id: str, logged: InferenceLogged) -> None:
        """Remember a generation (redacted again, as a classification's text is), joined with
        feedback that arrived before it."""
        assert logged.generation is not None
        turns = tuple(
            Turn(turn.role, self._redact(normalise_turn(turn.content)).text) for turn in logged.generation.messages
        )
        generation = ServedGeneration(
            request_id=logged.request_id,
            tenant=logged.tenant,
            model_name=logged.model_name,
            model_version=logged.model_version,
            prompt=prompt_of(turns),
            output=self._redact(normalise_turn(logged.generation.output)).text,
        )
        pending = self._state.pending_generation_feedback(logged.request_id)
        if pending is None:
            await self._join_generation(generation, event_id=event_id, position=current_position())
            return
        await self._join_generation(
            generation.with_feedback(rating=pending.rating, corrected_answer=pending.corrected_answer),
            event_id=event_id,
            position=pending.position,
        )

    def _corrected_answer(self, feedback: FeedbackSubmitted) -> str | None:
        """The feedback's corrected answer, normalised as a turn and redacted; ``Rejected`` when it
        breaks a turn's rules."""
        if feedback.corrected_answer is None:
            return None
        text = normalise_turn(feedback.corrected_answer)
        violation = check_corrected_answer(text, rules=self._config.rules)
        if violation is not None:
            raise _rejected(violation)
        return self._redact(text).text

    async def _join_generation(
        self, generation: ServedGeneration, *, event_id: str, position: Position, from_feedback: bool = False
    ) -> None:
        """Store the generation with the feedback it has, and what that feedback makes: the
        instruction example of a corrected answer and the preference pairs, in one transaction.

        A corrected answer that makes an invalid example (roles, tokens) refuses the feedback
        (``Rejected``: to the DLQ) when the feedback is the message being handled; when it was
        parked and the generation's log completes it, the log is valid and the feedback was already
        consumed, so the correction alone is dropped and counted (``corrections_refused``)."""
        example: CuratedInstruction | None = None
        tokens = 0
        if generation.corrected_answer is not None:
            example = curate_instructions([instruction_from_correction(generation)], redact=self._redact)[0]
            violation = check_turns(
                [turn.role for turn in example.turns],
                [turn.content for turn in example.turns],
                rules=self._config.rules,
            )
            if violation is None:
                tokens = (await asyncio.to_thread(self._tokens.count, [example.chat()]))[0]
                violation = check_token_count(tokens, rules=self._config.rules)
            if violation is not None:
                if from_feedback:
                    raise _rejected(violation)
                self._metrics.corrections_refused.labels(violation.reason.value).inc()
                logger.warning(
                    "a parked corrected answer makes an invalid instruction example; dropped",
                    extra={"request_id": generation.request_id, "reason": violation.reason.value},
                )
                generation, example = replace(generation, corrected_answer=None), None
        pairs = self._pairs_of(generation)
        now = datetime.now(UTC)
        outcomes: list[StoreOutcome] = []
        with self._processed.transaction() as connection:
            IngestionState.remember_generation(connection, generation, received_at=now)
            IngestionState.drop_pending_generation_feedback(connection, generation.request_id)
            if example is not None:
                row = CuratedRow(
                    record_id=example.record_id,
                    tenant=example.tenant,
                    dedup_key=example.dedup_key,
                    labelled=True,
                    position=position,
                    feature_row=instruction_feature_row(example, chat_tokens=tokens, ingested_at=now),
                    content=DatasetContent.INSTRUCTIONS.value,
                )
                outcomes = IngestionState.store_curated_many(connection, [row], ingested_at=now)
            new_pairs = IngestionState.store_pairs(connection, pairs, position=position, created_at=now)
            self._processed.mark_processed(event_id)
        accepted = 0
        if example is not None:
            self._metrics.records_in.labels("feedback").inc()
            accepted = self._count_stored(
                [example], outcomes, content=DatasetContent.INSTRUCTIONS, trigger_snapshot=False
            )
        for source, count in Counter(pair.source for pair in new_pairs).items():
            self._metrics.preference_pairs.labels(source).inc(count)
        if accepted or new_pairs:
            self._maybe_start_snapshot(new_labelled=accepted + len(new_pairs), content=DatasetContent.INSTRUCTIONS)

    def _pairs_of(self, generation: ServedGeneration) -> list[PreferencePair]:
        """The preference pairs a generation's feedback makes: its correction over its thumbs-down
        answer, and its answer against earlier differently rated answers to the same prompt."""
        pairs = [pair for pair in [correction_pair(generation)] if pair is not None]
        limit = self._config.max_rated_answers_per_prompt
        if generation.rating is not None and generation.prompt and limit > 0:
            others = self._state.rated_generations(
                tenant=generation.tenant, prompt_key=generation.prompt_key, exclude=generation.request_id, limit=limit
            )
            pairs.extend(pair for other in others if (pair := rating_pair(generation, other)) is not None)
        return pairs

    def _store(
        self, curated: CuratedRecord, *, event_id: str, position: Position, served: ServedRequest | None = None
    ) -> None:
        now = datetime.now(UTC)
        with self._processed.transaction() as connection:
            outcome = IngestionState.store_curated(
                connection,
                record_id=curated.record_id,
                tenant=curated.tenant,
                dedup_key=curated.dedup_key,
                labelled=curated.labelled,
                position=position,
                feature_row=feature_row(curated, now),
                ingested_at=now,
            )
            if served is not None:
                IngestionState.remember_request(connection, served, received_at=now)
                IngestionState.drop_pending_feedback(connection, served.request_id)
                IngestionState.drop_pending_generation_feedback(connection, served.request_id)
            self._processed.mark_processed(event_id)
        self._count_stored([curated], [outcome])

    # --- Feast ----------------------------------------------------------------------------

    async def push_pending(self) -> int:
        """Push every outboxed row to Feast; returns how many rows went."""
        pushed = 0
        async with self._push_lock:
            while batch := self._state.outbox(self._config.push_batch_size):
                records = [entry.row for entry in batch if entry.content != DatasetContent.INSTRUCTIONS]
                instructions = [entry.row for entry in batch if entry.content == DatasetContent.INSTRUCTIONS]
                if records:
                    await asyncio.to_thread(self._features.push, records)
                if instructions:
                    await asyncio.to_thread(self._features.push_instructions, instructions)
                self._state.mark_pushed([entry.seq for entry in batch])
                pushed += len(batch)
                self._metrics.pushed.inc(len(batch))
            self._metrics.outbox.set(0)
        return pushed

    async def run_pusher(self, interval_s: float) -> None:
        """Push the outbox every ``interval_s`` until cancelled; failures are retried next tick."""
        while True:
            try:
                await self.push_pending()
                self._state.prune_flywheel(older_than=self._config.flywheel_retention)
            except asyncio.CancelledError:
                raise
            except Exception:
                self._metrics.outbox.set(self._state.outbox_size())
                logger.exception("pushing curated records to Feast failed; retrying")
            await asyncio.sleep(interval_s)

    # --- erasure --------------------------------------------------------------------------

    def _refresh_erased_tenants(self) -> None:
        """Replicas sharing the state store (docs/scale-out.md): another one may have applied a
        tenant's erasure. One indexed count per batch; the (small) table is re-read when it moved."""
        count = self._state.tenant_erasure_count()
        if count != self._tenant_erasures_seen:
            self._erased_tenants = self._state.tenant_erasures()
            self._tenant_erasures_seen = count

    def _is_erased(self, tenant: str, submitted_at: datetime) -> bool:
        return bool(self._erased_tenants) and is_erased_tenant(self._erased_tenants, tenant, submitted_at)

    async def on_erasure(self, envelope: Envelope[ErasureRequested]) -> None:
        """Erase a tenant's (or a data subject's) curated records: from this service's store (the
        outbox included) and from Feast, online and offline; tombstones keep them from coming
        back; the erasure record names the snapshots and model versions that held them; the audit
        trail gets one event for the erasure and one per such version.

        Handled again (a crash before the offset commit), every step finds its earlier effect:
        the tombstones say which rows to remove from Feast again, the record and the audit events
        are written under the same names and ids.
        """
        request = envelope.data
        named = request.subject_record_ids
        subjects = None if named is None else curated_ids(request.tenant, named)
        erasure = Erasure(
            erasure_id=envelope.id,
            tenant=request.tenant,
            record_ids=subjects,
            requested_by=request.requested_by,
            reason=request.reason,
            requested_at=as_utc(request.requested_at),
        )
        erased_at = datetime.now(UTC)
        # The snapshot lock first (the order cut_snapshot takes them in): no cut reads rows that
        # are leaving, and no push sends a row to Feast while its copies there are removed.
        async with self._snapshot_lock, self._push_lock:
            with self._processed.transaction() as connection:
                IngestionState.erase(connection, erasure, erased_at=erased_at)
            if subjects is None:
                known = self._erased_tenants.get(request.tenant)
                self._erased_tenants[request.tenant] = max(erasure.requested_at, known or erasure.requested_at)
            removed = [entry for entry in self._state.erased_records(erasure.erasure_id) if entry.content is not None]
            ids = [entry.record_id for entry in removed]
            offline_rows = await asyncio.to_thread(
                self._features.erase, ids, tenant=request.tenant if subjects is None else None
            )
            self._outbox_changed()
        record = await asyncio.to_thread(self._record_erasure, erasure, erased_at, record_ids=ids)
        self._metrics.erasures.labels("tenant" if subjects is None else "subjects").inc()
        self._metrics.erased.inc(len(ids))
        await self._audit_erasure(record, feature_rows=offline_rows)
        self._processed.mark_processed(envelope.id)
        logger.info(
            "erasure applied",
            extra={
                "erasure_id": erasure.erasure_id,
                "tenant": request.tenant,
                "records": len(ids),
                "datasets": record.datasets,
                "model_versions": [f"{v.model}:{v.version}" for v in record.model_versions],
            },
        )

    def _outbox_changed(self) -> None:
        self._metrics.outbox.set(self._state.outbox_size())

    def _record_erasure(self, erasure: Erasure, erased_at: datetime, *, record_ids: Sequence[str]) -> ErasureRecord:
        """Find the snapshots holding an erased record and the versions trained on them; write the
        erasure record beside them (blocking: reads every snapshot's id column)."""
        if erasure.record_ids is None:
            datasets = snapshots_holding(SnapshotReader(self._artifacts), tenant=erasure.tenant, record_ids=None)
        else:
            # The ids the request named, whether or not they were curated: a snapshot may hold a
            # row this service's store no longer has (a rebuilt state).
            named = set(erasure.record_ids) | set(record_ids)
            datasets = snapshots_holding(SnapshotReader(self._artifacts), tenant=erasure.tenant, record_ids=named)
        record = ErasureRecord(
            erasure_id=erasure.erasure_id,
            tenant=erasure.tenant,
            subject_record_ids=None if erasure.record_ids is None else list(erasure.record_ids),
            requested_by=erasure.requested_by,
            reason=erasure.reason,
            requested_at=erasure.requested_at,
            erased_at=erased_at,
            erased_records=len(record_ids),
            datasets=datasets,
            model_versions=versions_trained_on(ModelRegistry(self._artifacts), datasets),
        )
        write_erasure(self._artifacts, record)
        return record

    async def _audit_erasure(self, record: ErasureRecord, *, feature_rows: int) -> None:
        """One ``audit.recorded`` for the erasure and one per model version trained on erased data
        (keyed by its model, so ``make audit MODEL=...`` shows it in the model's history); ids
        derived from the erasure's, so a second handling publishes duplicates readers skip."""
        principal = record.requested_by
        scope = "tenant" if record.subject_record_ids is None else f"{len(record.subject_record_ids)} record id(s)"
        details = {
            "erasure_id": record.erasure_id,
            "scope": scope,
            "records_erased": str(record.erased_records),
            "feature_rows_removed": str(feature_rows),
            "datasets": _cut(",".join(record.datasets)),
            "model_versions": _cut(",".join(f"{v.model}:{v.version}" for v in record.model_versions)),
            "record_uri": self._artifacts.uri(erasure_path(record.erasure_id)),
        }
        await self._events.publish(
            AuditRecorded(
                action=AuditAction.ERASURE,
                principal=principal,
                tenant=record.tenant,
                reason=record.reason or f"erasure of {scope} of tenant {record.tenant}",
                details=details,
            ),
            id=derived_id(record.erasure_id, AuditRecorded.event_type),
        )
        for version in record.model_versions:
            await self._events.publish(
                AuditRecorded(
                    action=AuditAction.ERASURE,
                    principal=principal,
                    model=version.model,
                    version=version.version,
                    tenant=record.tenant,
                    reason=(
                        f"trained on snapshot {version.dataset_id}, which holds records erased by {record.erasure_id}"
                    ),
                    details={
                        "erasure_id": record.erasure_id,
                        "dataset_id": version.dataset_id,
                        "trained_on_erased_data": "true",
                    },
                ),
                id=derived_id(record.erasure_id, f"{AuditRecorded.event_type}/{version.model}:{version.version}"),
            )

    # --- snapshots ------------------------------------------------------------------------

    def _maybe_start_snapshot(self, *, new_labelled: int = 1, content: DatasetContent = DatasetContent.RECORDS) -> None:
        every_n = (
            self._config.snapshot_every_n_instructions
            if content is DatasetContent.INSTRUCTIONS
            else self._config.snapshot_every_n_labelled
        )
        if every_n <= 0:
            return
        running = self._snapshot_tasks.get(content)
        if running is not None and not running.done():
            self._labelled_pending[content] = None  # recount once the running cut has recorded its range
            return
        # Counted in memory, read from SQLite only after a cut: a count(*) per record made
        # ingestion slower the more records it had seen.
        pending = self._labelled_pending[content]
        if pending is None:
            pending = self._state.labelled_since_last_snapshot(content.value)
        else:
            pending += new_labelled
        self._labelled_pending[content] = pending
        if should_snapshot(labelled_since_last=pending, every_n_labelled=every_n):
            self._labelled_pending[content] = None
            # In the background: a cut takes seconds and consumption should not wait for it.
            self._snapshot_tasks[content] = asyncio.get_running_loop().create_task(self._policy_snapshot(content))

    async def _policy_snapshot(self, content: DatasetContent) -> None:
        try:
            await self.cut_snapshot(trigger="policy", content=content)
        except Exception:
            logger.exception("policy snapshot failed; the next labelled record retries it", extra={"content": content})

    async def wait_for_snapshot(self) -> None:
        """Until the policy's running cuts (of either series) are done."""
        for task in list(self._snapshot_tasks.values()):
            await asyncio.shield(task)

    async def on_training_requested(self, envelope: Envelope[TrainingRequested]) -> None:
        """A retraining caused by drift or a quality drop, on "the latest snapshot", gets a fresh
        one: it must learn from the traffic that drifted, fed back as labelled records."""
        request = envelope.data
        if request.dataset_id is not None or request.reason not in _FRESH_DATA_REASONS:
            return
        # A causal LM learns from instruction examples, a classifier from records.
        content = DatasetContent.INSTRUCTIONS if request.task is TrainingTask.CAUSAL_LM else DatasetContent.RECORDS
        try:
            # Cut once per request: handled again (a crash before the offset was committed), it
            # finds this snapshot instead of cutting another, and announces it under the same id.
            event = await self.cut_snapshot(trigger="retraining", force=True, cause=envelope.id, content=content)
        except NothingToSnapshot:
            logger.warning("retraining requested but nothing was ever curated for it", extra={"content": content})
            return
        logger.info(
            "snapshot cut for a retraining request",
            extra={"dataset_id": event.dataset_id, "model_name": request.model_name, "reason": str(request.reason)},
        )

    async def cut_snapshot(
        self,
        *,
        trigger: str = "on_demand",
        force: bool = False,
        cause: str | None = None,
        content: DatasetContent = DatasetContent.RECORDS,
    ) -> DatasetSnapshotted:
        """Cut a snapshot of every labelled record (``content=INSTRUCTIONS``: every instruction
        example) curated so far and announce it.

        When nothing of the series arrived since its last snapshot, that snapshot is returned
        (unless ``force``: a retraining request gets a snapshot made after it, even if equal).
        ``cause``: the id of the event the snapshot is cut for; a snapshot cut for it before is
        returned (and announced, if it was not yet) instead of a new one.

        The cut is a span of the trace of what set it off (the batch of records that crossed the
        count policy's threshold, a retraining request), so the ``dataset.snapshotted`` event, and
        the training, evaluation and deployment after it, carry that trace on.
        """
        with triggered_span(
            "dataset snapshot", attributes={"llmops.dataset.content": content.value, "llmops.snapshot.trigger": trigger}
        ):
            event = await self._cut_snapshot(trigger=trigger, force=force, cause=cause, content=content)
            annotate({"llmops.dataset.id": event.dataset_id, "llmops.dataset.rows": event.row_count})
            return event

    async def _cut_snapshot(
        self, *, trigger: str, force: bool, cause: str | None, content: DatasetContent
    ) -> DatasetSnapshotted:
        async with self._snapshot_lock:
            await self.publish_pending_snapshots()
            if cause is not None and (earlier := self._state.snapshot_caused_by(cause)) is not None:
                return DatasetSnapshotted.model_validate_json(earlier)
            last = self._state.last_snapshot(content.value)
            if not force and last is not None and self._state.labelled_since_last_snapshot(content.value) == 0:
                previous = DatasetSnapshotted.model_validate_json(last)
                # Nothing new: the same records would make the same dataset, so it is the answer,
                # unless an erasure removed some of them since (then it holds erased rows).
                if not self._state.erased_since(previous.created_at.isoformat(), content.value):
                    return previous
            await self.push_pending()  # everything curated so far must be in the offline store
            up_to_seq = self._state.max_seq()
            members = self._state.labelled_members(up_to_seq=up_to_seq, content=content.value)
            # Preference pairs travel with the instruction examples (never with records).
            up_to_pair = self._state.max_pair_seq() if content is DatasetContent.INSTRUCTIONS else 0
            stored_pairs = self._state.pairs(up_to_seq=up_to_pair) if up_to_pair else []
            if not members and not stored_pairs:
                what = "instruction example" if content is DatasetContent.INSTRUCTIONS else "labelled record"
                raise NothingToSnapshot(f"no {what} has been curated yet")
            view = _VIEWS[content]
            historical = (
                self._features.historical_instructions
                if content is DatasetContent.INSTRUCTIONS
                else self._features.historical
            )
            as_of = datetime.now(UTC)
            if members:
                # Holding the push lock: the file offline store rewrites its Parquet file in place,
                # so a push during the read could be seen half-written.
                async with self._push_lock:
                    frame = await asyncio.to_thread(historical, [m.record_id for m in members], as_of=as_of)
                missing = int(frame["text"].isna().sum())
                if missing:
                    raise RuntimeError(f"{missing} curated rows are missing from the offline store ({view.name})")
                frame = frame.drop(columns=[TIMESTAMP_FIELD]).sort_values(ENTITY).reset_index(drop=True)
                for name in view.int_features:  # the join returns them as floats (NaN-able); every row matched
                    frame[name] = frame[name].astype("int64")
            else:  # pairs from ratings alone, no instruction example yet
                frame = pd.DataFrame({column: pd.Series([], dtype=object) for column in content_columns(content)})
            ratios = self._config.split_ratios
            frame["split"] = [split_of(record_id, ratios).value for record_id in frame[ENTITY]]
            # Where each row was read: lineage down to the message (the manifest has the ranges).
            read_at = {member.record_id: member.position for member in members}
            source_topic, source_partition, source_offset = POSITION_COLUMNS
            frame[source_topic] = pd.Series([read_at[r].topic for r in frame[ENTITY]], index=frame.index, dtype=object)
            frame[source_partition] = pd.Series(
                [read_at[r].partition for r in frame[ENTITY]], index=frame.index, dtype="int64"
            )
            frame[source_offset] = pd.Series(
                [read_at[r].offset for r in frame[ENTITY]], index=frame.index, dtype="int64"
            )
            rows = frame[list(content_columns(content))].to_dict("records")
            pair_rows = [
                {
                    "pair_id": stored.pair.pair_id,
                    "messages_json": stored.pair.messages_json,
                    "chosen": stored.pair.chosen,
                    "rejected": stored.pair.rejected,
                    "source": stored.pair.source,
                    "split": split_of(stored.pair.split_key, ratios).value,
                }
                for stored in stored_pairs
            ]
            preferences = pd.DataFrame(pair_rows, columns=list(PREFERENCE_COLUMNS)) if pair_rows else None
            created_at = datetime.now(UTC)
            manifest_without_id = build_manifest(
                dataset_id="",
                rows=rows,
                lineage=[],
                files={},
                feature_view="",
                as_of=as_of,
                created_at=created_at,
                content=content,
                preferences=pair_rows,
            )
            dataset_id = dataset_id_for(
                name=self._config.dataset_name,
                created_at=created_at,
                content_hash=manifest_without_id.content_hash,
                content=content,
            )
            manifest = build_manifest(
                dataset_id=dataset_id,
                rows=rows,
                lineage=lineage_ranges([*(m.position for m in members), *(p.position for p in stored_pairs)]),
                files=split_files(),
                feature_view=view.name,
                as_of=as_of,
                created_at=created_at,
                content=content,
                preferences=pair_rows,
            )
            uri, manifest_uri = await asyncio.to_thread(
                publish_snapshot, self._artifacts, frame=frame, manifest=manifest, preferences=preferences
            )
            event = DatasetSnapshotted(
                dataset_id=dataset_id,
                uri=uri,
                manifest_uri=manifest_uri,
                row_count=manifest.row_count,
                content_hash=manifest.content_hash,
                label_counts=manifest.label_counts,
                split_counts=manifest.split_counts,
                lineage=manifest.lineage,
                created_at=created_at,
                content=content,
            )
            # Recorded before publishing, so a crash in between re-publishes on the next start.
            self._state.record_snapshot(
                dataset_id=dataset_id,
                max_seq=up_to_seq,
                created_at=created_at,
                event_json=event.model_dump_json(),
                cause=cause,
                content=content.value,
                max_pair_seq=up_to_pair,
            )
            await self._events.publish(event, id=snapshot_event_id(dataset_id))
            self._state.mark_snapshot_published(dataset_id)
            self._metrics.snapshots.labels(trigger).inc()
            logger.info(
                "dataset snapshot cut",
                extra={"dataset_id": dataset_id, "rows": manifest.row_count, "trigger": trigger, "content": content},
            )
            return event

    async def publish_pending_snapshots(self) -> None:
        """Announce snapshots that were written but whose event did not go out (crash)."""
        for dataset_id, event_json in self._state.unpublished_snapshots():
            # The same id as the first try: if that one reached the broker, consumers skip this copy.
            await self._events.publish(
                DatasetSnapshotted.model_validate_json(event_json), id=snapshot_event_id(dataset_id)
            )
            self._state.mark_snapshot_published(dataset_id)


def snapshot_event_id(dataset_id: str) -> str:
    """The id of a snapshot's ``dataset.snapshotted`` event, however often it is published: derived
    from the dataset id (a retraining request's snapshot is cut once per request, see ``cut_snapshot``)."""
    return derived_id(dataset_id, DatasetSnapshotted.event_type)


def feature_row(curated: CuratedRecord, ingested_at: datetime, *, stamp: str | None = None) -> dict[str, Any]:
    """The Feast row of a curated record (JSON-serialisable: it waits in the outbox), less the
    descriptors, which the Feast store adds when it writes the row (``describe_many``).
    ``stamp``: ``ingested_at.isoformat()``, when the caller has it for a whole batch."""
    stamp = stamp or ingested_at.isoformat()
    row: dict[str, Any] = {
        ENTITY: curated.record_id,
        "tenant": curated.tenant,
        "source": curated.source,
        "text": curated.text,
        "label": curated.label,
        "metadata_json": json.dumps(dict(curated.metadata), sort_keys=True, ensure_ascii=False),
        "occurred_at": curated.occurred_at.isoformat() if curated.occurred_at else None,
        TIMESTAMP_FIELD: stamp,
        CREATED_FIELD: stamp,
    }
    counts = curated.pii_counts
    for kind, column in _PII_COLUMNS:
        row[column] = counts.get(kind, 0)
    return row


def instruction_feature_row(
    curated: CuratedInstruction, *, chat_tokens: int, ingested_at: datetime, stamp: str | None = None
) -> dict[str, Any]:
    """The Feast row of a curated instruction example (feature view ``curated_instructions``), less
    the descriptors of its ``text`` (the last user turn), which the Feast store adds."""
    stamp = stamp or ingested_at.isoformat()
    row: dict[str, Any] = {
        ENTITY: curated.record_id,
        "tenant": curated.tenant,
        "source": curated.source,
        "text": curated.prompt,
        "label": curated.answer,
        "messages_json": curated.messages_json,
        "output_format_json": curated.output_format.to_json(),
        "metadata_json": json.dumps(dict(curated.metadata), sort_keys=True, ensure_ascii=False),
        "occurred_at": curated.occurred_at.isoformat() if curated.occurred_at else None,
        "turn_count": len(curated.turns),
        "chat_tokens": chat_tokens,
        TIMESTAMP_FIELD: stamp,
        CREATED_FIELD: stamp,
    }
    counts = curated.pii_counts
    for kind, column in _PII_COLUMNS:
        row[column] = counts.get(kind, 0)
    return row


def _answer_format(example: InstructionSubmitted) -> AnswerFormat:
    declared = example.output_format
    if declared is None:
        return AnswerFormat()
    return AnswerFormat(
        labels=tuple(declared.labels) if declared.labels is not None else None, json_schema=declared.json_schema
    )


def _cut(text: str, limit: int = AUDIT_DETAIL_LIMIT) -> str:
    return text if len(text) <= limit else text[: limit - 1] + "…"


def _rejected(violation: RuleViolation) -> Rejected:
    return Rejected(violation.reason.value, violation.detail, stage=VALIDATE_STAGE)


_PII_COLUMNS = tuple((kind, f"pii_{kind.value}") for kind in PiiKind)


def _position(origin: Origin) -> Position:
    return Position(origin.topic, origin.partition, origin.offset)
