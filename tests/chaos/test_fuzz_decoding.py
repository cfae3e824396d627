"""Fuzzing the bus's input side (issue 20, chaos suite): whatever a topic carries — arbitrary bytes,
any JSON (nested far beyond the parser's limit), near-valid CloudEvents with attributes or data
mutated, arbitrary headers in binary mode — ``llmops_events.decode`` either returns an envelope or
raises ``DecodeError`` with a reason of the ``DeadLetterReason`` catalogue, and the consumer
(``EventConsumer`` with a real SQLite ``ProcessedEvents``) never raises: it dead-letters an
undecodable message once, with its reason, and skips it when the message is delivered again.

Example counts are bounded (``EXAMPLES``) so these run in seconds; ``--hypothesis-show-statistics``
prints how many ran and the reasons they met."""

from __future__ import annotations

import asyncio
import json
import sys
import tempfile
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, currently_in_test_context, given, settings
from hypothesis import event as hypothesis_event
from hypothesis import strategies as st

from llmops_events import DeadLetterReason, DecodeError, Envelope, KafkaRecord, decode
from llmops_events.v1 import RecordSubmitted
from llmops_messaging import Delivery, EventConsumer, Origin, Outcome, ProcessedEvents, Rejected, RetryPolicy

from .strategies import (
    VALID_BINARY,
    VALID_STRUCTURED,
    any_kafka_records,
    json_documents,
    kafka_records,
    near_valid_binary,
    near_valid_structured,
    raw_values,
    with_value,
)

EXAMPLES = {"bytes": 300, "json": 300, "structured": 400, "binary": 400, "expected": 200, "consumer": 300, "batch": 60}

FUZZ = settings(
    deadline=None,
    database=None,  # nothing written into the work tree; a failure prints its reproducing example
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large, HealthCheck.filter_too_much],
)


def fuzz(examples: str) -> settings:
    return settings(FUZZ, max_examples=EXAMPLES[examples])


CATALOGUE = frozenset(reason.value for reason in DeadLetterReason)
DECODER_REASONS = CATALOGUE - {DeadLetterReason.HANDLER_FAILED, DeadLetterReason.UNDECODABLE}
"""What ``decode`` itself may say; ``undecodable`` is the consumer's word for a decoder that broke
its contract, ``handler_failed`` is not about decoding at all."""


def event(label: str) -> None:
    """Counted in ``--hypothesis-show-statistics`` (ignored outside a hypothesis test)."""
    if currently_in_test_context():
        hypothesis_event(label)


def decodes_or_refuses(record: KafkaRecord, expected: type[Any] | None = None) -> str | None:
    """The DLQ reason ``decode`` refuses ``record`` with, or None when it decodes. Any exception
    other than ``DecodeError`` propagates, and hypothesis reports it with the smallest example."""
    try:
        envelope = decode(record, expected)
    except DecodeError as error:
        assert error.reason in DECODER_REASONS, f"reason {error.reason!r} is not in the catalogue"
        assert isinstance(error.detail, str) and error.detail.strip(), "a DecodeError without detail"
        event(f"refused: {error.reason}")
        return str(error.reason)
    assert isinstance(envelope, Envelope)
    if expected is not None:
        assert isinstance(envelope.data, expected)
    event(f"decoded: {envelope.type}")
    return None


@fuzz("bytes")
@given(key=st.one_of(st.none(), st.binary(max_size=32)), value=raw_values(2_000))
def test_arbitrary_bytes_are_decoded_or_refused_with_a_catalogued_reason(key: bytes | None, value: bytes) -> None:
    decodes_or_refuses(KafkaRecord(key=key, value=value))


@fuzz("json")
@given(value=json_documents, content_type=st.sampled_from([None, b"application/cloudevents+json"]))
def test_arbitrary_json_is_decoded_or_refused_with_a_catalogued_reason(
    value: bytes, content_type: bytes | None
) -> None:
    headers = () if content_type is None else (("content-type", content_type),)
    decodes_or_refuses(KafkaRecord(key=None, value=value, headers=headers))


@fuzz("structured")
@given(record=near_valid_structured())
def test_near_valid_structured_events_are_decoded_or_refused(record: KafkaRecord) -> None:
    decodes_or_refuses(record)


@fuzz("binary")
@given(record=near_valid_binary())
def test_near_valid_binary_events_with_arbitrary_headers_are_decoded_or_refused(record: KafkaRecord) -> None:
    decodes_or_refuses(record)


@fuzz("expected")
@given(record=kafka_records)
def test_a_reader_expecting_one_type_decodes_only_that_type_or_refuses(record: KafkaRecord) -> None:
    decodes_or_refuses(record, RecordSubmitted)


