"""The CloudEvents envelope and its Kafka binding, both content modes, and every decode failure."""

from __future__ import annotations

import json

import pytest

from llmops_events import ContentMode, DecodeError, Envelope, KafkaRecord, decode, encode
from llmops_events.v1 import FeedbackSubmitted, RecordSubmitted, TrainingRequested

TRACEPARENT = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01"


def _record() -> RecordSubmitted:
    return RecordSubmitted(
        tenant="acme", source="zendesk", text="Where is my card?", record_id="t-1", label="card_arrival"
    )


@pytest.mark.parametrize("mode", list(ContentMode))
def test_round_trip_keeps_every_attribute(mode: ContentMode) -> None:
    sent = Envelope.wrap(_record(), source="/tests", subject="t-1", correlationid="corr-1", traceparent=TRACEPARENT)

    received = decode(encode(sent, mode))

    assert received == sent
    assert isinstance(received.data, RecordSubmitted)


def test_binary_mode_puts_attributes_in_ce_headers_and_data_in_value() -> None:
    record = encode(Envelope.wrap(_record(), source="/tests", correlationid="c"), ContentMode.BINARY)

    assert record.key == b"t-1"
    assert record.header("ce_type") == b"llmops.record.submitted.v1"
    assert record.header("ce_correlationid") == b"c"
    assert record.header("content-type") == b"application/json"
    assert json.loads(record.value)["text"] == "Where is my card?"


def test_structured_mode_is_one_json_document() -> None:
    record = encode(Envelope.wrap(_record(), source="/tests"), ContentMode.STRUCTURED)

    document = json.loads(record.value)
    assert record.header("content-type") == b"application/cloudevents+json"
    assert document["specversion"] == "1.0"
    assert document["type"] == "llmops.record.submitted.v1"
    assert document["data"]["tenant"] == "acme"


def test_structured_event_written_by_hand_is_accepted() -> None:
    """What a producer in another language (or kcat) sends: a JSON envelope, no headers at all."""
    value = json.dumps(
        {
            "specversion": "1.0",
            "id": "e-1",
            "source": "crm",
            "type": "llmops.record.submitted.v1",
            "time": "2026-11-28T10:00:00Z",
            "data": {"tenant": "acme", "source": "crm", "text": "hello"},
        }
    ).encode()

    envelope = decode(KafkaRecord(key=None, value=value))

    assert envelope.id == "e-1"
    assert envelope.data.text == "hello"


def test_key_follows_topic_contract() -> None:
    request = Envelope.wrap(TrainingRequested(model_name="banking"), source="/tests")
    assert request.key == "banking"
    assert request.topic == "llmops.training.v1"


@pytest.mark.parametrize(
    ("value", "headers", "reason"),
    [
        (b"\xff\xfe\x00", (), "undecodable_bytes"),
        (b"{not json", (), "invalid_json"),
        (b'{"id": "1", "source": "x", "data": {}}', (), "invalid_envelope"),
        (
            b'{"specversion": "1.0", "id": "1", "source": "x", "type": "llmops.nothing.done.v1", "data": {}}',
            (),
            "unknown_event_type",
        ),
        (
            b'{"specversion": "1.0", "id": "1", "source": "x", "type": "llmops.record.submitted.v1",'
            b' "data": {"tenant": "a", "source": "b", "text": ""}}',
            (),
            "schema_violation",
        ),
        (
            b'{"tenant": "a"}',
            (
                ("ce_specversion", b"1.0"),
                ("ce_id", b"1"),
                ("ce_source", b"x"),
                ("ce_type", b"llmops.record.submitted.v1"),
            ),
            "schema_violation",
        ),
        (
            b"not json",
            (
                ("ce_specversion", b"1.0"),
                ("ce_id", b"1"),
                ("ce_source", b"x"),
                ("ce_type", b"llmops.record.submitted.v1"),
                ("content-type", b"application/json"),
            ),
            "invalid_json",
        ),
    ],
)
def test_decode_failures_have_stable_reasons(value: bytes, headers: tuple[tuple[str, bytes], ...], reason: str) -> None:
    with pytest.raises(DecodeError) as caught:
        decode(KafkaRecord(key=None, value=value, headers=headers))
    assert caught.value.reason == reason
    assert caught.value.detail


