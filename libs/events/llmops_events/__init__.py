"""The platform's event contracts: CloudEvents envelope, event models and topics."""

from llmops_events.base import EventData, event_types, model_for
from llmops_events.envelope import ContentMode, DecodeError, Envelope, KafkaRecord, decode, encode
from llmops_events.ids import derived_id
from llmops_events.reasons import DeadLetterReason

__all__ = [
    "ContentMode",
    "DeadLetterReason",
    "DecodeError",
    "Envelope",
    "EventData",
    "KafkaRecord",
    "decode",
    "derived_id",
    "encode",
    "event_types",
    "model_for",
]
