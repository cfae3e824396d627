"""Instruction examples through the service, less Kafka and Feast: verdicts per example, de-duplication,
and their own snapshot series (rows, manifest, hash, id, event), never mixed with records."""

from __future__ import annotations

import dataclasses
import json
from collections.abc import Callable, Mapping, Sequence
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pandas as pd
import pytest

from llmops_events import Envelope
from llmops_events.topics import RECORDS_RAW
from llmops_events.v1 import DatasetContent, InstructionSubmitted, RecordSubmitted, TrainingRequested
from llmops_features import ENTITY, INSTRUCTIONS_VIEW, RECORDS_VIEW, TIMESTAMP_FIELD
from llmops_ingestion.adapters.feast_store import with_descriptors
from llmops_ingestion.adapters.metrics import IngestionMetrics
from llmops_ingestion.adapters.state import IngestionState
from llmops_ingestion.domain.snapshot import INSTRUCTION_CONTENT_COLUMNS, SplitRatios, content_hash
from llmops_ingestion.domain.validation import ValidationRules
from llmops_ingestion.errors import NothingToSnapshot
from llmops_ingestion.handlers import CurationConfig, IngestionService
from llmops_messaging import Delivery, Origin, ProcessedEvents
from llmops_models.snapshots import INSTRUCTIONS, RECORDS, SnapshotReader
from llmops_privacy.redaction import Redactor
from llmops_storage import open_store

OpenProcessed = Callable[[], ProcessedEvents]
"""The ``open_processed`` fixture (conftest.py): each test runs on SQLite, then on PostgreSQL."""


class MemoryFeatures:
    """Both feature views in memory: what was pushed is what the point-in-time join returns."""

    def __init__(self) -> None:
        self.views: dict[str, dict[str, dict[str, Any]]] = {RECORDS_VIEW.name: {}, INSTRUCTIONS_VIEW.name: {}}

    def push(self, rows: Sequence[dict[str, Any]]) -> None:
        self._push(RECORDS_VIEW.name, rows)

    def push_instructions(self, rows: Sequence[dict[str, Any]]) -> None:
        self._push(INSTRUCTIONS_VIEW.name, rows)

    def _push(self, view: str, rows: Sequence[dict[str, Any]]) -> None:
        for row in with_descriptors(rows, detect_languages=None):
            self.views[view][row[ENTITY]] = dict(row)

    def historical(self, record_ids: Sequence[str], *, as_of: datetime) -> Any:
        return self._historical(RECORDS_VIEW.name, record_ids)

    def historical_instructions(self, record_ids: Sequence[str], *, as_of: datetime) -> Any:
        return self._historical(INSTRUCTIONS_VIEW.name, record_ids)

    def _historical(self, view: str, record_ids: Sequence[str]) -> Any:
        return pd.DataFrame([self.views[view][record_id] for record_id in record_ids])


class RecordingSink:
    def __init__(self) -> None:
        self.sent: list[Envelope[Any]] = []

    async def publish(self, data: Any, *, id: str | None = None) -> Envelope[Any]:
        envelope = Envelope.wrap(data, source="/llmops/ingestion", id=id)
        self.sent.append(envelope)
        return envelope


class WordTokens:
    """Counts words, plus 4 per turn (the chat template's markers): enough to test the limit."""

    def __init__(self) -> None:
        self.chats: list[list[dict[str, str]]] = []

    def count(self, chats: Sequence[Sequence[Mapping[str, str]]]) -> list[int]:
        self.chats.extend([dict(turn) for turn in chat] for chat in chats)
        return [sum(4 + len(turn["content"].split()) for turn in chat) for chat in chats]


@pytest.fixture(scope="module")
def redactor() -> Redactor:
    return Redactor(phone_regions=["US", "GB"], detect_names=True)


@pytest.fixture
def service(tmp_path: Path, redactor: Redactor, open_processed: OpenProcessed) -> IngestionService:
    processed = open_processed()
    return IngestionService(
        config=CurationConfig(
            rules=ValidationRules(max_text_length=200, max_instruction_tokens=60),
            split_ratios=SplitRatios(),
            snapshot_every_n_labelled=0,
            dataset_name="banking",
            push_batch_size=100,
            flywheel_retention=timedelta(days=3),
        ),
        redact=redactor.redact,
        processed=processed,
        state=IngestionState(processed),
        features=MemoryFeatures(),
        artifacts=open_store(str(tmp_path / "artifacts")),
        events=RecordingSink(),
        metrics=IngestionMetrics(),
        tokens=WordTokens(),
    )


def _deliveries(*events: Any) -> list[Delivery]:
    return [
        Delivery(Envelope.wrap(event, source="/test"), Origin(RECORDS_RAW, 2, 100 + offset, "ingestion"))
        for offset, event in enumerate(events)
    ]


def _example(*turns: tuple[str, str], **fields: Any) -> InstructionSubmitted:
    return InstructionSubmitted(
        tenant="acme",
        source="playbook",
        messages=[{"role": role, "content": content} for role, content in turns],
        **fields,
    )


