"""The table of who sends and receives each event holds to the event registry, and the AsyncAPI
operations generated from it name every participant's topics."""

from __future__ import annotations

from llmops_events import event_types
from llmops_events.participants import PARTICIPANTS, PARTICIPANTS_BY_NAME, topics_read, topics_written
from llmops_events.schemas import asyncapi_document
from llmops_events.topics import FEEDBACK, RECORDS_DLQ, RECORDS_RAW
from llmops_stack.acls import ACCESS


def test_every_event_type_has_a_sender_and_the_table_names_only_known_types() -> None:
    known = set(event_types())
    sent = {event_type for participant in PARTICIPANTS for event_type in participant.sends}
    received = {event_type for participant in PARTICIPANTS for event_type in participant.receives}
    assert known - sent == set(), "add the sender of these event types to llmops_events.participants"
    assert (sent | received) - known == set()
    assert len(PARTICIPANTS_BY_NAME) == len(PARTICIPANTS)


def test_topics_follow_from_the_event_types() -> None:
    producer = PARTICIPANTS_BY_NAME["producer"]
    assert topics_written(producer) == {RECORDS_RAW, FEEDBACK} and topics_read(producer) == set()
    ingestion = PARTICIPANTS_BY_NAME["ingestion"]
    assert RECORDS_DLQ in topics_written(ingestion) and RECORDS_RAW in topics_read(ingestion)
    operator = PARTICIPANTS_BY_NAME["operator"]
    assert RECORDS_RAW in topics_written(operator) and RECORDS_DLQ in topics_read(operator)


def test_the_kafka_acls_grant_every_participant_what_the_table_says_it_does() -> None:
    """``llmops_stack.acls`` (what the broker allows) covers this table (what the contracts say):
    a service that starts sending an event needs both changed."""
    for participant in PARTICIPANTS:
        if participant.name == "producer":  # an outside system: its principal is the cluster owner's to make
            continue
        access = ACCESS[participant.name]
        assert topics_written(participant) <= access.writes, participant.name
        assert topics_read(participant) <= access.reads, participant.name


def test_each_operation_is_a_participant_on_a_channel_with_that_channels_messages() -> None:
    document = asyncapi_document()
    for operation_id, operation in document["operations"].items():
        channel_id = operation["channel"]["$ref"].removeprefix("#/channels/")
        channel = document["channels"][channel_id]
        for message in operation["messages"]:
            prefix, _, name = message["$ref"].rpartition("/")
            assert prefix == f"#/channels/{channel_id}/messages" and name in channel["messages"], operation_id
        assert operation["tags"][0]["name"] in PARTICIPANTS_BY_NAME
    operations = document["operations"]
    assert operations["ingestion_receives_llmops_records_raw_v1"]["action"] == "receive"
    sent = operations["producer_sends_llmops_records_raw_v1"]["messages"]
    assert {"$ref": "#/channels/llmops_records_raw_v1/messages/llmops_record_submitted_v1_binary"} in sent
