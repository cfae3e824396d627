"""From a submitted instruction example (chat turns) to a curated one: normalise and redact every
turn, identify, de-duplicate; and the columns it is stored and snapshotted with.

Pure functions of their inputs, like ``curation`` for records; the redactor is passed in. What a
record gets, each turn gets: Unicode NFKC before redaction (so PII written with odd characters is
still found), redaction, and an id and a de-duplication key computed from the *redacted* turns.
Unlike a record's text, a turn keeps its line breaks and indentation (answers may be lists, code or
JSON): only line endings are unified and the ends trimmed. The de-duplication key does collapse
whitespace and case, as a record's does.
"""

from __future__ import annotations

import hashlib
import json
import unicodedata
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from llmops_ingestion.domain.curation import normalise_text
from llmops_ingestion.domain.validation import ROLE_USER
from llmops_privacy.redaction import PiiKind, RedactionResult


@dataclass(frozen=True, slots=True)
class Turn:
    role: str
    content: str

    def as_dict(self) -> dict[str, str]:
        return {"role": self.role, "content": self.content}


@dataclass(frozen=True, slots=True)
class AnswerFormat:
    """The declared format of the answer: a label set, a JSON Schema, or neither."""

    labels: tuple[str, ...] | None = None
    json_schema: Mapping[str, Any] | None = None

    @property
    def declared(self) -> bool:
        return self.labels is not None or self.json_schema is not None

    def to_json(self) -> str:
        """``output_format_json``: ``{"json_schema": ..., "labels": ...}`` (both keys, null when not
        declared; canonical: sorted keys, no whitespace), or ``""`` when there is no format."""
        if not self.declared:
            return ""
        document = {
            "labels": list(self.labels) if self.labels is not None else None,
            "json_schema": self.json_schema,
        }
        return json.dumps(document, sort_keys=True, separators=(",", ":"), ensure_ascii=False)


@dataclass(frozen=True, slots=True)
class InstructionInput:
    """An instruction example to curate, as submitted."""

    tenant: str
    source: str
    turns: tuple[Turn, ...]
    output_format: AnswerFormat = AnswerFormat()
    record_id: str | None = None
    metadata: Mapping[str, str] = field(default_factory=dict)
    occurred_at: datetime | None = None


@dataclass(frozen=True, slots=True)
class CuratedInstruction:
    """An example that is safe to keep: redacted turns, scoped id, de-duplication key, PII counts."""

    record_id: str
    tenant: str
    source: str
    turns: tuple[Turn, ...]
    output_format: AnswerFormat
    dedup_key: str
    pii_counts: Mapping[PiiKind, int] = field(default_factory=dict)
    metadata: Mapping[str, str] = field(default_factory=dict)
    occurred_at: datetime | None = None

    @property
    def labelled(self) -> bool:
        return True  # the final assistant turn is the reference answer

    @property
    def prompt(self) -> str:
        """The last user turn: the example's ``text``."""
        return next(turn.content for turn in reversed(self.turns) if turn.role == ROLE_USER)

    @property
    def answer(self) -> str:
        """The final assistant turn: the example's ``label`` (its reference answer)."""
        return self.turns[-1].content

    def chat(self) -> list[dict[str, str]]:
        """The turns as a chat template takes them."""
        return [turn.as_dict() for turn in self.turns]

    @property
    def messages_json(self) -> str:
        """Every turn, in order, as a JSON array of ``{"role", "content"}`` (no whitespace, UTF-8)."""
        return json.dumps(self.chat(), separators=(",", ":"), ensure_ascii=False)


def normalise_turn(text: str) -> str:
    """Unicode NFKC, ``\\r\\n`` and ``\\r`` as ``\\n``, ends stripped; line breaks and indentation kept."""
    return unicodedata.normalize("NFKC", text).replace("\r\n", "\n").replace("\r", "\n").strip()


def instruction_dedup_key(turns: Sequence[Turn]) -> str:
    """The exact-duplicate key of an example: its roles and normalised (whitespace-collapsed,
    case-folded) redacted turns. Namespaced, so it never equals a record's text key."""
    canonical = "\x1e".join(f"{turn.role}\x1f{normalise_text(turn.content).casefold()}" for turn in turns)
    return hashlib.sha256(f"instruction\x1d{canonical}".encode()).hexdigest()


def instruction_id_for(*, tenant: str, record_id: str | None, dedup_key: str) -> str:
    """``<tenant>/<record_id>``, or without one ``<tenant>/i-<hash of tenant and normalised turns>``,
    so resubmitting the same chat is idempotent."""
    if record_id:
        return f"{tenant}/{record_id}"
    digest = hashlib.sha256(f"{tenant}\x1f{dedup_key}".encode()).hexdigest()[:32]
    return f"{tenant}/i-{digest}"


def curate_instructions(
    examples: Sequence[InstructionInput], *, redact: Callable[[str], RedactionResult]
) -> list[CuratedInstruction]:
    """Normalise and redact every turn (and metadata value) of each example, in order, and identify it.
    PII counts are summed over the turns and the metadata."""
    curated = []
    for example in examples:
        counts: dict[PiiKind, int] = {}
        turns = []
        for turn in example.turns:
            result = redact(normalise_turn(turn.content))
            turns.append(Turn(turn.role, result.text))
            _add(counts, result.counts)
        metadata: dict[str, str] = {}
        for name, value in example.metadata.items():
            result = redact(value)
            metadata[name] = result.text
            _add(counts, result.counts)
        key = instruction_dedup_key(turns)
        curated.append(
            CuratedInstruction(
                record_id=instruction_id_for(tenant=example.tenant, record_id=example.record_id, dedup_key=key),
                tenant=example.tenant,
                source=example.source,
                turns=tuple(turns),
                output_format=example.output_format,
                dedup_key=key,
                pii_counts=counts,
                metadata=metadata,
                occurred_at=example.occurred_at,
            )
        )
    return curated


def _add(total: dict[PiiKind, int], counts: Mapping[PiiKind, int]) -> None:
    for kind, count in counts.items():
        total[kind] = total.get(kind, 0) + count