VALID = _example(
    ("system", "You are the support bot; escalate to lead.agent@example.com."),
    ("user", "Hi, I am Ann."),
    ("assistant", "Hello, how can I help?"),
    ("user", "My name is Ann Lee and my card never came, call +44 20 7946 0958."),
    ("assistant", "card_arrival"),
    output_format={"labels": ["card_arrival", "lost_card"]},
    record_id="pb-1",
)
JSON_ANSWER = _example(
    ("user", "Classify: I lost my card"),
    ("assistant", '{"intent": "lost_card"}'),
    output_format={"json_schema": {"type": "object", "required": ["intent"]}},
)
FREE_TEXT = _example(("user", "How do I freeze my card?"), ("assistant", "Open the app, then Cards, then Freeze."))


async def test_each_bad_example_gets_its_reason_and_the_good_ones_are_stored(service: IngestionService) -> None:
    bad = {
        "invalid_turns": _example(("assistant", "hello"), ("user", "hi")),
        "empty_text": _example(("user", "   "), ("assistant", "ok")),
        "text_too_long": _example(("user", "x" * 201), ("assistant", "ok")),
        "too_many_tokens": _example(("user", "w " * 60), ("assistant", "ok")),
        "invalid_output_format": _example(("user", "hi"), ("assistant", "a"), output_format={"labels": ["a", "a"]}),
        "invalid_answer_format": _example(
            ("user", "Classify: my card is gone"), ("assistant", "refund"), output_format={"labels": ["lost_card"]}
        ),
        "json not parsing": _example(
            ("user", "Classify it"), ("assistant", "lost_card"), output_format={"json_schema": {"type": "object"}}
        ),
    }
    verdicts = await service.on_instructions(_deliveries(VALID, *bad.values(), JSON_ANSWER, FREE_TEXT))
    assert verdicts[0] is None and verdicts[-2:] == [None, None]
    reasons = [verdict.reason if verdict else None for verdict in verdicts[1:-2]]
    assert reasons == [*list(bad)[:-1], "invalid_answer_format"]
    assert all(verdict.stage == "validate" for verdict in verdicts[1:-2] if verdict)
    assert service._state.labelled_since_last_snapshot(INSTRUCTIONS) == 3
    assert service._state.labelled_since_last_snapshot(RECORDS) == 0
    # The tokenizer measured the redacted chats, never the raw ones.
    assert not any("Ann Lee" in turn["content"] for chat in service._tokens.chats for turn in chat)  # type: ignore[attr-defined]


async def test_the_same_example_again_is_a_duplicate(service: IngestionService) -> None:
    await service.on_instructions(_deliveries(FREE_TEXT))
    # The same chat resubmitted (another event): the same id, derived from the turns.
    again = _example(*[(m.role, m.content) for m in FREE_TEXT.messages])
    # The same chat under an id of its own, spaced and cased otherwise: the same normalised turns.
    renamed = _example(*[(m.role, f"  {m.content.upper()} ") for m in FREE_TEXT.messages], record_id="pb-9")
    same_id = _example(("user", "Something else"), ("assistant", "Else."), record_id="pb-1")
    await service.on_instructions(_deliveries(VALID, again, renamed, same_id))
    assert service._state.labelled_since_last_snapshot(INSTRUCTIONS) == 2
    assert service._metrics.duplicates.labels("duplicate_text")._value.get() == 1
    assert service._metrics.duplicates.labels("duplicate_record_id")._value.get() == 2
    assert service._metrics.instructions_accepted._value.get() == 2


