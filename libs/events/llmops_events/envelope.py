"""The CloudEvents 1.0 envelope and its Kafka protocol binding (structured and binary modes).

The wire mechanics (``ce_*`` headers, ``content-type``, structured JSON) are the CloudEvents
SDK's; the common case, a binary-mode JSON event, is encoded and decoded here directly (unit
tests hold both to the SDK's results), since the SDK's path is most of a busy producer's or
consumer's cost per event. This module adds the platform's typed view: an ``Envelope[Data]`` whose
``data`` is validated against the pydantic model registered for the event's ``type``.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from datetime import UTC, datetime
from enum import StrEnum
from functools import cache
from typing import Any, Generic, Literal, TypeVar
from uuid import uuid4

from cloudevents.core.bindings import kafka as ce_kafka
from cloudevents.core.exceptions import BaseCloudEventException
from cloudevents.core.formats.json import JSONFormat
from cloudevents.core.v1.event import CloudEvent
from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

from llmops_events.base import EventData, model_for
from llmops_events.reasons import DeadLetterReason as Reason

DataT = TypeVar("DataT", bound=EventData)

STRUCTURED_CONTENT_TYPE = "application/cloudevents+json"
_JSON = JSONFormat()
REQUIRED_ATTRIBUTES = ("specversion", "id", "source", "type")
"""Required by CloudEvents 1.0 and by this platform, in both content modes: non-empty strings."""


class ContentMode(StrEnum):
    """The two content modes of the CloudEvents Kafka protocol binding."""

    BINARY = "binary"
    STRUCTURED = "structured"


class Envelope(BaseModel, Generic[DataT]):
    """A CloudEvent carrying one of the platform's event payloads.

    ``traceparent`` is the W3C Distributed Tracing extension; ``correlationid`` ties every
    event of one pass through the loop (record → training → deployment → drift) together.
    """

    model_config = ConfigDict(frozen=True)

    specversion: Literal["1.0"] = "1.0"
    id: str = Field(default_factory=lambda: str(uuid4()), min_length=1)
    source: str = Field(min_length=1, examples=["/llmops/ingestion"])
    type: str = Field(min_length=1, examples=["llmops.record.submitted.v1"])
    time: datetime = Field(default_factory=lambda: datetime.now(UTC))
    subject: str | None = None
    datacontenttype: Literal["application/json"] = "application/json"
    traceparent: str | None = Field(default=None, pattern=r"^[0-9a-f]{2}-[0-9a-f]{32}-[0-9a-f]{16}-[0-9a-f]{2}$")
    correlationid: str | None = None
    data: DataT

    @model_validator(mode="after")
    def _type_matches_data(self) -> Envelope[DataT]:
        expected = type(self.data).event_type
        if self.type != expected:
            raise ValueError(f"envelope type {self.type!r} does not match its data model ({expected!r})")
        return self

    @classmethod
    def wrap(
        cls,
        data: DataT,
        *,
        source: str,
        subject: str | None = None,
        correlationid: str | None = None,
        traceparent: str | None = None,
        id: str | None = None,
    ) -> Envelope[DataT]:
        """Wrap a payload in a new envelope of the payload's event type."""
        fields: dict[str, Any] = {"source": source, "type": data.event_type, "data": data}
        fields.update(subject=subject, correlationid=correlationid, traceparent=traceparent)
        if id is not None:
            fields["id"] = id
        return envelope_of(type(data))(**fields)

    @property
    def key(self) -> str:
        return self.data.key

    @property
    def topic(self) -> str:
        return self.data.topic


@cache
def envelope_of(model: type[DataT]) -> type[Envelope[DataT]]:
    """``Envelope[model]``, looked up once: pydantic's own lookup of a parametrised model costs
    more than validating a small event, and consumers build one envelope per message."""
    return Envelope[model]  # type: ignore[valid-type]


@dataclass(frozen=True, slots=True)
class KafkaRecord:
    """What goes on (or comes off) the wire: key, value and headers as aiokafka sees them."""

    key: bytes | None
    value: bytes
    headers: tuple[tuple[str, bytes], ...] = ()

    def header(self, name: str) -> bytes | None:
        for header_name, value in self.headers:
            if header_name.lower() == name.lower():
                return value
        return None


class DecodeError(Exception):
    """A message that is not a valid event of this platform. ``reason`` is a stable code for the DLQ."""

    def __init__(self, reason: str, detail: str) -> None:
        super().__init__(f"{reason}: {detail}")
        self.reason = reason
        self.detail = detail


def encode(envelope: Envelope[Any], mode: ContentMode = ContentMode.BINARY) -> KafkaRecord:
    """Serialise an envelope for Kafka in the chosen content mode, keyed by the topic's key."""
    if mode is ContentMode.BINARY:
        return _encode_plain_binary(envelope)
    return _encode_with_sdk(envelope, mode)


