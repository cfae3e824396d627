"""Malformed messages on the real broker (issue 20): a message the decoder chokes on goes to the DLQ
alone and once, and the valid records around it in the same partition are ingested."""

from __future__ import annotations

import json

import pytest
from ingestion_harness import read_topic, start_ingestion, stop_ingestion, wait_until

from llmops_events import ContentMode, Envelope, KafkaRecord, encode
from llmops_events.topics import RECORDS_DLQ, RECORDS_RAW
from llmops_events.v1 import RecordSubmitted
from llmops_messaging import Outcome

pytestmark = pytest.mark.integration


async def test_a_json_bomb_and_a_malformed_event_do_not_halt_ingestion(kafka_settings, tmp_path, tenant: str) -> None:
    # The first valid record "crashes" the consumer after it is stored and before the offsets are
    # committed, so the batch is delivered twice: the bad messages must reach the DLQ once.
    running, broker = await start_ingestion(kafka_settings, tmp_path, fail_after_store=1)
    key = f"{tenant}-same-partition".encode()  # one key: one partition, in this order

    def valid(text: str) -> KafkaRecord:
        record = encode(Envelope.wrap(RecordSubmitted(tenant=tenant, source="crm", text=text), source="/test"))
        return KafkaRecord(key, record.value, record.headers)

    no_id = json.loads(
        encode(
            Envelope.wrap(RecordSubmitted(tenant=tenant, source="crm", text="no id"), source="/t"),
            ContentMode.STRUCTURED,
        ).value
    )
    del no_id["id"]
    bad = {
        b"json-bomb": b'{"a":' * 5000 + b"1" + b"}" * 5000,
        b"no-id": json.dumps(no_id).encode(),
    }
    messages = [
        valid("before the bad ones"),
        KafkaRecord(key, bad[b"json-bomb"], (("x-case", b"json-bomb"),)),
        KafkaRecord(key, bad[b"no-id"], (("x-case", b"no-id"),)),
        valid("after the bad ones"),
        valid("the last one"),
    ]
    try:
        for message in messages:
            await running.publisher.publish_record(RECORDS_RAW, message)
        rows = await running.wait_for_rows(tenant, 3, timeout=60)
        assert sorted(rows["text"]) == ["after the bad ones", "before the bad ones", "the last one"]
        await wait_until(lambda: Outcome.DUPLICATE in running.outcomes)  # the batch came again

        group = running.settings.group_id.encode()
        letters = await read_topic(
            running.settings.platform,
            RECORDS_DLQ,
            until=len(bad) + 1,  # one more than expected: waits out the timeout, catching any copy
            timeout=8,
            accept=lambda m: m.key == key and dict(m.headers).get("error.consumer_group") == group,
        )
    finally:
        await stop_ingestion(running, broker)

    cases = sorted(dict(letter.headers)["x-case"] for letter in letters)
    assert cases == [b"json-bomb", b"no-id"], "each bad message on the DLQ exactly once"
    for letter in letters:
        headers = dict(letter.headers)
        assert letter.value == bad[headers["x-case"]]  # the original bytes
        assert headers["error.stage"] == b"decode"
        if headers["x-case"] == b"json-bomb":
            assert headers["error.reason"] == b"invalid_json" and b"nested" in headers["error.detail"]
        else:
            assert headers["error.reason"] == b"invalid_envelope" and b"id" in headers["error.detail"]
    assert len(running.offline_rows(tenant)) == 3  # the event without an id was not stored
    assert running.runtime.consumer is not None and running.runtime.consumer.health().healthy
