"""Feedback on generations through the service's consumer, less Kafka and Feast: a corrected answer
becomes an instruction example and (with a thumbs-down) a preference pair, two rated answers a pair;
feedback before its log, twice, or for an unknown request loses and duplicates nothing; a correction
that makes an invalid example is refused with its reason."""

from __future__ import annotations

import json
from collections.abc import Callable, Mapping, Sequence
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pandas as pd
import pytest

from llmops_events import Envelope, KafkaRecord, encode
from llmops_events.topics import FEEDBACK, INFERENCE
from llmops_events.v1 import ChatTurn, DatasetContent, FeedbackSubmitted, Generation, InferenceLogged
from llmops_features import ENTITY, INSTRUCTIONS_VIEW, RECORDS_VIEW
from llmops_ingestion.adapters.feast_store import with_descriptors
from llmops_ingestion.adapters.metrics import IngestionMetrics
from llmops_ingestion.adapters.state import IngestionState
from llmops_ingestion.domain.snapshot import SplitRatios, content_hash
from llmops_ingestion.domain.validation import ValidationRules
from llmops_ingestion.handlers import CurationConfig, IngestionService
from llmops_messaging import DeadLetterQueue, EventConsumer, Origin, Outcome, ProcessedEvents
from llmops_models.snapshots import PREFERENCE_COLUMNS, SnapshotReader
from llmops_privacy.redaction import Redactor
from llmops_storage import open_store

OpenProcessed = Callable[[], ProcessedEvents]
"""The ``open_processed`` fixture (conftest.py): each test runs on SQLite, then on PostgreSQL."""

QUESTION = "How do I freeze my card? Mail me at ann.lee@example.com"
CORRECTION = "Open the app, choose Cards, then Freeze."


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
        return pd.DataFrame([self.views[RECORDS_VIEW.name][record_id] for record_id in record_ids])

    def historical_instructions(self, record_ids: Sequence[str], *, as_of: datetime) -> Any:
        return pd.DataFrame([self.views[INSTRUCTIONS_VIEW.name][record_id] for record_id in record_ids])


class RecordingSink:
    def __init__(self) -> None:
        self.sent: list[Envelope[Any]] = []

    async def publish(self, data: Any, *, id: str | None = None) -> Envelope[Any]:
        envelope = Envelope.wrap(data, source="/llmops/ingestion", id=id)
        self.sent.append(envelope)
        return envelope


class WordTokens:
    """Counts words, plus 4 per turn (the chat template's markers)."""

    def count(self, chats: Sequence[Sequence[Mapping[str, str]]]) -> list[int]:
        return [sum(4 + len(turn["content"].split()) for turn in chat) for chat in chats]


class RecordingDeadLetters(DeadLetterQueue):
    def __init__(self) -> None:
        self.letters: list[tuple[bytes | None, str, str]] = []

    async def send(self, record: KafkaRecord, *, origin: Origin, stage: str, reason: str, detail: str) -> None:
        self.letters.append((record.key, reason, detail))


class Flywheel:
    """The service behind its real consumer (event-id de-duplication, DLQ verdicts)."""

    def __init__(self, tmp_path: Path, redactor: Redactor, processed: ProcessedEvents) -> None:
        self.processed = processed
        self.features = MemoryFeatures()
        self.service = IngestionService(
            config=CurationConfig(
                rules=ValidationRules(max_text_length=200, max_instruction_tokens=40),
                split_ratios=SplitRatios(),
                snapshot_every_n_labelled=0,
                dataset_name="support",
                push_batch_size=100,
                flywheel_retention=timedelta(days=3),
                max_rated_answers_per_prompt=4,
            ),
            redact=redactor.redact,
            processed=self.processed,
            state=IngestionState(self.processed),
            features=self.features,
            artifacts=open_store(str(tmp_path / "artifacts")),
            events=RecordingSink(),
            metrics=IngestionMetrics(),
            tokens=WordTokens(),
        )
        self.dlq = RecordingDeadLetters()
        self.consumer = EventConsumer(
            group_id="ingestion",
            handlers={InferenceLogged: self.service.on_inference, FeedbackSubmitted: self.service.on_feedback},
            dlq=self.dlq,
            processed=self.processed,
        )
        self.offset = 0
        self.reader = SnapshotReader(open_store(str(tmp_path / "artifacts")))

    async def deliver(self, event: Any, *, envelope: Envelope[Any] | None = None) -> Outcome:
        envelope = envelope or Envelope.wrap(event, source="/test")
        self.offset += 1
        topic = INFERENCE if isinstance(envelope.data, InferenceLogged) else FEEDBACK
        return await self.consumer.process(encode(envelope), Origin(topic, 0, self.offset, "ingestion"))

    def examples(self) -> dict[str, dict[str, Any]]:
        return self.features.views[INSTRUCTIONS_VIEW.name]

    async def snapshot(self) -> tuple[pd.DataFrame, pd.DataFrame, dict[str, Any]]:
        event = await self.service.cut_snapshot(content=DatasetContent.INSTRUCTIONS)
        dataset_id = event.dataset_id
        return self.reader.frame(dataset_id), self.reader.preferences(dataset_id), self.reader.manifest(dataset_id)

    def pair_count(self) -> int:
        return len(self.service._state.pairs(up_to_seq=self.service._state.max_pair_seq()))


