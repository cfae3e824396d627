"""From a submitted record to a curated one: normalise, redact, identify; and the descriptors of
a curated text.

Curation decides what is stored (redacted text, id, de-duplication key) and runs before the
record is stored; descriptors are features derived from the stored text, computed where the
features are written (``describe_many``), so the consuming loop does not pay for them.

Everything here is a pure function of its inputs; the redactor and the language detector are
passed in.
"""

from __future__ import annotations

import hashlib
import re
import unicodedata
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime

from llmops_privacy.redaction import PiiKind, RedactionResult

_WHITESPACE = re.compile(r"\s+")
_TOKEN = re.compile(r"\w+|[^\w\s]", re.UNICODE)


def normalise_text(text: str) -> str:
    """Unicode NFKC, whitespace runs collapsed to one space, ends stripped.

    NFKC folds look-alike forms (full-width digits, ligatures, non-breaking spaces) so that the
    redactor and the de-duplication see the same characters a reader does.
    """
    return _WHITESPACE.sub(" ", unicodedata.normalize("NFKC", text)).strip()


def dedup_key(text: str) -> str:
    """The exact-duplicate key of a normalised, redacted text (case-insensitive)."""
    return hashlib.sha256(text.casefold().encode("utf-8")).hexdigest()


def record_id_for(*, tenant: str, record_id: str | None, text_key: str) -> str:
    """The curated record id: tenant-scoped, so two tenants' ``ticket-1`` never collide.

    A producer's ``record_id`` is kept (``<tenant>/<record_id>``); without one the id is a
    stable hash of tenant and normalised text, so resubmitting the same text is idempotent.
    """
    if record_id:
        return f"{tenant}/{record_id}"
    digest = hashlib.sha256(f"{tenant}\x1f{text_key}".encode()).hexdigest()[:32]
    return f"{tenant}/h-{digest}"


@dataclass(frozen=True, slots=True)
class Descriptors:
    """Simple text descriptors kept as features (and used by monitoring for drift)."""

    length: int
    token_count: int
    non_alpha_share: float
    language: str


def describe(text: str, *, detect_language: Callable[[str], str] | None = None) -> Descriptors:
    """Length in characters, token count (words and punctuation), share of non-alphabetic
    non-space characters, and the language code (``und`` when undetermined)."""
    language = detect_language(text) if detect_language is not None and text else "und"
    return _describe(text, language)


def describe_many(
    texts: Sequence[str], *, detect_languages: Callable[[Sequence[str]], Sequence[str]] | None = None
) -> list[Descriptors]:
    """``describe`` for many texts, in order, with the language of all of them detected in one
    call (a vectorised detector is ~10x cheaper per text); an empty text is ``und`` unasked."""
    with_text = [index for index, text in enumerate(texts) if text]
    languages = ["und"] * len(texts)
    if detect_languages is not None and with_text:
        for index, language in zip(with_text, detect_languages([texts[i] for i in with_text]), strict=True):
            languages[index] = language
    return [_describe(text, language) for text, language in zip(texts, languages, strict=True)]


def _describe(text: str, language: str) -> Descriptors:
    # Counted with map() over str methods: a generator over the characters costs 4x more.
    visible = len(text) - sum(map(str.isspace, text))
    non_alpha = visible - sum(map(str.isalpha, text))  # a letter is never a space
    return Descriptors(
        length=len(text),
        token_count=len(_TOKEN.findall(text)),
        non_alpha_share=round(non_alpha / visible, 4) if visible else 0.0,
        language=language,
    )


@dataclass(frozen=True, slots=True)
class CuratedRecord:
    """A record that is safe to keep: redacted text, scoped id, de-duplication key and PII counts."""

    record_id: str
    tenant: str
    source: str
    text: str
    label: str | None
    dedup_key: str
    pii_counts: Mapping[PiiKind, int] = field(default_factory=dict)
    metadata: Mapping[str, str] = field(default_factory=dict)
    occurred_at: datetime | None = None

    @property
    def labelled(self) -> bool:
        return self.label is not None


@dataclass(frozen=True, slots=True)
class RecordInput:
    """A record to curate, as submitted (or derived from feedback)."""

    tenant: str
    source: str
    text: str
    label: str | None
    record_id: str | None
    metadata: Mapping[str, str] = field(default_factory=dict)
    occurred_at: datetime | None = None


def curate(
    *,
    tenant: str,
    source: str,
    text: str,
    label: str | None,
    record_id: str | None,
    metadata: Mapping[str, str],
    occurred_at: datetime | None,
    redact: Callable[[str], RedactionResult],
) -> CuratedRecord:
    """Normalise, redact and identify one record.

    Normalisation comes first so PII written with odd Unicode is still found; the record id
    and de-duplication key are taken from the *redacted* text, because nothing derived from
    raw PII (not even a hash) may be stored. Metadata values are redacted too.
    """
    record = RecordInput(tenant, source, text, label, record_id, metadata, occurred_at)
    return curate_batch([record], redact=redact)[0]


def curate_batch(records: Sequence[RecordInput], *, redact: Callable[[str], RedactionResult]) -> list[CuratedRecord]:
    """``curate`` for many records at once, in order."""
    curated = []
    for record in records:
        text, key, counts, clean_metadata = _redact_record(record, redact)
        curated.append(
            CuratedRecord(
                record_id=record_id_for(tenant=record.tenant, record_id=record.record_id, text_key=key),
                tenant=record.tenant,
                source=record.source,
                text=text,
                label=record.label,
                dedup_key=key,
                pii_counts=counts,
                metadata=clean_metadata,
                occurred_at=record.occurred_at,
            )
        )
    return curated


def _redact_record(
    record: RecordInput, redact: Callable[[str], RedactionResult]
) -> tuple[str, str, dict[PiiKind, int], dict[str, str]]:
    """Redacted text, its de-duplication key, PII counts (text and metadata) and redacted metadata."""
    redacted = redact(normalise_text(record.text))
    counts: dict[PiiKind, int] = dict(redacted.counts)
    clean_metadata: dict[str, str] = {}
    for name, value in record.metadata.items():
        result = redact(value)
        clean_metadata[name] = result.text
        for kind, count in result.counts.items():
            counts[kind] = counts.get(kind, 0) + count
    return redacted.text, dedup_key(redacted.text), counts, clean_metadata