def test_expected_type_mismatch_is_refused() -> None:
    record = encode(Envelope.wrap(_record(), source="/tests"))
    with pytest.raises(DecodeError) as caught:
        decode(record, expected=FeedbackSubmitted)
    assert caught.value.reason == "unexpected_event_type"


def test_envelope_type_must_match_data() -> None:
    with pytest.raises(ValueError, match="does not match"):
        Envelope[RecordSubmitted](source="/x", type="llmops.feedback.submitted.v1", data=_record())


def test_feedback_needs_a_label_or_rating() -> None:
    with pytest.raises(ValueError, match="true_label or a rating"):
        FeedbackSubmitted(request_id="r")


def test_binary_fast_path_decodes_exactly_as_the_cloudevents_sdk() -> None:
    from datetime import UTC, datetime

    from llmops_events.envelope import _decode_with_sdk

    feedback = FeedbackSubmitted(request_id="r-1", true_label="refund")
    records = [
        encode(Envelope.wrap(_record(), source="/tests", subject="t-1", correlationid="c", traceparent=TRACEPARENT)),
        encode(
            Envelope.wrap(_record().model_copy(update={"occurred_at": datetime(2026, 1, 2, tzinfo=UTC)}), source="/t")
        ),
        encode(Envelope.wrap(feedback, source="/tests")),
    ]
    for record in records:
        assert decode(record) == _decode_with_sdk(record)

    def verdict(decoder: object, record: KafkaRecord) -> object:
        try:
            return decoder(record)  # type: ignore[operator]
        except DecodeError as error:
            return error.reason

    # Anything unusual takes the SDK's path, so the verdicts are the same.
    base = records[0]
    unusual = [
        KafkaRecord(base.key, base.value, (*base.headers, ("ce_extrathing", b"x"))),
        KafkaRecord(base.key, base.value, (*base.headers, ("ce_id", b"second id"))),
        KafkaRecord(
            base.key, base.value, tuple((n, b"text/plain" if n == "content-type" else v) for n, v in base.headers)
        ),
        KafkaRecord(base.key, b'{"tenant": "a"}', base.headers),
        KafkaRecord(base.key, b"{not json", base.headers),
        KafkaRecord(base.key, b"\xff\xfe", base.headers),
        KafkaRecord(base.key, base.value, tuple((n, b"not a time" if n == "ce_time" else v) for n, v in base.headers)),
        KafkaRecord(base.key, base.value, tuple((n, b"0.3" if n == "ce_specversion" else v) for n, v in base.headers)),
    ]
    for record in unusual:
        assert verdict(decode, record) == verdict(_decode_with_sdk, record), record


def test_binary_encoding_writes_what_the_cloudevents_sdk_writes() -> None:
    """The SDK-free binary encoder: the same key and headers, in the same order, and a value
    that is the same JSON (only whitespace and escaping may differ)."""
    from datetime import UTC, datetime, timedelta, timezone

    from llmops_events.envelope import _encode_with_sdk
    from llmops_events.v1 import InferenceLogged

    logged = InferenceLogged(
        request_id="r-9",
        tenant="acme",
        model_name="intents",
        model_version=3,
        text='Où est ma carte ? \u2603 "quoted"',
        label="card_arrival",
        confidence=0.25,
        scores={"card_arrival": 0.25, "refund": 1e-07, "lost_card": 0.1 + 0.2},
        latency_ms=3.5,
        route="canary",
        served_at=datetime(2026, 12, 1, 10, 0, tzinfo=timezone(timedelta(hours=2))),
    )
    envelopes = [
        Envelope.wrap(_record(), source="/tests", subject="t-1", correlationid="c", traceparent=TRACEPARENT),
        Envelope.wrap(logged, source="/llmops/gateway"),
        Envelope.wrap(FeedbackSubmitted(request_id="r-1", true_label="refund"), source="/t", id="fixed"),
        Envelope.wrap(_record(), source="/t").model_copy(
            update={"time": datetime(2026, 1, 2, 3, 4, 5, tzinfo=timezone(timedelta(hours=-5)))}
        ),
        Envelope.wrap(_record(), source="/t").model_copy(update={"time": datetime(2026, 1, 2, tzinfo=UTC)}),
    ]
    for envelope in envelopes:
        fast, sdk = encode(envelope, ContentMode.BINARY), _encode_with_sdk(envelope, ContentMode.BINARY)
        assert fast.key == sdk.key
        assert fast.headers == sdk.headers
        assert json.loads(fast.value) == json.loads(sdk.value)
        assert decode(fast) == envelope


