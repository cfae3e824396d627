"""Business rules a record must meet beyond its schema; each failure has a stable DLQ reason."""

from __future__ import annotations

from collections.abc import Collection
from dataclasses import dataclass, field
from enum import StrEnum


class RejectReason(StrEnum):
    """Stable ``error.reason`` codes of the ``validate`` stage (decode reasons come from llmops_events)."""

    TEXT_TOO_LONG = "text_too_long"
    EMPTY_TEXT = "empty_text"
    UNKNOWN_LABEL = "unknown_label"
    INVALID_LABEL = "invalid_label"


@dataclass(frozen=True, slots=True)
class RuleViolation:
    reason: RejectReason
    detail: str


@dataclass(frozen=True, slots=True)
class ValidationRules:
    """The configurable rules; an empty ``allowed_labels`` means the label set is open."""

    max_text_length: int = 8000
    allowed_labels: Collection[str] = field(default_factory=frozenset)


def check_record(*, text: str, label: str | None, rules: ValidationRules) -> RuleViolation | None:
    """The first rule ``text``/``label`` break, or None when the record may be curated."""
    if len(text) > rules.max_text_length:
        return RuleViolation(
            RejectReason.TEXT_TOO_LONG, f"text has {len(text)} characters; the limit is {rules.max_text_length}"
        )
    if not text.strip():
        return RuleViolation(RejectReason.EMPTY_TEXT, "text is empty after trimming whitespace")
    return check_label(label, rules=rules)


def check_label(label: str | None, *, rules: ValidationRules) -> RuleViolation | None:
    """Labels must be non-blank and, when a closed label set is configured, one of it."""
    if label is None:
        return None
    if not label.strip() or label != label.strip():
        return RuleViolation(RejectReason.INVALID_LABEL, f"label {label!r} is blank or has surrounding whitespace")
    if rules.allowed_labels and label not in rules.allowed_labels:
        return RuleViolation(RejectReason.UNKNOWN_LABEL, f"label {label!r} is not in the configured label set")
    return None
