"""Header names of the platform's Kafka messages, in one place."""

ERROR_STAGE = "error.stage"
"""Which step refused the message: ``decode``, ``validate``, ``handle``, ..."""
ERROR_REASON = "error.reason"
"""A stable machine-readable code, e.g. ``invalid_json`` or ``schema_violation``."""
ERROR_DETAIL = "error.detail"
"""A sentence a person can act on."""
ERROR_TOPIC = "error.topic"
ERROR_PARTITION = "error.partition"
ERROR_OFFSET = "error.offset"
ERROR_CONSUMER_GROUP = "error.consumer_group"
ERROR_TIME = "error.time"

DLQ_HEADERS = frozenset(
    {
        ERROR_STAGE,
        ERROR_REASON,
        ERROR_DETAIL,
        ERROR_TOPIC,
        ERROR_PARTITION,
        ERROR_OFFSET,
        ERROR_CONSUMER_GROUP,
        ERROR_TIME,
    }
)

TRACEPARENT = "ce_traceparent"