REQUIRED_ATTRIBUTES = ("id", "source", "specversion", "type")


def _without_attribute(mode: ContentMode, attribute: str, *, empty: bool) -> KafkaRecord:
    """A valid event of ``mode`` whose ``attribute`` is missing (or present but empty)."""
    record = encode(Envelope.wrap(_record(), source="/tests"), mode)
    if mode is ContentMode.STRUCTURED:
        document = json.loads(record.value)
        if empty:
            document[attribute] = ""
        else:
            del document[attribute]
        return KafkaRecord(record.key, json.dumps(document).encode(), record.headers)
    header = f"ce_{attribute}"
    headers = tuple(
        (name, b"" if empty and name == header else value) for name, value in record.headers if empty or name != header
    )
    return KafkaRecord(record.key, record.value, headers)


@pytest.mark.parametrize("empty", [False, True], ids=["missing", "empty"])
@pytest.mark.parametrize("attribute", REQUIRED_ATTRIBUTES)
@pytest.mark.parametrize("mode", list(ContentMode))
def test_every_required_attribute_is_required_in_both_modes(mode: ContentMode, attribute: str, empty: bool) -> None:
    """The CloudEvents SDK fills a missing ``id`` (a fresh UUID) and ``specversion`` (1.0) in:
    such an event would be stored under an id no redelivery can match. It is refused instead."""
    record = _without_attribute(mode, attribute, empty=empty)
    with pytest.raises(DecodeError) as caught:
        decode(record)
    assert caught.value.reason == "invalid_envelope"
    assert attribute in caught.value.detail


@pytest.mark.parametrize("mode", list(ContentMode))
def test_the_fast_path_refuses_a_missing_attribute_too(mode: ContentMode) -> None:
    from llmops_events.envelope import _decode_plain_binary

    for attribute in REQUIRED_ATTRIBUTES:
        assert _decode_plain_binary(_without_attribute(mode, attribute, empty=False), None) is None


@pytest.mark.parametrize("value", [b"[]", b'"text"', b"5", b"null"])
def test_a_structured_value_that_is_not_a_json_object_is_not_an_envelope(value: bytes) -> None:
    with pytest.raises(DecodeError) as caught:
        decode(KafkaRecord(key=None, value=value))
    assert caught.value.reason == "invalid_envelope"


@pytest.mark.parametrize(
    "value",
    [b"[" * 100_000, b'{"a":' * 5000 + b"1" + b"}" * 5000],
    ids=["array bomb", "object bomb"],
)
@pytest.mark.parametrize("mode", list(ContentMode))
def test_deeply_nested_json_is_invalid_json_not_a_crash(mode: ContentMode, value: bytes) -> None:
    headers: tuple[tuple[str, bytes], ...] = ()
    if mode is ContentMode.BINARY:
        headers = (
            ("ce_specversion", b"1.0"),
            ("ce_id", b"1"),
            ("ce_source", b"x"),
            ("ce_type", b"llmops.record.submitted.v1"),
            ("content-type", b"application/json"),
        )
    with pytest.raises(DecodeError) as caught:
        decode(KafkaRecord(key=None, value=value, headers=headers))
    assert caught.value.reason == "invalid_json"
    assert "nested" in caught.value.detail


def test_the_readme_lists_every_dead_letter_reason_of_the_catalogue() -> None:
    from pathlib import Path

    from llmops_events import DeadLetterReason

    readme = (Path(__file__).resolve().parents[2] / "docs" / "events.md").read_text()  # the manual page for producers
    table = readme[readme.index("| DLQ `error.reason` | meaning |") :].split("\n\n", 1)[0].splitlines()[2:]
    rows = [line for line in table if not line.startswith("| service-specific")]
    assert rows == [f"| `{reason}` | {reason.meaning} |" for reason in DeadLetterReason]
