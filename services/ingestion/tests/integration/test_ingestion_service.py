"""The ingestion service on the real broker and a real Feast store."""

from __future__ import annotations

import asyncio
import json
import shutil
import uuid
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pandas as pd
import pytest
from ingestion_harness import LABELS, RunningIngestion, read_topic, start_ingestion, stop_ingestion, wait_until

from llmops_config.kafka import kafka_client_options
from llmops_events import ContentMode, Envelope, KafkaRecord, decode, encode
from llmops_events.topics import AUDIT, DATASETS, RECORDS_DLQ, RECORDS_RAW
from llmops_events.v1 import (
    AuditAction,
    AuditRecorded,
    DatasetSnapshotted,
    ErasureRequested,
    FeedbackSubmitted,
    InferenceLogged,
    RecordSubmitted,
    TrainingReason,
    TrainingRequested,
)
from llmops_ingestion.domain.snapshot import content_hash
from llmops_messaging import Outcome

pytestmark = pytest.mark.integration


def _luhn_card(seed: int) -> str:
    """A 16-digit number that passes the Luhn check, unique per test run."""
    body = [int(d) for d in f"4{seed:014d}"[:15]]
    total = 0
    for index, digit in enumerate(reversed(body)):
        doubled = digit * 2 if index % 2 == 0 else digit
        total += doubled - 9 if doubled > 9 else doubled
    return "".join(map(str, body)) + str((10 - total % 10) % 10)


@pytest.mark.parametrize("mode", [ContentMode.BINARY, ContentMode.STRUCTURED])
async def test_records_in_both_content_modes_are_curated(ingestion: RunningIngestion, tenant: str, mode) -> None:
    await ingestion.publisher.publish(
        RecordSubmitted(
            tenant=tenant,
            source="crm",
            text=f"Where is my card? ({mode})",
            label="card_arrival",
            metadata={"channel": "email"},
        ),
        mode=mode,
    )
    rows = await ingestion.wait_for_rows(tenant, 1)
    row = rows.iloc[0]
    assert (row["source"], row["label"], row["language"]) == ("crm", "card_arrival", "en")
    assert row["record_id"].startswith(f"{tenant}/h-")
    online = await asyncio.to_thread(ingestion.runtime.service._features.online, [row["record_id"]])
    assert online["text"] == [row["text"]]


@pytest.mark.skipif(shutil.which("kcat") is None, reason="kcat is not installed (apt-get install kcat)")
async def test_record_produced_by_kcat_is_ingested(ingestion: RunningIngestion, tenant: str) -> None:
    """A client the project did not write (librdkafka's kcat) sends a structured CloudEvent."""
    document = json.dumps(
        {
            "specversion": "1.0",
            "id": uuid.uuid4().hex,
            "source": "kcat",
            "type": "llmops.record.submitted.v1",
            "time": "2026-11-28T10:00:00Z",
            "data": {"tenant": tenant, "source": "kcat", "text": "My card never arrived", "label": "card_arrival"},
        }
    )
    process = await asyncio.create_subprocess_exec(
        "kcat",
        "-P",
        *kafka_client_options(ingestion.settings.platform, service="test").kcat(),
        "-t",
        RECORDS_RAW,
        "-k",
        tenant,
        stdin=asyncio.subprocess.PIPE,
    )
    await asyncio.wait_for(process.communicate(document.encode()), timeout=30)
    assert process.returncode == 0
    rows = await ingestion.wait_for_rows(tenant, 1)
    assert rows.iloc[0]["source"] == "kcat" and rows.iloc[0]["label"] == "card_arrival"


