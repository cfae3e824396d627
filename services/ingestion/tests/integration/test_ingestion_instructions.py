"""Instruction examples on the real broker, through real Feast, into their own snapshot series."""

from __future__ import annotations

import asyncio
import json
import shutil
import uuid
from pathlib import Path

import pytest
from ingestion_harness import RunningIngestion, read_topic

from llmops_config.kafka import kafka_client_options
from llmops_events import ContentMode, KafkaRecord
from llmops_events.topics import DATASETS, RECORDS_DLQ, RECORDS_RAW
from llmops_events.v1 import DatasetContent, DatasetSnapshotted, InstructionSubmitted, RecordSubmitted
from llmops_features import INSTRUCTIONS_VIEW
from llmops_ingestion import cut_snapshots
from llmops_models.snapshots import INSTRUCTIONS, RECORDS, SnapshotReader
from llmops_storage import open_store

pytestmark = pytest.mark.integration

VIEW = INSTRUCTIONS_VIEW.name


def _example(tenant: str, *turns: tuple[str, str], **fields: object) -> InstructionSubmitted:
    return InstructionSubmitted(
        tenant=tenant,
        source="playbook",
        messages=[{"role": role, "content": content} for role, content in turns],  # type: ignore[misc]
        **fields,  # type: ignore[arg-type]
    )


def _long_turn(seed: int) -> str:
    """~450 characters of one-letter words: about 225 tokens, under the 500-character turn limit."""
    return " ".join(chr(ord("a") + (seed + index) % 26) for index in range(225))


async def test_instruction_examples_are_curated_into_their_own_snapshots(
    ingestion: RunningIngestion, tenant: str
) -> None:
    email = f"planted.{uuid.uuid4().hex[:10]}@example.com"
    valid = [
        _example(
            tenant,
            ("system", f"You are the bank's assistant. Escalate to {email}."),
            ("user", "My card has not arrived yet."),
            ("assistant", "card_arrival"),
            output_format={"labels": ["card_arrival", "lost_card"]},
            record_id="pii-in-system",
        ),
        _example(
            tenant,
            ("user", "Classify: I lost my card."),
            ("assistant", '{"intent": "lost_card"}'),
            output_format={
                "json_schema": {
                    "type": "object",
                    "properties": {"intent": {"enum": ["card_arrival", "lost_card"]}},
                    "required": ["intent"],
                    "additionalProperties": False,
                }
            },
        ),
        _example(
            tenant,
            ("user", "Hello"),
            ("assistant", "Hello! How can I help?"),
            ("user", "How do I freeze my card?"),
            ("assistant", "Open the app, choose Cards, then Freeze."),
        ),
    ]
    bad = {
        "invalid_turns": _example(tenant, ("user", "hi"), ("user", "hello?"), ("assistant", "hi")),
        "too_many_tokens": _example(
            tenant, *[("user" if i % 2 == 0 else "assistant", _long_turn(i)) for i in range(6)]
        ),
        "invalid_answer_format": _example(
            tenant, ("user", "Classify: refund please"), ("assistant", "refund"), output_format={"labels": ["a"]}
        ),
        "empty_text": _example(tenant, ("user", " \n "), ("assistant", "ok")),
    }
    for index, example in enumerate(valid):
        mode = ContentMode.STRUCTURED if index % 2 else ContentMode.BINARY
        await ingestion.publisher.publish(example, mode=mode)
    for reason, example in bad.items():
        await ingestion.publisher.publish(example.model_copy(update={"record_id": f"{tenant}-{reason}"}))
    # A role the contract does not know fails the schema (decode), before any rule.
    unknown_role = {
        "specversion": "1.0",
        "id": uuid.uuid4().hex,
        "source": "/test",
        "type": "llmops.instruction.submitted.v1",
        "data": {"tenant": tenant, "source": "playbook", "messages": [{"role": "tool", "content": "x"}]},
    }
    await ingestion.publisher.publish_record(
        RECORDS_RAW, KafkaRecord(f"{tenant}-schema_violation".encode(), json.dumps(unknown_role).encode())
    )
    await ingestion.publisher.publish(
        RecordSubmitted(tenant=tenant, source="crm", text="Where is my card?", label="card_arrival")
    )

    # The bad ones are on the DLQ, each with its reason, byte for byte.
    group = ingestion.settings.group_id.encode()
    letters = await read_topic(
        ingestion.settings.platform,
        RECORDS_DLQ,
        until=len(bad) + 1,
        timeout=120,  # the first instruction example loads the tokenizer (seconds)
        accept=lambda m: (
            (m.key or b"").startswith(tenant.encode()) and dict(m.headers).get("error.consumer_group") == group
        ),
    )
    by_reason = {dict(m.headers)["error.reason"].decode(): m for m in letters}
    assert set(by_reason) == {*bad, "schema_violation"}
    for reason, message in by_reason.items():
        assert message.key.decode() == f"{tenant}-{reason}"
        stage = dict(message.headers)["error.stage"]
        assert stage == (b"decode" if reason == "schema_violation" else b"validate")
    assert b"turn 2 of 3 is 'user'" in dict(by_reason["invalid_turns"].headers)["error.detail"]
    assert b"the limit is 1024" in dict(by_reason["too_many_tokens"].headers)["error.detail"]

    # The valid ones are in Feast (their own view), every turn redacted.
    rows = await ingestion.wait_for_rows(tenant, len(valid), view=VIEW, timeout=120)
    assert len(rows) == len(valid) and email not in rows.to_json()
    system_turn = json.loads(rows.set_index("record_id").loc[f"{tenant}/pii-in-system", "messages_json"])[0]
    assert system_turn == {"role": "system", "content": "You are the bank's assistant. Escalate to <EMAIL>."}
    assert (rows["chat_tokens"] > 0).all() and sorted(rows["turn_count"]) == [2, 3, 4]
    online = await asyncio.to_thread(
        ingestion.service._features.online, [f"{tenant}/pii-in-system"], view=INSTRUCTIONS_VIEW
    )
    assert online["label"] == ["card_arrival"] and online["pii_email"] == [1]
    records_rows = await ingestion.wait_for_rows(tenant, 1)  # the record, in the records' view alone
    assert records_rows["text"].tolist() == ["Where is my card?"]

    # Snapshots: an instructions series of its own; the classifier's is unaffected.
    event = await ingestion.service.cut_snapshot(content=DatasetContent.INSTRUCTIONS)
    records = await ingestion.service.cut_snapshot()
    assert event.content is DatasetContent.INSTRUCTIONS and records.content is DatasetContent.RECORDS
    reader = SnapshotReader(open_store(ingestion.settings.platform.resolved_artifact_store_uri))
    assert reader.latest_dataset_id(INSTRUCTIONS) == event.dataset_id
    assert reader.latest_dataset_id(RECORDS) == reader.latest_dataset_id() == records.dataset_id
    frame = reader.frame(event.dataset_id)
    mine = frame[frame["tenant"] == tenant].set_index("record_id")
    assert len(mine) == len(valid)
    assert {"messages_json", "output_format_json", "text", "label", "split"} <= set(frame.columns)
    row = mine.loc[f"{tenant}/pii-in-system"]
    assert row["text"] == "My card has not arrived yet." and row["label"] == "card_arrival"
    assert json.loads(row["output_format_json"])["labels"] == ["card_arrival", "lost_card"]
    assert "<EMAIL>" in row["messages_json"] and email not in frame.to_json()
    classifier = reader.frame(records.dataset_id)
    assert not set(classifier["record_id"]) & set(frame["record_id"])
    assert "messages_json" not in classifier.columns
    assert tenant in set(classifier["tenant"])
    assert any(r.topic == RECORDS_RAW for r in event.lineage)
    announced = await read_topic(
        ingestion.settings.platform, DATASETS, until=1, accept=lambda m: m.key == event.dataset_id.encode()
    )
    assert DatasetSnapshotted.model_validate_json(announced[0].value).content is DatasetContent.INSTRUCTIONS
    # `make snapshot` (another process, the same state): both series, nothing new in either.
    both = await cut_snapshots(ingestion.settings)
    assert [(e.content, e.dataset_id) for e in both] == [
        (DatasetContent.RECORDS, records.dataset_id),
        (DatasetContent.INSTRUCTIONS, event.dataset_id),
    ]
    # Nothing raw on the service's disk (the DLQ, on the broker, keeps refused messages byte for byte).
    for path in Path(ingestion.var_dir).rglob("*"):
        if path.is_file():
            assert email.encode() not in path.read_bytes(), f"PII found in {path}"