@pytest.mark.parametrize(
    "case", ["integer-past-digit-limit", "integer-past-digit-limit-binary-mode", "nul-bytes-read-as-utf-16"]
)
def test_json_the_parser_refuses_with_a_value_error_is_invalid_json(case: str) -> None:
    """Found by this fuzzing, fixed: ``_parse_json`` (``llmops_events/envelope.py``) catches
    ``JSONDecodeError`` and ``RecursionError`` only, and ``json.loads`` raises other ``ValueError``s:
    for an integer of more than 4,300 digits (Python's limit on parsing integers), and
    ``UnicodeDecodeError`` for bytes that are valid UTF-8 but start with NUL bytes, which it takes
    for UTF-16 or UTF-32 (``b"\\x00\\x01\\x00\\x00\\x00"``). ``decode`` lets them out instead of refusing the
    message as ``invalid_json`` (the consumer still dead-letters it, as ``undecodable``)."""
    huge = b"9" * 5_000
    if case == "integer-past-digit-limit":
        value = json.dumps(VALID_STRUCTURED[0]).replace('"acme"', "HUGE", 1).encode().replace(b"HUGE", huge)
        record = KafkaRecord(key=None, value=value)
    elif case == "integer-past-digit-limit-binary-mode":
        headers = (
            ("ce_specversion", b"1.0"),
            ("ce_id", b"e-1"),
            ("ce_source", b"/fuzz"),
            ("ce_type", b"llmops.record.submitted.v1"),
            ("content-type", b"application/json"),
        )
        record = KafkaRecord(key=None, value=b'{"tenant":' + huge + b"}", headers=headers)
    else:
        record = KafkaRecord(key=None, value=b"\x00\x01\x00\x00\x00")
    assert decodes_or_refuses(record) == DeadLetterReason.INVALID_JSON


@pytest.mark.parametrize("mode", ["structured", "binary", "binary-empty-content-type", "binary-text-json"])
def test_json_nested_just_below_the_parsers_limit_is_refused(mode: str) -> None:
    """Found by this fuzzing, fixed: a document nested just below the recursion limit passes
    ``_parse_json`` and is then parsed again by the CloudEvents SDK (``from_kafka``), a few frames
    deeper, where it raises ``RecursionError``; ``_read_cloudevent`` does not catch it, so ``decode``
    lets it out (the consumer still dead-letters it, as ``undecodable``). The window is a couple of
    depths wide and moves with the caller's stack (988-990 deep from a plain script), so every depth
    around the limit is tried. In binary mode with an empty content type or ``text/json``, which the
    SDK parses as JSON and ``decode`` does not, every depth past the limit fails the same way."""
    limit = sys.getrecursionlimit()
    binary = VALID_BINARY[0]
    for depth in range(max(1, limit - 400), limit + 50):  # past the limit too: the content-type cases
        nested = b"[" * depth + b"1" + b"]" * depth
        if mode.startswith("binary"):
            content_type = {"binary": b"application/json", "binary-empty-content-type": b""}.get(mode, b"text/json")
            record = with_value(binary, nested, content_type)
        else:
            envelope = dict(VALID_STRUCTURED[0], data="DATA")
            record = KafkaRecord(None, json.dumps(envelope).encode().replace(b'"DATA"', nested))
        decodes_or_refuses(record)


# ---------------------------------------------------------------------------------------------
# The consumer path: never raises, dead-letters once with the decoder's reason
# ---------------------------------------------------------------------------------------------


class InMemoryDeadLetterQueue:
    """In-memory stand-in for ``DeadLetterQueue``: keeps what would have been sent to the DLQ topic
    (the real one, on Kafka, is covered by the integration tests)."""

    def __init__(self) -> None:
        self.sent: list[dict[str, Any]] = []

    async def send(self, record: KafkaRecord, *, origin: Origin, stage: str, reason: str, detail: str) -> None:
        self.sent.append({"record": record, "origin": origin, "stage": stage, "reason": reason, "detail": detail})


class ConsumerUnderFuzz:
    """An ``EventConsumer`` with a real SQLite ``ProcessedEvents`` (in a temporary folder), the
    in-memory DLQ and handlers that apply records: per event, and (a second consumer) a batch at a time."""

    def __init__(self, folder: Path) -> None:
        self.dlq = InMemoryDeadLetterQueue()
        self.applied: list[str] = []
        self.offset = 0
        policy = RetryPolicy(max_attempts=1, base_delay_s=0.0, max_delay_s=0.0, jitter=0.0, budget_s=1.0)

        async def apply(envelope: Envelope[Any]) -> None:
            self.applied.append(envelope.id)

        async def apply_batch(deliveries: Sequence[Delivery]) -> list[Rejected | None]:
            self.applied.extend(delivery.envelope.id for delivery in deliveries)
            return [None] * len(deliveries)

        self.per_event = EventConsumer(
            group_id="fuzz",
            handlers={RecordSubmitted: apply},
            dlq=self.dlq,  # type: ignore[arg-type]
            processed=ProcessedEvents(folder / "per-event.db", consumer="fuzz"),
            retry=policy,
        )
        self.batched = EventConsumer(
            group_id="fuzz-batch",
            handlers={},
            batch_handlers={RecordSubmitted: apply_batch},
            dlq=self.dlq,  # type: ignore[arg-type]
            processed=ProcessedEvents(folder / "batched.db", consumer="fuzz-batch"),
            retry=policy,
        )

    def next_origin(self, group: str) -> Origin:
        self.offset += 1
        return Origin("llmops.records.raw.v1", self.offset % 6, self.offset, group)