async def test_every_bad_input_reaches_the_dlq_with_its_reason(ingestion: RunningIngestion, tenant: str) -> None:
    def record(**fields) -> KafkaRecord:
        data = {"tenant": tenant, "source": "crm", "text": "fine", **fields}
        return encode(Envelope.wrap(RecordSubmitted.model_construct(**data), source="/test"), ContentMode.STRUCTURED)

    structured = record()
    cases: dict[str, KafkaRecord] = {
        "invalid_json": KafkaRecord(None, b"{this is not json"),
        "undecodable_bytes": KafkaRecord(None, b"\xff\xfe\x00garbage"),
        "invalid_envelope": KafkaRecord(None, json.dumps({"specversion": "1.0", "data": {}}).encode()),
        "unknown_event_type": KafkaRecord(
            None, structured.value.replace(b"llmops.record.submitted.v1", b"llmops.record.teleported.v1")
        ),
        "schema_violation": KafkaRecord(None, structured.value.replace(b'"tenant"', b'"tenant_name"')),
        "text_too_long": record(text="x" * 501),
        "empty_text": record(text="   "),
        "unknown_label": record(label="not_a_label"),
        "invalid_label": record(label=" refund"),
    }
    for reason, message in cases.items():
        keyed = KafkaRecord(f"{tenant}-{reason}".encode(), message.value, message.headers)
        await ingestion.publisher.publish_record(RECORDS_RAW, keyed)

    group = ingestion.settings.group_id.encode()
    letters = await read_topic(
        ingestion.settings.platform,
        RECORDS_DLQ,
        until=len(cases),
        accept=lambda m: (
            (m.key or b"").startswith(tenant.encode()) and dict(m.headers).get("error.consumer_group") == group
        ),
    )
    by_key = {m.key.decode().removeprefix(f"{tenant}-"): m for m in letters}
    assert set(by_key) == set(cases)
    for reason, message in by_key.items():
        headers = dict(message.headers)
        assert headers["error.reason"].decode() == reason
        assert message.value == cases[reason].value  # the original bytes, untouched
        assert headers["error.stage"] in (b"decode", b"validate")
    assert ingestion.offline_rows(tenant).empty
    assert ingestion.runtime.metrics.dead_lettered.labels("validate", "text_too_long")._value.get() >= 1


async def test_pii_never_reaches_disk(ingestion: RunningIngestion, tenant: str) -> None:
    email = f"planted.{uuid.uuid4().hex[:10]}@example.com"
    card = _luhn_card(int(uuid.uuid4().int % 10**14))
    spaced_card = " ".join(card[i : i + 4] for i in range(0, 16, 4))
    await ingestion.publisher.publish(
        RecordSubmitted(
            tenant=tenant,
            source="chat",
            label="lost_card",
            metadata={"reply_to": email},
            text=f"My name is Jane Planted, mail {email} about card {spaced_card} from 10.1.2.3",
        )
    )
    rows = await ingestion.wait_for_rows(tenant, 1)
    row = rows.iloc[0]
    assert row["text"] == "My name is <PERSON>, mail <EMAIL> about card <CREDIT_CARD> from <IP_ADDRESS>"
    assert (row["pii_email"], row["pii_credit_card"], row["pii_person"], row["pii_ip_address"]) == (2, 1, 1, 1)
    await ingestion.service.cut_snapshot()
    planted = [email.encode(), card.encode(), spaced_card.encode(), b"Jane Planted"]
    files = [path for path in Path(ingestion.var_dir).rglob("*") if path.is_file()]
    assert any(path.suffix == ".parquet" for path in files) and any(path.name.endswith(".db") for path in files)
    for path in files:
        content = path.read_bytes()
        assert not any(value in content for value in planted), f"PII found in {path}"


def _full_width(text: str) -> str:
    return "".join(chr(ord(c) + 0xFEE0) if "!" <= c <= "~" else c for c in text)


async def test_disguised_e_mails_are_redacted_before_storage(ingestion: RunningIngestion, tenant: str) -> None:
    """Issue 17, item 10: an e-mail in full-width characters and one with a zero-width space inside
    are redacted like a plain one (Unicode normalised first), and reach the disk in no form."""
    local = f"planted{uuid.uuid4().hex[:10]}"
    texts = {
        f"my card is lost, mail {_full_width(local + '@example.com')}": "my card is lost, mail <EMAIL>",
        f"card still lost, mail {local}\u200b@exam\u200bple.com": "card still lost, mail <EMAIL>",
    }
    for text in texts:
        await ingestion.publisher.publish(RecordSubmitted(tenant=tenant, source="chat", label="lost_card", text=text))
    rows = await ingestion.wait_for_rows(tenant, 2)
    assert set(rows["text"]) == set(texts.values()) and set(rows["pii_email"]) == {1}
    await ingestion.service.cut_snapshot()
    planted = [local.encode(), _full_width(local).encode()]
    for path in (p for p in Path(ingestion.var_dir).rglob("*") if p.is_file()):
        content = path.read_bytes()
        assert not any(value in content for value in planted), f"the planted address is in {path}"


async def test_duplicates_have_one_effect(ingestion: RunningIngestion, tenant: str) -> None:
    first = RecordSubmitted(tenant=tenant, source="crm", text="Card   not arrived", label="card_arrival")
    envelope = Envelope.wrap(first, source="/test")
    await ingestion.publisher.publish(envelope)
    await ingestion.publisher.publish(envelope)  # the same event again (producer retry)
    await ingestion.publisher.publish(first.model_copy(update={"text": "card not ARRIVED"}))  # same normalised text
    await ingestion.publisher.publish(RecordSubmitted(tenant=tenant, source="crm", text="one", record_id="t-1"))
    await ingestion.publisher.publish(RecordSubmitted(tenant=tenant, source="crm", text="two", record_id="t-1"))
    await ingestion.publisher.publish(RecordSubmitted(tenant=tenant, source="crm", text="distinct", label="refund"))
    rows = await ingestion.wait_for_rows(tenant, 3)
    await asyncio.sleep(1.0)  # give any wrongly accepted duplicate time to show up
    rows = ingestion.offline_rows(tenant)
    assert sorted(rows["text"]) == ["Card not arrived", "distinct", "one"]
    assert f"{tenant}/t-1" in set(rows["record_id"])


