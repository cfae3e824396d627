"""The catalogue of the platform's own DLQ reasons (the ``error.reason`` header).

Decoding (``llmops_events.decode``) and the consumer (``llmops_messaging.EventConsumer``) dead-letter
with these reasons; a handler's ``Rejected(reason, ...)`` adds service-specific ones on top. The
manual's table of DLQ reasons (docs/events.md) lists exactly these (a unit test keeps the two in sync).
"""

from __future__ import annotations

from enum import StrEnum


class DeadLetterReason(StrEnum):
    """Why the platform itself refused a message. A ``StrEnum``: each member *is* its code string."""

    UNDECODABLE_BYTES = "undecodable_bytes"
    INVALID_JSON = "invalid_json"
    INVALID_ENVELOPE = "invalid_envelope"
    UNKNOWN_EVENT_TYPE = "unknown_event_type"
    UNEXPECTED_EVENT_TYPE = "unexpected_event_type"
    SCHEMA_VIOLATION = "schema_violation"
    UNDECODABLE = "undecodable"
    HANDLER_FAILED = "handler_failed"
    ATTEMPTS_EXHAUSTED = "attempts_exhausted"

    @property
    def meaning(self) -> str:
        return _MEANINGS[self]


_MEANINGS: dict[DeadLetterReason, str] = {
    DeadLetterReason.UNDECODABLE_BYTES: "the value or a header is not UTF-8",
    DeadLetterReason.INVALID_JSON: (
        "the value is not JSON (structured mode, or binary mode with a JSON content type), or is nested too deeply"
    ),
    DeadLetterReason.INVALID_ENVELOPE: (
        "not a CloudEvent: a required attribute (`specversion`, `id`, `source`, `type`) is missing, empty or"
        " malformed, in either content mode"
    ),
    DeadLetterReason.UNKNOWN_EVENT_TYPE: "`type` is not an event type of this platform",
    DeadLetterReason.UNEXPECTED_EVENT_TYPE: "a reader that expects one event type got another",
    DeadLetterReason.SCHEMA_VIOLATION: "`data` does not match the event's model; `error.detail` names each field",
    DeadLetterReason.UNDECODABLE: (
        "decoding failed with an error the decoder does not expect; `error.detail` has the exception's type"
    ),
    DeadLetterReason.HANDLER_FAILED: (
        "the handler failed on every attempt of the retry policy; `error.detail` has the attempts and the last error"
    ),
    DeadLetterReason.ATTEMPTS_EXHAUSTED: (
        "the handler was started as many times as the retry policy allows and never finished (the process died"
        " or was killed in it each time); dead-lettered without running it again"
    ),
}
