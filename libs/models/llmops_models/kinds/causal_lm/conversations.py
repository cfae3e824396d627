"""Instructions snapshots as the causal_lm kind reads them: conversations and output formats.

An instructions snapshot (manifest ``content: "instructions"``) has the rows ``record_id``,
``tenant``, ``source``, ``split``, ``text`` (the last user turn), ``label`` (the final assistant
turn: the reference answer), ``messages_json`` (every turn as a JSON array of ``{"role",
"content"}``, the final assistant turn included) and ``output_format_json`` (``{"labels": [...] |
null, "json_schema": {...} | null}`` as JSON, or ``""``).
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

INSTRUCTIONS_CONTENT = "instructions"
RECORDS_CONTENT = "records"
"""The series of every other snapshot (texts with labels; manifests without ``content`` too)."""
MESSAGES_COLUMN = "messages_json"
OUTPUT_FORMAT_COLUMN = "output_format_json"
ROLES = frozenset({"system", "user", "assistant"})


def snapshot_content(manifest: Mapping[str, Any]) -> str:
    """``instructions`` for an instructions snapshot, ``records`` (texts with labels) for any other."""
    return INSTRUCTIONS_CONTENT if manifest.get("content") == INSTRUCTIONS_CONTENT else RECORDS_CONTENT


class InvalidConversation(ValueError):
    """A ``messages_json`` value that is not a conversation ending with an assistant answer."""


def parse_messages(value: Any) -> list[dict[str, str]]:
    """The turns of ``messages_json``: a JSON array of ``{"role", "content"}`` objects with known
    roles and string contents, at least one user turn, the last turn the assistant's answer.
    ``InvalidConversation`` (saying what is wrong) otherwise."""
    if not isinstance(value, str) or not value.strip():
        raise InvalidConversation("messages_json is empty")
    try:
        turns = json.loads(value)
    except ValueError as error:
        raise InvalidConversation(f"messages_json is not JSON: {error}") from error
    if not isinstance(turns, list) or not turns:
        raise InvalidConversation("messages_json is not a non-empty JSON array")
    messages: list[dict[str, str]] = []
    for position, turn in enumerate(turns):
        if not isinstance(turn, dict) or turn.get("role") not in ROLES or not isinstance(turn.get("content"), str):
            raise InvalidConversation(f"turn {position} is not a {{'role', 'content'}} object with a known role")
        messages.append({"role": str(turn["role"]), "content": str(turn["content"])})
    if messages[-1]["role"] != "assistant":
        raise InvalidConversation("the last turn is not the assistant's answer")
    if not any(m["role"] == "user" for m in messages):
        raise InvalidConversation("there is no user turn")
    return messages


@dataclass(frozen=True, slots=True)
class OutputFormat:
    """What an answer must look like: one of ``labels`` and/or valid against ``json_schema``."""

    labels: tuple[str, ...] | None = None
    json_schema: Mapping[str, Any] | None = None

    @property
    def declared(self) -> bool:
        return self.labels is not None or self.json_schema is not None


def parse_output_format(value: Any) -> OutputFormat | None:
    """The output format of ``output_format_json``: an empty format for ``""``/null, None when the
    value cannot be read (the caller counts it; no format is checked for that example)."""
    if value is None or (isinstance(value, float) and value != value) or (isinstance(value, str) and not value.strip()):
        return OutputFormat()
    try:
        data = json.loads(value) if isinstance(value, str) else value
    except ValueError:
        return None
    if not isinstance(data, dict):
        return None
    labels, schema = data.get("labels"), data.get("json_schema")
    if labels is not None and (not isinstance(labels, list) or not all(isinstance(x, str) for x in labels)):
        return None
    if schema is not None and not isinstance(schema, dict):
        return None
    return OutputFormat(labels=tuple(labels) if labels is not None else None, json_schema=schema)


def prompt_turns(messages: list[dict[str, str]]) -> list[dict[str, str]]:
    """The turns before the final assistant answer: what a model is asked."""
    turns = list(messages)
    while turns and turns[-1]["role"] == "assistant":
        turns.pop()
    return turns