@pytest.fixture(scope="module")
def redactor() -> Redactor:
    return Redactor(phone_regions=["US", "GB"], detect_names=True)


@pytest.fixture
def flywheel(tmp_path: Path, redactor: Redactor, open_processed: OpenProcessed) -> Flywheel:
    return Flywheel(tmp_path, redactor, open_processed())


def _generation(request_id: str, output: str = "Call the branch.", question: str = QUESTION) -> InferenceLogged:
    return InferenceLogged(
        request_id=request_id,
        tenant="acme",
        model_name="support-bot",
        model_version=1,
        text=question,
        label="",
        confidence=0.0,
        latency_ms=500.0,
        served_at=datetime.now(UTC),
        generation=Generation(
            messages=[ChatTurn(role="system", content="Be brief."), ChatTurn(role="user", content=question)],
            output=output,
            finish_reason="stop",
            prompt_tokens=20,
            completion_tokens=4,
        ),
    )


async def test_a_thumbs_down_with_a_correction_makes_an_example_and_a_pair_once(flywheel: Flywheel) -> None:
    assert await flywheel.deliver(_generation("req-1")) is Outcome.HANDLED
    feedback = Envelope.wrap(FeedbackSubmitted(request_id="req-1", rating=1, corrected_answer=CORRECTION), source="/t")
    assert await flywheel.deliver(None, envelope=feedback) is Outcome.HANDLED
    assert await flywheel.deliver(None, envelope=feedback) is Outcome.DUPLICATE  # redelivered
    # The same feedback sent again (a new event): the same example id, the same pair id.
    again = FeedbackSubmitted(request_id="req-1", rating=2, corrected_answer="Something else entirely.")
    assert await flywheel.deliver(again) is Outcome.HANDLED
    await flywheel.service.push_pending()
    assert list(flywheel.examples()) == ["acme/feedback-req-1"] and flywheel.pair_count() == 1
    assert not flywheel.dlq.letters

    frame, pairs, manifest = await flywheel.snapshot()
    row = frame.set_index("record_id").loc["acme/feedback-req-1"]
    messages = json.loads(row["messages_json"])
    assert row["source"] == "feedback" and row["label"] == CORRECTION == messages[-1]["content"]
    assert messages[:-1] == [
        {"role": "system", "content": "Be brief."},
        {"role": "user", "content": "How do I freeze my card? Mail me at <EMAIL>"},
    ]
    assert list(pairs.columns) == list(PREFERENCE_COLUMNS) and len(pairs) == 1
    pair = pairs.iloc[0]
    assert (pair["pair_id"], pair["chosen"], pair["rejected"], pair["source"]) == (
        "acme/correction-req-1",
        CORRECTION,
        "Call the branch.",
        "correction",
    )
    assert json.loads(pair["messages_json"]) == messages[:-1] and pair["split"] == row["split"]
    assert manifest["preference_counts"] == {pair["split"]: 1}
    rehashed = content_hash(frame.to_dict("records"), manifest["content_columns"], preferences=pairs.to_dict("records"))
    assert manifest["content_hash"] == rehashed
    assert "ann.lee" not in frame.to_json() + pairs.to_json()
    assert flywheel.service._metrics.preference_pairs.labels("correction")._value.get() == 1


async def test_feedback_before_its_log_waits_for_it(flywheel: Flywheel) -> None:
    await flywheel.deliver(FeedbackSubmitted(request_id="req-2", rating=2))
    await flywheel.deliver(FeedbackSubmitted(request_id="req-2", corrected_answer=CORRECTION))
    assert not flywheel.examples() and flywheel.pair_count() == 0
    assert await flywheel.deliver(_generation("req-2")) is Outcome.HANDLED
    await flywheel.service.push_pending()
    assert list(flywheel.examples()) == ["acme/feedback-req-2"] and flywheel.pair_count() == 1
    assert flywheel.service._state.pending_generation_feedback("req-2") is None
    # The example's lineage is the feedback that made it, as a parked true label's is.
    _, _, manifest = await flywheel.snapshot()
    assert [(r["topic"], r["start"]) for r in manifest["lineage"]] == [(FEEDBACK, 1)]