async def test_instruction_examples_have_their_own_snapshot_series(service: IngestionService, tmp_path: Path) -> None:
    await service.on_records(
        _deliveries(RecordSubmitted(tenant="acme", source="crm", text="Where is my card?", label="card_arrival"))
    )
    await service.on_instructions(_deliveries(VALID, JSON_ANSWER, FREE_TEXT))
    records = await service.cut_snapshot()
    event = await service.cut_snapshot(content=DatasetContent.INSTRUCTIONS)

    assert records.content is DatasetContent.RECORDS and records.row_count == 1
    assert event.content is DatasetContent.INSTRUCTIONS and event.row_count == 3
    assert event.dataset_id.startswith("banking-instructions-") and not records.dataset_id.startswith("banking-instr")
    assert event.label_counts == {} and sum(event.split_counts.values()) == 3
    assert [(r.topic, r.partition, r.start, r.end) for r in event.lineage] == [(RECORDS_RAW, 2, 100, 103)]

    reader = SnapshotReader(open_store(str(tmp_path / "artifacts")))
    assert reader.latest_dataset_id() == records.dataset_id  # the classifier's default is unchanged
    assert reader.latest_dataset_id(INSTRUCTIONS) == event.dataset_id
    manifest = reader.manifest(event.dataset_id)
    assert manifest["content"] == "instructions" and reader.manifest(records.dataset_id)["content"] == "records"
    assert manifest["content_columns"] == list(INSTRUCTION_CONTENT_COLUMNS)
    assert manifest["feature_view"] == "curated_instructions"
    frame = reader.frame(event.dataset_id)
    assert frame["record_id"].is_unique and len(frame) == 3
    rehashed = content_hash(frame.to_dict("records"), manifest["content_columns"])
    assert manifest["content_hash"] == event.content_hash == rehashed
    assert not set(frame["record_id"]) & set(reader.frame(records.dataset_id)["record_id"])

    row = frame.set_index("record_id").loc["acme/pb-1"]
    messages = json.loads(row["messages_json"])
    assert [m["role"] for m in messages] == ["system", "user", "assistant", "user", "assistant"]
    assert messages[0]["content"] == "You are the support bot; escalate to <EMAIL>."
    assert row["text"] == "My name is <PERSON> and my card never came, call <PHONE>." == messages[3]["content"]
    assert row["label"] == "card_arrival" == messages[-1]["content"]
    assert json.loads(row["output_format_json"]) == {"labels": ["card_arrival", "lost_card"], "json_schema": None}
    assert (row["turn_count"], row["pii_email"], row["pii_person"], row["pii_phone"]) == (5, 1, 1, 1)
    assert row["chat_tokens"] == sum(4 + len(m["content"].split()) for m in messages)
    free = frame[frame["label"] == "Open the app, then Cards, then Freeze."].iloc[0]
    assert free["output_format_json"] == "" and free["record_id"].startswith("acme/i-")
    assert "lead.agent" not in frame.to_json() and "7946" not in frame.to_json()

    # Nothing new in either series: asking again returns the same snapshots.
    assert (await service.cut_snapshot(content=DatasetContent.INSTRUCTIONS)).dataset_id == event.dataset_id
    assert (await service.cut_snapshot()).dataset_id == records.dataset_id
    sent = [envelope.data for envelope in service._events.sent]  # type: ignore[attr-defined]
    assert [(e.dataset_id, e.content) for e in sent] == [
        (records.dataset_id, DatasetContent.RECORDS),
        (event.dataset_id, DatasetContent.INSTRUCTIONS),
    ]


async def test_a_series_with_nothing_curated_has_no_snapshot(service: IngestionService) -> None:
    await service.on_instructions(_deliveries(FREE_TEXT))
    with pytest.raises(NothingToSnapshot, match="labelled record"):
        await service.cut_snapshot()
    await service.on_records(_deliveries(RecordSubmitted(tenant="acme", source="crm", text="hi", label="a")))
    with pytest.raises(NothingToSnapshot, match="instruction example"):
        await IngestionService.cut_snapshot(_fresh(service), content=DatasetContent.INSTRUCTIONS)


def _fresh(service: IngestionService) -> IngestionService:
    """The same service with the instruction examples forgotten."""
    service._processed.sql.execute("DELETE FROM curated WHERE content = 'instructions'")
    return service


async def test_the_count_policy_of_each_series_is_its_own(service: IngestionService) -> None:
    service._config = dataclasses.replace(
        service._config, snapshot_every_n_labelled=100, snapshot_every_n_instructions=2
    )
    await service.on_instructions(_deliveries(VALID))
    await service.wait_for_snapshot()
    assert not service._events.sent  # type: ignore[attr-defined]
    await service.on_instructions(_deliveries(FREE_TEXT))
    await service.wait_for_snapshot()
    (event,) = [envelope.data for envelope in service._events.sent]  # type: ignore[attr-defined]
    assert event.content is DatasetContent.INSTRUCTIONS and event.row_count == 2
    assert service._metrics.snapshots.labels("policy")._value.get() == 1


async def test_a_causal_lm_retraining_request_gets_a_fresh_instructions_snapshot(service: IngestionService) -> None:
    await service.on_records(_deliveries(RecordSubmitted(tenant="acme", source="crm", text="hi", label="a")))
    await service.on_instructions(_deliveries(FREE_TEXT))
    request = TrainingRequested(model_name="assistant", reason="drift", task="causal-lm")
    await service.on_training_requested(Envelope.wrap(request, source="/llmops/monitoring"))
    (event,) = [envelope.data for envelope in service._events.sent]  # type: ignore[attr-defined]
    assert event.content is DatasetContent.INSTRUCTIONS and event.row_count == 1


def test_the_instruction_rows_carry_every_column_the_view_declares() -> None:
    from llmops_ingestion.domain.instructions import AnswerFormat, CuratedInstruction, Turn
    from llmops_ingestion.handlers import instruction_feature_row

    curated = CuratedInstruction(
        record_id="acme/x",
        tenant="acme",
        source="s",
        turns=(Turn("user", "q"), Turn("assistant", "a")),
        output_format=AnswerFormat(labels=("a",)),
        dedup_key="k",
    )
    row = with_descriptors(
        [instruction_feature_row(curated, chat_tokens=9, ingested_at=datetime.now(UTC))], detect_languages=None
    )[0]
    assert set(row) == {ENTITY, *INSTRUCTIONS_VIEW.features, TIMESTAMP_FIELD, "created"}