# Envelope attributes in the order the SDK writes their headers (``datacontenttype`` as content-type).
_HEADER_ATTRIBUTES = (
    "specversion",
    "id",
    "source",
    "type",
    "time",
    "subject",
    "datacontenttype",
    "traceparent",
    "correlationid",
)


def _encode_plain_binary(envelope: Envelope[Any]) -> KafkaRecord:
    """Binary mode without the SDK: the same headers and key as ``to_binary`` writes, and the
    payload serialised by pydantic-core in one call. The SDK's ``json.dumps`` of the dumped
    payload costs ~6x more (~120 us for an inference log with 77 scores, most of the gateway's
    per-prediction logging cost); the bytes differ only in JSON whitespace and escaping, the
    value is the same (a unit test compares the two)."""
    headers: list[tuple[str, bytes]] = []
    for name in _HEADER_ATTRIBUTES:
        value = getattr(envelope, name)
        if value is None:
            continue
        if name == "datacontenttype":
            headers.append(("content-type", value.encode()))
        elif name == "time":
            text = value.isoformat()
            headers.append(("ce_time", (text[:-6] + "Z" if text.endswith("+00:00") else text).encode()))
        else:
            headers.append((f"ce_{name}", value.encode()))
    data = envelope.data
    return KafkaRecord(
        key=envelope.key.encode(), value=data.__pydantic_serializer__.to_json(data), headers=tuple(headers)
    )


def _encode_with_sdk(envelope: Envelope[Any], mode: ContentMode) -> KafkaRecord:
    """``encode`` through the CloudEvents SDK: every content mode."""
    attributes = envelope.model_dump(mode="json", exclude={"data"}, exclude_none=True)
    attributes["time"] = envelope.time
    event = CloudEvent(attributes=attributes, data=envelope.data.model_dump(mode="json"))
    key = envelope.key

    def key_of(_: Any) -> str:
        return key

    if mode is ContentMode.BINARY:
        message = ce_kafka.to_binary(event, _JSON, key_mapper=key_of)
    else:
        message = ce_kafka.to_structured(event, _JSON, key_mapper=key_of)
    message_key = message.key.encode() if isinstance(message.key, str) else message.key
    return KafkaRecord(key=message_key, value=message.value, headers=tuple(message.headers.items()))


def decode(record: KafkaRecord, expected: type[DataT] | None = None) -> Envelope[DataT]:
    """Parse a Kafka message in either content mode into a typed envelope.

    Raises ``DecodeError`` with one of the reasons ``undecodable_bytes``, ``invalid_json``,
    ``invalid_envelope``, ``unknown_event_type``, ``unexpected_event_type`` or
    ``schema_violation`` (``DeadLetterReason``). Anything else it raises is a bug of the decoder,
    which a consumer dead-letters as ``undecodable``.
    """
    envelope = _decode_plain_binary(record, expected)
    if envelope is not None:
        return envelope
    return _decode_with_sdk(record, expected)


# The ce_ headers the platform's own producers write; a message with any other takes the SDK path.
_PLAIN_ATTRIBUTES = {f"ce_{name}": name for name in _HEADER_ATTRIBUTES if name != "datacontenttype"}


def _decode_plain_binary(record: KafkaRecord, expected: type[EventData] | None) -> Envelope[Any] | None:
    """The fast path for the common case, a binary-mode JSON event as our producers write it:
    headers read directly and the payload validated straight from the bytes (one parse in
    pydantic-core instead of ``json.loads`` twice, the SDK's event object, then validation) —
    ~10x cheaper, and decoding is most of the per-message cost of a busy consumer.

    Returns None whenever anything is unusual (other headers, another content type, a payload
    or attribute that does not validate): the SDK path then decides, so every accepted message
    and every DLQ reason is the SDK path's own (a unit test compares the two).
    """
    attributes: dict[str, str] = {}
    try:
        for name, raw in record.headers:
            text = raw.decode("utf-8")
            attribute = _PLAIN_ATTRIBUTES.get(name)
            if attribute is not None:
                if attribute in attributes:
                    return None
                attributes[attribute] = text
            elif name == "content-type":
                if text != "application/json":
                    return None
            elif name.lower().startswith("ce_") or name.lower() == "content-type":
                return None
        record.value.decode("utf-8")
    except UnicodeDecodeError:
        return None
    if attributes.get("specversion") != "1.0" or not all(attributes.get(name) for name in REQUIRED_ATTRIBUTES):
        return None  # a missing id would get a fresh UUID from Envelope's default: the SDK path refuses it
    model = model_for(attributes.get("type", ""))
    if model is None or (expected is not None and model is not expected):
        return None
    fields: dict[str, Any] = dict(attributes)
    if "time" in fields:
        try:
            fields["time"] = datetime.fromisoformat(fields["time"])
        except ValueError:
            return None
    try:
        payload = model.model_validate_json(record.value)
        return envelope_of(model)(**fields, data=payload)
    except ValidationError:
        return None