@pytest.fixture(scope="module")
def loop() -> Iterator[asyncio.AbstractEventLoop]:
    loop = asyncio.new_event_loop()
    yield loop
    loop.close()


@pytest.fixture(scope="module")
def consumer() -> Iterator[ConsumerUnderFuzz]:
    with tempfile.TemporaryDirectory(prefix="fuzz-consumer-") as folder:
        yield ConsumerUnderFuzz(Path(folder))


def _expected_reason(record: KafkaRecord) -> str | None:
    """The reason the consumer must dead-letter ``record`` with, or None if it decodes."""
    try:
        decode(record)
    except DecodeError as error:
        return str(error.reason)
    except Exception:  # a decoder defect: the consumer still dead-letters it, as ``undecodable``
        return DeadLetterReason.UNDECODABLE
    return None


def same_reason(reason: str, expected: str, record: KafkaRecord) -> bool:
    """The consumer's reason is the one ``decode`` gives here, except for JSON nested near the
    recursion limit: the consumer decodes it a few frames deeper, where a parser may give up that
    did not give up here (then any reason of the catalogue will do; the caller checks that)."""
    nested_deeply = max(record.value.count(b"["), record.value.count(b'{"a":')) >= 400
    return reason == expected or nested_deeply


@fuzz("consumer")
@given(record=any_kafka_records)
def test_the_consumer_never_raises_and_dead_letters_what_it_cannot_decode_once(
    consumer: ConsumerUnderFuzz, loop: asyncio.AbstractEventLoop, record: KafkaRecord
) -> None:
    origin = consumer.next_origin("fuzz")
    letters_before = len(consumer.dlq.sent)
    outcome = loop.run_until_complete(consumer.per_event.process(record, origin))
    expected = _expected_reason(record)
    event(f"outcome: {outcome.value}" + (f" ({expected})" if expected else ""))
    if expected is None:
        assert outcome in (Outcome.HANDLED, Outcome.DUPLICATE, Outcome.IGNORED)
        assert len(consumer.dlq.sent) == letters_before
        return
    assert outcome is Outcome.DEAD_LETTERED
    assert len(consumer.dlq.sent) == letters_before + 1
    letter = consumer.dlq.sent[-1]
    assert letter["reason"] in CATALOGUE
    assert same_reason(letter["reason"], expected, record)
    assert letter["stage"] == "decode" and letter["detail"].strip()
    assert letter["record"] == record and letter["origin"] == origin  # byte for byte, with its position
    # Delivered again at the same position (a batch redelivered): skipped, never dead-lettered twice.
    again = loop.run_until_complete(consumer.per_event.process(record, origin))
    assert again is Outcome.DUPLICATE
    assert len(consumer.dlq.sent) == letters_before + 1


@fuzz("batch")
@given(records=st.lists(any_kafka_records, min_size=1, max_size=12))
def test_a_batch_consumer_never_raises_and_dead_letters_each_bad_message_alone(
    consumer: ConsumerUnderFuzz, loop: asyncio.AbstractEventLoop, records: list[KafkaRecord]
) -> None:
    batch = [(record, consumer.next_origin("fuzz-batch")) for record in records]
    letters_before = len(consumer.dlq.sent)
    outcomes = loop.run_until_complete(consumer.batched.process_batch(batch))
    assert len(outcomes) == len(records)
    expected = [_expected_reason(record) for record in records]
    letters = consumer.dlq.sent[letters_before:]
    refused = [(reason, record) for reason, record in zip(expected, records, strict=True) if reason is not None]
    assert len(letters) == len(refused)
    for letter, (reason, record) in zip(letters, refused, strict=True):
        assert letter["reason"] in CATALOGUE and same_reason(letter["reason"], reason, record)
    for outcome, reason in zip(outcomes, expected, strict=True):
        assert (outcome is Outcome.DEAD_LETTERED) == (reason is not None)
    # The whole batch delivered again: nothing new reaches the DLQ, nothing is applied twice.
    applied_before = len(consumer.applied)
    loop.run_until_complete(consumer.batched.process_batch(batch))
    assert len(consumer.dlq.sent) == letters_before + len(letters)
    assert len(consumer.applied) == applied_before