@pytest.mark.skipif(shutil.which("kcat") is None, reason="kcat is not installed (apt-get install kcat)")
async def test_instruction_example_produced_by_kcat_is_ingested(ingestion: RunningIngestion, tenant: str) -> None:
    """The README's structured CloudEvent, sent by a client the project did not write."""
    document = json.dumps(
        {
            "specversion": "1.0",
            "id": uuid.uuid4().hex,
            "source": "playbook",
            "type": "llmops.instruction.submitted.v1",
            "data": {
                "tenant": tenant,
                "source": "playbook",
                "record_id": "pb-1042",
                "messages": [
                    {"role": "system", "content": "Answer with the intent only."},
                    {"role": "user", "content": "My new card still has not arrived."},
                    {"role": "assistant", "content": "card_arrival"},
                ],
                "output_format": {"labels": ["card_arrival", "lost_card", "refund"]},
            },
        }
    )
    process = await asyncio.create_subprocess_exec(
        "kcat",
        "-P",
        *kafka_client_options(ingestion.settings.platform, service="test").kcat(),
        "-t",
        RECORDS_RAW,
        "-k",
        "pb-1042",
        stdin=asyncio.subprocess.PIPE,
    )
    await asyncio.wait_for(process.communicate(document.encode()), timeout=30)
    assert process.returncode == 0
    rows = await ingestion.wait_for_rows(tenant, 1, view=VIEW, timeout=120)
    assert rows.iloc[0]["record_id"] == f"{tenant}/pb-1042" and rows.iloc[0]["label"] == "card_arrival"
