"""The generative feedback flywheel on the real broker: a generation log and feedback with a
correction make an instruction example (``source=feedback``) and a preference pair in the next
instructions snapshot (cut by the count policy); two rated answers to one prompt make a pair; feedback
delivered twice makes one."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from datetime import UTC, datetime

import pytest
from ingestion_harness import RunningIngestion, start_ingestion, stop_ingestion, wait_until

from llmops_config import PlatformSettings
from llmops_events.v1 import ChatTurn, DatasetContent, FeedbackSubmitted, Generation, InferenceLogged
from llmops_messaging import Outcome
from llmops_models.snapshots import INSTRUCTIONS, SnapshotReader
from llmops_storage import open_store

pytestmark = pytest.mark.integration

QUESTION = "My card has not arrived, write to ann.lee@example.com"
CORRECTION = "Order a new card in the app under Cards, then Replace."


@pytest.fixture(scope="module")
async def ingestion(
    kafka_settings: PlatformSettings, tmp_path_factory: pytest.TempPathFactory
) -> AsyncIterator[RunningIngestion]:
    """This module's service: an instructions snapshot every 2 new examples or pairs."""
    running, broker = await start_ingestion(
        kafka_settings, tmp_path_factory.mktemp("flywheel-var"), snapshot_every_n_instructions=2
    )
    yield running
    await stop_ingestion(running, broker)


def _generation(tenant: str, request_id: str, output: str) -> InferenceLogged:
    return InferenceLogged(
        request_id=request_id,
        tenant=tenant,
        model_name="support-bot",
        model_version=1,
        text=QUESTION,
        label="",
        confidence=0.0,
        latency_ms=800.0,
        served_at=datetime.now(UTC),
        generation=Generation(
            messages=[ChatTurn(role="user", content=QUESTION)],
            output=output,
            finish_reason="stop",
            prompt_tokens=18,
            completion_tokens=8,
        ),
    )


async def _handled(ingestion: RunningIngestion, before: int, count: int) -> None:
    """Until ``count`` more messages than ``before`` were processed (each test waits for its own)."""
    await wait_until(lambda: len(ingestion.outcomes) >= before + count, timeout=120)


def _reader(ingestion: RunningIngestion) -> SnapshotReader:
    return SnapshotReader(open_store(ingestion.settings.platform.resolved_artifact_store_uri))


async def test_a_corrected_thumbs_down_lands_in_the_next_snapshot_as_example_and_pair(
    ingestion: RunningIngestion, tenant: str
) -> None:
    request_id = f"{tenant}-gen"
    before = len(ingestion.outcomes)
    await ingestion.publisher.publish(_generation(tenant, request_id, "Cards arrive within 5 working days."))
    feedback = FeedbackSubmitted(request_id=request_id, rating=1, corrected_answer=CORRECTION)
    first = await ingestion.publisher.publish(feedback)
    await ingestion.publisher.publish(feedback, id=first.id)  # redelivered: skipped by its event id
    await ingestion.publisher.publish(feedback)  # sent again: the same example id and pair id
    await _handled(ingestion, before, 4)

    # The example and the pair are 2 new instruction items: the count policy cuts a snapshot.
    reader = _reader(ingestion)

    def snapshot_with_mine() -> str | None:
        dataset_id = reader.latest_dataset_id(INSTRUCTIONS)
        if dataset_id is None:
            return None
        return dataset_id if f"{tenant}/feedback-{request_id}" in set(reader.frame(dataset_id)["record_id"]) else None

    await wait_until(lambda: snapshot_with_mine() is not None, timeout=120)
    dataset_id = snapshot_with_mine()
    assert dataset_id is not None
    row = reader.frame(dataset_id).set_index("record_id").loc[f"{tenant}/feedback-{request_id}"]
    messages = json.loads(row["messages_json"])
    assert row["source"] == "feedback" and row["tenant"] == tenant and row["label"] == CORRECTION
    assert messages == [
        {"role": "user", "content": "My card has not arrived, write to <EMAIL>"},
        {"role": "assistant", "content": CORRECTION},
    ]
    pairs = reader.preferences(dataset_id)
    mine = pairs[pairs["pair_id"].str.startswith(f"{tenant}/")]
    assert len(mine) == 1
    pair = mine.iloc[0]
    assert (pair["source"], pair["chosen"], pair["rejected"]) == (
        "correction",
        CORRECTION,
        "Cards arrive within 5 working days.",
    )
    assert json.loads(pair["messages_json"]) == messages[:-1] and pair["split"] == row["split"]
    manifest = reader.manifest(dataset_id)
    assert manifest["content"] == "instructions" and sum(manifest["preference_counts"].values()) == len(pairs)
    assert Outcome.DEAD_LETTERED not in ingestion.outcomes[before:]
    assert ingestion.outcomes[before:].count(Outcome.DUPLICATE) == 1


async def test_two_rated_answers_make_one_pair_however_often_rated(ingestion: RunningIngestion, tenant: str) -> None:
    good, bad = f"{tenant}-good", f"{tenant}-bad"
    before = len(ingestion.outcomes)
    await ingestion.publisher.publish(_generation(tenant, good, "Order a replacement in the app."))
    await ingestion.publisher.publish(_generation(tenant, bad, "Please wait."))
    await ingestion.publisher.publish(FeedbackSubmitted(request_id=good, rating=5))
    for _ in range(2):  # the same rating twice: still one pair
        await ingestion.publisher.publish(FeedbackSubmitted(request_id=bad, rating=2))
    await _handled(ingestion, before, 5)

    event = await ingestion.service.cut_snapshot(content=DatasetContent.INSTRUCTIONS)
    pairs = _reader(ingestion).preferences(event.dataset_id)
    mine = pairs[pairs["pair_id"].str.startswith(f"{tenant}/")]
    assert mine[["chosen", "rejected", "source"]].values.tolist() == [
        ["Order a replacement in the app.", "Please wait.", "ratings"]
    ]
    assert Outcome.DEAD_LETTERED not in ingestion.outcomes[before:]
