"""Contracts: every event type is registered, named by convention, on a known topic, and its
generated JSON Schema accepts what the envelope produces and refuses what decode refuses."""

from __future__ import annotations

import json

import jsonschema
import pytest

from llmops_events import ContentMode, Envelope, encode, event_types
from llmops_events.base import EVENT_TYPE_PATTERN
from llmops_events.schemas import asyncapi_document, event_schemas
from llmops_events.topics import TOPICS_BY_NAME
from llmops_events.v1 import InstructionSubmitted, RecordSubmitted, TrainingRequested

DESIGN_EVENT_TYPES = {
    "llmops.record.submitted.v1",
    "llmops.instruction.submitted.v1",
    "llmops.dataset.snapshotted.v1",
    "llmops.training.requested.v1",
    "llmops.training.started.v1",
    "llmops.training.progressed.v1",
    "llmops.training.completed.v1",
    "llmops.training.failed.v1",
    "llmops.evaluation.completed.v1",
    "llmops.deployment.requested.v1",
    "llmops.deployment.canary_started.v1",
    "llmops.deployment.promoted.v1",
    "llmops.deployment.rolled_back.v1",
    "llmops.inference.logged.v1",
    "llmops.feedback.submitted.v1",
    "llmops.monitoring.report_created.v1",
    "llmops.monitoring.drift_detected.v1",
    "llmops.audit.recorded.v1",
    "llmops.erasure.requested.v1",
}


def test_every_design_event_type_has_a_model() -> None:
    assert set(event_types()) == DESIGN_EVENT_TYPES


@pytest.mark.parametrize("event_type", sorted(DESIGN_EVENT_TYPES))
def test_event_type_is_versioned_and_on_a_known_topic(event_type: str) -> None:
    model = event_types()[event_type]
    assert EVENT_TYPE_PATTERN.match(event_type)
    assert model.topic in TOPICS_BY_NAME
    assert model.key_field


@pytest.mark.parametrize(
    "payload",
    [
        RecordSubmitted(tenant="acme", source="crm", text="hello", metadata={"channel": "chat"}),
        InstructionSubmitted(
            tenant="acme",
            source="playbook",
            messages=[
                {"role": "system", "content": "Answer with the intent."},
                {"role": "user", "content": "Where is my card?"},
                {"role": "assistant", "content": "card_arrival"},
            ],
            output_format={"labels": ["card_arrival", "lost_card"]},
        ),
        TrainingRequested(model_name="banking", reason="drift", evidence={"report": "file:///r.html"}),
    ],
)
def test_structured_events_validate_against_their_generated_schema(payload: object) -> None:
    envelope = Envelope.wrap(payload, source="/tests", correlationid="c-1")  # type: ignore[arg-type]
    document = json.loads(encode(envelope, ContentMode.STRUCTURED).value)

    jsonschema.validate(document, event_schemas()[envelope.type])


def test_schema_refuses_wrong_type_and_missing_text() -> None:
    schema = event_schemas()["llmops.record.submitted.v1"]
    good = {
        "specversion": "1.0",
        "id": "1",
        "source": "s",
        "type": "llmops.record.submitted.v1",
        "time": "2026-11-28T10:00:00Z",
        "data": {"tenant": "a", "source": "b", "text": "t"},
    }
    jsonschema.validate(good, schema)
    with pytest.raises(jsonschema.ValidationError):
        jsonschema.validate({**good, "type": "llmops.other.thing.v1"}, schema)
    with pytest.raises(jsonschema.ValidationError):
        jsonschema.validate({**good, "data": {"tenant": "a", "source": "b"}}, schema)


def test_asyncapi_lists_every_topic_and_event() -> None:
    document = asyncapi_document()
    addresses = {channel["address"] for channel in document["channels"].values()}
    assert addresses == set(TOPICS_BY_NAME)
    names = {message["name"] for message in document["components"]["messages"].values()}
    assert names == DESIGN_EVENT_TYPES | {"dead letter"}
    training = document["channels"]["llmops_training_v1"]["messages"]
    assert len(training) == 2 * 5  # five event types, each in binary and structured mode