async def test_feedback_turns_a_served_request_into_a_labelled_record(ingestion: RunningIngestion, tenant: str) -> None:
    now = pd.Timestamp.now(tz="UTC").to_pydatetime()

    def logged(request_id: str, text: str) -> InferenceLogged:
        return InferenceLogged(
            request_id=request_id,
            tenant=tenant,
            model_name="intent",
            model_version=2,
            text=text,
            label="card_arrival",
            confidence=0.7,
            latency_ms=3.0,
            served_at=now,
        )

    first, second = f"{tenant}-req-1", f"{tenant}-req-2"
    await ingestion.publisher.publish(logged(first, "my card was stolen, call +44 20 7946 0958"))
    await ingestion.publisher.publish(FeedbackSubmitted(request_id=first, true_label="lost_card"))
    # Feedback before its inference log (they travel on different topics).
    await ingestion.publisher.publish(FeedbackSubmitted(request_id=second, true_label="refund"))
    await ingestion.publisher.publish(FeedbackSubmitted(request_id=f"{tenant}-req-3", rating=5))
    await asyncio.sleep(1.0)
    await ingestion.publisher.publish(logged(second, "I want my money back"))
    rows = (await ingestion.wait_for_rows(tenant, 2)).set_index("record_id")
    assert rows.loc[f"{tenant}/feedback-{first}", "text"] == "my card was stolen, call <PHONE>"
    assert rows.loc[f"{tenant}/feedback-{first}", "label"] == "lost_card"
    assert rows.loc[f"{tenant}/feedback-{second}", "label"] == "refund"
    assert set(rows["source"]) == {"feedback"}
    assert json.loads(rows.loc[f"{tenant}/feedback-{first}", "metadata_json"])["predicted_label"] == "card_arrival"


async def test_snapshot_manifest_matches_the_stored_rows(ingestion: RunningIngestion, tenant: str) -> None:
    for index in range(12):
        await ingestion.publisher.publish(
            RecordSubmitted(tenant=tenant, source="crm", text=f"question {index}", label=LABELS[index % 3])
        )
    await ingestion.publisher.publish(RecordSubmitted(tenant=tenant, source="crm", text="no label yet"))
    await ingestion.wait_for_rows(tenant, 13)
    event = await ingestion.service.cut_snapshot()
    manifest = json.loads((Path(event.manifest_uri)).read_text())
    folder = Path(event.uri)
    assert (folder / "_COMPLETE").exists()
    frame = pd.concat([pd.read_parquet(folder / name) for name in manifest["files"].values()])
    assert manifest["row_count"] == event.row_count == len(frame) == frame["record_id"].nunique()
    assert frame["label"].notna().all()  # only labelled records are training data
    assert manifest["content_hash"] == event.content_hash == content_hash(frame.to_dict("records"))
    assert manifest["label_counts"] == frame["label"].value_counts().to_dict()
    assert manifest["split_counts"] == {s: int((frame["split"] == s).sum()) for s in ("train", "validation", "test")}
    mine = frame[frame["tenant"] == tenant]
    assert len(mine) == 12 and "<" not in "".join(mine["text"])
    assert any(r.topic == RECORDS_RAW for r in event.lineage)
    announced = await read_topic(
        ingestion.settings.platform, DATASETS, until=1, accept=lambda m: m.key == event.dataset_id.encode()
    )
    assert announced, "DatasetSnapshotted was not published"
    assert DatasetSnapshotted.model_validate_json(announced[0].value).content_hash == event.content_hash


