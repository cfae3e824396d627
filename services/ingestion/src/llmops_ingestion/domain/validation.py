"""Business rules a record or an instruction example must meet beyond its schema; each failure
has a stable DLQ reason."""

from __future__ import annotations

import json
from collections.abc import Collection, Mapping, Sequence
from dataclasses import dataclass, field
from enum import StrEnum
from typing import Any

from llmops_models.json_schema import SchemaError, schema_errors, unsupported_schema


class RejectReason(StrEnum):
    """Stable ``error.reason`` codes of the ``validate`` stage (decode reasons come from llmops_events)."""

    TEXT_TOO_LONG = "text_too_long"
    EMPTY_TEXT = "empty_text"
    UNKNOWN_LABEL = "unknown_label"
    INVALID_LABEL = "invalid_label"
    # Instruction examples (every turn is also held to TEXT_TOO_LONG and EMPTY_TEXT):
    INVALID_TURNS = "invalid_turns"
    TOO_MANY_TOKENS = "too_many_tokens"
    INVALID_OUTPUT_FORMAT = "invalid_output_format"
    INVALID_ANSWER_FORMAT = "invalid_answer_format"

    @property
    def meaning(self) -> str:
        return _MEANINGS[self]


_MEANINGS: dict[RejectReason, str] = {
    RejectReason.TEXT_TOO_LONG: (
        "a record's text, or a turn of an instruction example, is longer than `LLMOPS_INGESTION_MAX_TEXT_LENGTH`"
        " characters"
    ),
    RejectReason.EMPTY_TEXT: "a record's text, or a turn of an instruction example, is blank",
    RejectReason.UNKNOWN_LABEL: "the label is not in the closed label set (`LLMOPS_INGESTION_ALLOWED_LABELS`)",
    RejectReason.INVALID_LABEL: "the label is blank or has surrounding whitespace",
    RejectReason.INVALID_TURNS: (
        "the roles of an instruction example are not in order: an optional leading `system` turn, then `user`"
        " and `assistant` alternating, starting with `user`, ending with `assistant`; `error.detail` says where"
    ),
    RejectReason.TOO_MANY_TOKENS: (
        "the example's chat (the tokenizer's chat template over every turn) is longer than"
        " `LLMOPS_INGESTION_MAX_INSTRUCTION_TOKENS` tokens"
    ),
    RejectReason.INVALID_OUTPUT_FORMAT: (
        "the declared `output_format` is unusable: a blank, padded or repeated label, or a JSON Schema that is not"
        " one or uses a keyword outside the supported subset (named in `error.detail`)"
    ),
    RejectReason.INVALID_ANSWER_FORMAT: (
        "the reference answer (the final assistant turn) is not one of the declared labels, or is not JSON valid"
        " against the declared JSON Schema"
    ),
}

ROLE_SYSTEM = "system"
ROLE_USER = "user"
ROLE_ASSISTANT = "assistant"


@dataclass(frozen=True, slots=True)
class RuleViolation:
    reason: RejectReason
    detail: str


@dataclass(frozen=True, slots=True)
class ValidationRules:
    """The configurable rules; an empty ``allowed_labels`` means the label set is open."""

    max_text_length: int = 8000
    allowed_labels: Collection[str] = field(default_factory=frozenset)
    max_instruction_tokens: int = 1024
    """Longest instruction example, in tokens of the chat template over all of its turns."""


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


# --- instruction examples ---------------------------------------------------------------------