def _decode_with_sdk(record: KafkaRecord, expected: type[DataT] | None = None) -> Envelope[DataT]:
    """``decode`` through the CloudEvents SDK: every content mode and every failure reason."""
    attributes, data = _read_cloudevent(record)
    event_type = attributes.get("type")
    model = model_for(str(event_type)) if event_type else None
    if model is None:
        raise DecodeError(Reason.UNKNOWN_EVENT_TYPE, f"no event model for type {event_type!r}")
    if expected is not None and model is not expected:
        raise DecodeError(Reason.UNEXPECTED_EVENT_TYPE, f"expected {expected.event_type!r}, got {event_type!r}")
    try:
        payload = model.model_validate(data)
    except ValidationError as error:
        raise DecodeError(Reason.SCHEMA_VIOLATION, _summarise(error)) from error
    envelope_fields = {k: v for k, v in attributes.items() if k in Envelope.model_fields and k != "data"}
    try:
        return envelope_of(model)(**envelope_fields, data=payload)  # type: ignore[return-value]
    except ValidationError as error:
        raise DecodeError(Reason.INVALID_ENVELOPE, _summarise(error)) from error


def _read_cloudevent(record: KafkaRecord) -> tuple[dict[str, Any], Any]:
    """Read CloudEvents attributes and data with the SDK, mapping its failures to DLQ reasons."""
    headers = {name: value for name, value in record.headers}
    binary = any(name.lower().startswith("ce_") for name in headers)
    try:
        for value in (record.value, *headers.values()):
            value.decode("utf-8")
    except UnicodeDecodeError as error:
        raise DecodeError(Reason.UNDECODABLE_BYTES, f"message is not UTF-8: {error}") from error
    if not binary:
        document = _parse_json(record.value, "value")
        if not isinstance(document, dict):
            raise DecodeError(Reason.INVALID_ENVELOPE, f"not a CloudEvent: a JSON {type(document).__name__}")
        present = {name: document.get(name) for name in REQUIRED_ATTRIBUTES}
    else:
        if _declares_json(headers):
            _parse_json(record.value, "binary-mode data")
        present = {name: headers.get(f"ce_{name}") for name in REQUIRED_ATTRIBUTES}
    # Checked on the message itself: the SDK fills a missing ``id`` (a fresh UUID) and
    # ``specversion`` in, which would accept an event no redelivery could be matched with.
    missing = [name for name, value in present.items() if value is None or value in ("", b"")]
    if missing:
        raise DecodeError(
            Reason.INVALID_ENVELOPE, f"required CloudEvents attributes missing or empty: {', '.join(missing)}"
        )
    message = ce_kafka.KafkaMessage(headers=headers, key=record.key, value=record.value)
    try:
        event = ce_kafka.from_kafka(message, _JSON)
    except (BaseCloudEventException, ValueError, TypeError, KeyError, AttributeError) as error:
        raise DecodeError(Reason.INVALID_ENVELOPE, f"not a CloudEvent: {error}") from error
    except RecursionError as error:  # the SDK parses the value again, a few frames deeper than we did
        raise DecodeError(Reason.INVALID_JSON, "the value is JSON nested too deeply to parse") from error
    attributes = dict(event.get_attributes())
    attributes.pop("partitionkey", None)  # added by the SDK from the message key
    return attributes, event.get_data()


def _parse_json(value: bytes, what: str) -> Any:
    try:
        return json.loads(value)
    except json.JSONDecodeError as error:
        raise DecodeError(Reason.INVALID_JSON, f"{what} is not JSON: {error}") from error
    except RecursionError as error:  # '[[[[...' thousands deep: the parser gives up, the message is refused
        raise DecodeError(Reason.INVALID_JSON, f"{what} is JSON nested too deeply to parse") from error
    except ValueError as error:  # an integer past Python's digit limit; NUL-led bytes read as UTF-16/32
        raise DecodeError(Reason.INVALID_JSON, f"{what} is not JSON this platform parses: {error}") from error


def _declares_json(headers: dict[str, bytes]) -> bool:
    content_type = headers.get("content-type", b"application/json").decode()
    return content_type.startswith("application/json") or content_type.endswith("+json")


def _summarise(error: ValidationError) -> str:
    """A short, readable account of what failed validation, field by field."""
    parts = []
    for issue in error.errors()[:5]:
        location = ".".join(str(part) for part in issue["loc"]) or "(root)"
        parts.append(f"{location}: {issue['msg']}")
    more = error.error_count() - len(parts)
    return "; ".join(parts) + (f" (+{more} more)" if more > 0 else "")