async def test_redelivery_after_a_crash_between_store_and_commit_adds_no_row(
    kafka_settings, tmp_path, tenant: str
) -> None:
    running, broker = await start_ingestion(kafka_settings, tmp_path, fail_after_store=1, snapshot_every_n_labelled=2)
    try:
        for text in ("first question", "second question"):
            await running.publisher.publish(RecordSubmitted(tenant=tenant, source="crm", text=text, label="refund"))
        await running.wait_for_rows(tenant, 2)
        await wait_until(lambda: Outcome.DUPLICATE in running.outcomes)  # the crashed message came again
        # And the outbox pushed a row twice (a crash between the Feast push and its bookkeeping):
        rows = running.offline_rows(tenant)
        async with running.service._push_lock:  # the pusher must not rewrite the file meanwhile
            await asyncio.to_thread(running.service._features.push, rows.to_dict("records")[:1])
        assert len(running.offline_rows(tenant)) == 3
        await running.service.wait_for_snapshot()  # the policy (every 2 labelled) cut one already
        event = await running.service.cut_snapshot()
        frame = pd.concat(pd.read_parquet(p) for p in Path(event.uri).glob("*.parquet"))
        assert sorted(frame[frame["tenant"] == tenant]["text"]) == ["first question", "second question"]
        # (>= 1: a new consumer group also reads the labelled records of earlier tests)
        assert running.runtime.metrics.snapshots.labels("policy")._value.get() >= 1
    finally:
        await stop_ingestion(running, broker)


async def test_a_drift_retraining_request_gets_a_fresh_snapshot(ingestion: RunningIngestion, tenant: str) -> None:
    for index in range(6):
        await ingestion.publisher.publish(
            RecordSubmitted(tenant=tenant, source="crm", text=f"drifted question {index}", label=LABELS[index % 3])
        )
    await ingestion.wait_for_rows(tenant, 6)
    before = await ingestion.service.cut_snapshot()
    requested_at = datetime.now(UTC)
    await ingestion.publisher.publish(TrainingRequested(model_name="m", reason=TrainingReason.DRIFT))
    await ingestion.publisher.publish(TrainingRequested(model_name="m", reason=TrainingReason.MANUAL))

    def fresh(message: Any) -> bool:
        event = DatasetSnapshotted.model_validate_json(message.value)
        return event.created_at >= requested_at

    announced = await read_topic(ingestion.settings.platform, DATASETS, until=1, accept=fresh)
    assert announced, "a drift retraining request must get a snapshot cut after it"
    snapshot = DatasetSnapshotted.model_validate_json(announced[0].value)
    assert snapshot.dataset_id != before.dataset_id and snapshot.row_count >= before.row_count
    assert ingestion.runtime.metrics.snapshots.labels("retraining")._value.get() >= 1


async def test_a_tenants_erasure_leaves_nothing_in_feast_and_keeps_its_old_records_out(
    ingestion: RunningIngestion, tenant: str
) -> None:
    """Issue 17, item 7, for a whole tenant (a data subject's records, and lineage, are erased in
    ``tests/integration/test_lineage_erasure.py``)."""
    records = [
        Envelope.wrap(
            RecordSubmitted(tenant=tenant, source="crm", text=f"erase me {i}", label="refund", record_id=f"e-{i}"),
            source="/test",
        )
        for i in range(3)
    ]
    for envelope in records:
        await ingestion.publisher.publish(envelope)
    ids = [f"{tenant}/e-{i}" for i in range(3)]
    await ingestion.wait_for_rows(tenant, 3)
    request = Envelope.wrap(ErasureRequested(tenant=tenant, requested_by="operator:test"), source="/test")
    await ingestion.publisher.publish(request)

    def confirms(message: Any) -> bool:
        if message.key != tenant.encode():
            return False
        event = decode(KafkaRecord(message.key, message.value, tuple(message.headers))).data
        return isinstance(event, AuditRecorded) and event.details.get("erasure_id") == request.id

    (confirmation,) = await read_topic(ingestion.settings.platform, AUDIT, until=1, accept=confirms)
    audit = decode(KafkaRecord(confirmation.key, confirmation.value, tuple(confirmation.headers))).data
    assert (audit.action, audit.principal, audit.tenant) == (AuditAction.ERASURE, "operator:test", tenant)
    assert audit.details["scope"] == "tenant" and audit.details["records_erased"] == "3"
    assert ingestion.offline_rows(tenant).empty
    online = await asyncio.to_thread(ingestion.service._features.online, ids)
    assert online["text"] == [None, None, None]

    # A copy produced before the erasure and consumed after it (a replay: a new event id, a record
    # id never seen, the original time) stays erased; a record submitted after the erasure is new data.
    replayed = Envelope.wrap(
        RecordSubmitted(tenant=tenant, source="crm", text="replayed", label="refund", record_id="e-9"), source="/test"
    ).model_copy(update={"time": records[0].time})
    await ingestion.publisher.publish(replayed)
    await ingestion.publisher.publish(
        RecordSubmitted(tenant=tenant, source="crm", text="after the erasure", label="refund", record_id="e-10")
    )
    rows = await ingestion.wait_for_rows(tenant, 1)
    await asyncio.sleep(1.0)  # give a wrongly accepted replay time to show up
    rows = ingestion.offline_rows(tenant)
    assert list(rows["record_id"]) == [f"{tenant}/e-10"]