def check_turns(roles: Sequence[str], contents: Sequence[str], *, rules: ValidationRules) -> RuleViolation | None:
    """The first rule the turns of an instruction example break, or None.

    Roles: an optional leading ``system`` turn, then ``user`` and ``assistant`` alternating, starting
    with ``user`` and ending with ``assistant`` (the reference answer). Each turn's content is held
    to the rules of a record's text (not blank, at most ``max_text_length`` characters).
    """
    if not roles:
        return RuleViolation(RejectReason.INVALID_TURNS, "the example has no turns")
    first = 1 if roles[0] == ROLE_SYSTEM else 0
    for index in range(first, len(roles)):
        expected = ROLE_USER if (index - first) % 2 == 0 else ROLE_ASSISTANT
        if roles[index] != expected:
            where = "a system turn is only allowed first" if roles[index] == ROLE_SYSTEM else f"expected {expected!r}"
            return RuleViolation(
                RejectReason.INVALID_TURNS,
                f"turn {index + 1} of {len(roles)} is {roles[index]!r}: {where} (an optional system turn, then"
                " user and assistant alternating, starting with user)",
            )
    if len(roles) == first:
        return RuleViolation(
            RejectReason.INVALID_TURNS, "the example has a system turn only; it needs user and assistant"
        )
    if roles[-1] != ROLE_ASSISTANT:
        return RuleViolation(
            RejectReason.INVALID_TURNS,
            f"the last of {len(roles)} turns is {roles[-1]!r}; an example ends with the assistant's answer",
        )
    for index, (role, content) in enumerate(zip(roles, contents, strict=True)):
        if len(content) > rules.max_text_length:
            return RuleViolation(
                RejectReason.TEXT_TOO_LONG,
                f"turn {index + 1} ({role}) has {len(content)} characters; the limit is {rules.max_text_length}",
            )
        if not content.strip():
            return RuleViolation(RejectReason.EMPTY_TEXT, f"turn {index + 1} ({role}) is blank")
    return None


def check_corrected_answer(text: str, *, rules: ValidationRules) -> RuleViolation | None:
    """A corrected answer (feedback on a generation) is held to the rules of a turn. Details never
    echo the answer."""
    if len(text) > rules.max_text_length:
        return RuleViolation(
            RejectReason.TEXT_TOO_LONG,
            f"the corrected answer has {len(text)} characters; the limit is {rules.max_text_length}",
        )
    if not text.strip():
        return RuleViolation(RejectReason.EMPTY_TEXT, "the corrected answer is blank")
    return None


def check_output_format(labels: Sequence[str] | None, json_schema: Mapping[str, Any] | None) -> RuleViolation | None:
    """Whether a declared answer format can be checked: labels non-blank, unpadded and distinct; a
    JSON Schema within the supported subset (``answer_format``)."""
    if labels is not None:
        for label in labels:
            if not label.strip() or label != label.strip():
                return RuleViolation(
                    RejectReason.INVALID_OUTPUT_FORMAT, f"label {label!r} is blank or has surrounding whitespace"
                )
        if len(set(labels)) != len(labels):
            return RuleViolation(RejectReason.INVALID_OUTPUT_FORMAT, "the labels repeat a label")
    if json_schema is not None:
        problem = unsupported_schema(json_schema)
        if problem is not None:
            return RuleViolation(RejectReason.INVALID_OUTPUT_FORMAT, f"json_schema: {problem}")
    return None


def check_token_count(tokens: int, *, rules: ValidationRules) -> RuleViolation | None:
    if tokens > rules.max_instruction_tokens:
        return RuleViolation(
            RejectReason.TOO_MANY_TOKENS,
            f"the chat has {tokens} tokens (the chat template over every turn); the limit is"
            f" {rules.max_instruction_tokens}",
        )
    return None


def check_answer(
    answer: str, *, labels: Sequence[str] | None, json_schema: Mapping[str, Any] | None
) -> RuleViolation | None:
    """Whether the reference answer has the declared format. Details never echo the answer."""
    if labels is not None and answer not in labels:
        return RuleViolation(
            RejectReason.INVALID_ANSWER_FORMAT,
            f"the answer ({len(answer)} characters) is not one of the {len(labels)} declared labels",
        )
    if json_schema is not None:
        try:
            document = json.loads(answer, parse_constant=_not_json)
        except (ValueError, RecursionError) as error:  # also the integer-digits limit, and nesting
            return RuleViolation(
                RejectReason.INVALID_ANSWER_FORMAT,
                f"the answer is not JSON ({type(error).__name__} at {_where(error)})",
            )
        try:
            errors: list[SchemaError] = schema_errors(document, json_schema)
        except RecursionError:  # an answer nested thousands deep, compared with an enum or const
            return RuleViolation(RejectReason.INVALID_ANSWER_FORMAT, "the answer is nested too deeply")
        if errors:
            first = errors[0]
            return RuleViolation(
                RejectReason.INVALID_ANSWER_FORMAT,
                f"the answer does not match json_schema: {len(errors)} error(s), first at {first.path or '/'}:"
                f" {first.message}",
            )
    return None


def _not_json(constant: str) -> Any:
    raise ValueError(f"{constant} is not JSON")


def _where(error: Exception) -> str:
    position = getattr(error, "pos", None)
    return f"character {position}" if position is not None else "its start"