async def test_two_differently_rated_answers_to_one_prompt_make_a_pair(flywheel: Flywheel) -> None:
    await flywheel.deliver(_generation("req-a", output=CORRECTION))
    await flywheel.deliver(_generation("req-b", question="  how do I freeze my card?  mail me at ann.lee@example.com"))
    await flywheel.deliver(_generation("req-c", output="Open the app, choose Cards, then Freeze!"))
    await flywheel.deliver(_generation("req-d", question="How do I close my account?"))
    await flywheel.deliver(FeedbackSubmitted(request_id="req-a", rating=5))
    await flywheel.deliver(FeedbackSubmitted(request_id="req-d", rating=1))  # another prompt
    assert flywheel.pair_count() == 0
    await flywheel.deliver(FeedbackSubmitted(request_id="req-b", rating=1))
    await flywheel.deliver(FeedbackSubmitted(request_id="req-b", rating=1))  # twice: still one pair
    await flywheel.deliver(FeedbackSubmitted(request_id="req-c", rating=4))  # pairs with req-b; req-a says the same
    _, pairs, _ = await flywheel.snapshot()
    assert sorted(zip(pairs["chosen"], pairs["rejected"], pairs["source"], strict=True)) == [
        ("Open the app, choose Cards, then Freeze!", "Call the branch.", "ratings"),
        (CORRECTION, "Call the branch.", "ratings"),
    ]
    assert pairs["split"].nunique() == 1  # one prompt, one split
    assert not flywheel.examples()  # ratings alone make no instruction example


async def test_feedback_for_an_unknown_request_is_kept_until_the_retention_ends(flywheel: Flywheel) -> None:
    assert await flywheel.deliver(FeedbackSubmitted(request_id="nobody", rating=1, corrected_answer=CORRECTION)) is (
        Outcome.HANDLED
    )
    assert flywheel.service._state.pending_generation_feedback("nobody") is not None
    assert not flywheel.dlq.letters and not flywheel.examples()
    flywheel.service._state.prune_flywheel(older_than=timedelta(days=3), now=datetime.now(UTC) + timedelta(days=4))
    assert flywheel.service._state.pending_generation_feedback("nobody") is None


async def test_a_correction_that_makes_an_invalid_example_is_refused_with_its_reason(flywheel: Flywheel) -> None:
    await flywheel.deliver(_generation("req-3"))
    await flywheel.deliver(FeedbackSubmitted(request_id="req-3", rating=1, corrected_answer="word " * 30))
    await flywheel.deliver(FeedbackSubmitted(request_id="req-3", corrected_answer="   "))
    await flywheel.deliver(FeedbackSubmitted(request_id="req-3", corrected_answer="x" * 201))
    assert [(key, reason) for key, reason, _ in flywheel.dlq.letters] == [
        (b"req-3", "too_many_tokens"),
        (b"req-3", "empty_text"),
        (b"req-3", "text_too_long"),
    ]
    assert "the limit is 40" in flywheel.dlq.letters[0][2]
    # Parked before its log, the feedback was consumed already: the correction alone is dropped,
    # counted, and the rating still joins its generation.
    await flywheel.deliver(FeedbackSubmitted(request_id="req-4", rating=1, corrected_answer="word " * 30))
    assert await flywheel.deliver(_generation("req-4")) is Outcome.HANDLED
    assert flywheel.service._metrics.corrections_refused.labels("too_many_tokens")._value.get() == 1
    remembered = flywheel.service._state.served_generation("req-4")
    assert remembered is not None and (remembered.rating, remembered.corrected_answer) == (1, None)
    assert not flywheel.examples() and flywheel.pair_count() == 0


async def test_feedback_on_classifications_is_unchanged(flywheel: Flywheel) -> None:
    classified = _generation("cls-1").model_copy(update={"generation": None, "label": "card_arrival"})
    await flywheel.deliver(FeedbackSubmitted(request_id="cls-1", true_label="lost_card", rating=2))
    await flywheel.deliver(classified)
    assert flywheel.service._state.pending_generation_feedback("cls-1") is None  # it was no generation
    await flywheel.deliver(FeedbackSubmitted(request_id="cls-1", rating=1))  # a rating of a classification
    await flywheel.service.push_pending()
    assert list(flywheel.features.views[RECORDS_VIEW.name]) == ["acme/feedback-cls-1"]
    assert not flywheel.examples() and flywheel.pair_count() == 0
