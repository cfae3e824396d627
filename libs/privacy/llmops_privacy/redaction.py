"""PII redaction: replace personal data with typed placeholders before anything is stored.

Detection uses Presidio's pattern recognizers (e-mail, phone via ``phonenumbers``, payment
card with a Luhn check, IBAN with its mod-97 checksum, IP addresses), instantiated directly so
that no spaCy model is needed. Names are found by a model-free rule: a self-introduction
("my name is …") or a title ("Mr …") followed by capitalised words.

Speed matters (the ingestion target is thousands of records per second on two cores), so each
recognizer runs only when a cheap pre-filter says the text could contain its kind, and the slow
phone matcher runs only on the candidate digit runs rather than the whole text.

The module is free of service code: ingestion and the gateway redact with the same ``Redactor``.
"""

from __future__ import annotations

import logging
import re
import sys
from collections import Counter
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from enum import StrEnum
from typing import Any


class PiiKind(StrEnum):
    """The kinds of personal data removed, each with its own placeholder."""

    EMAIL = "email"
    PHONE = "phone"
    CREDIT_CARD = "credit_card"
    IBAN = "iban"
    IP_ADDRESS = "ip_address"
    PERSON = "person"

    @property
    def placeholder(self) -> str:
        return _PLACEHOLDERS[self]


_PLACEHOLDERS = {
    PiiKind.EMAIL: "<EMAIL>",
    PiiKind.PHONE: "<PHONE>",
    PiiKind.CREDIT_CARD: "<CREDIT_CARD>",
    PiiKind.IBAN: "<IBAN>",
    PiiKind.IP_ADDRESS: "<IP_ADDRESS>",
    PiiKind.PERSON: "<PERSON>",
}

# When two findings overlap, the more specific kind wins: a 16-digit card number is also a
# plausible phone number, an IBAN contains digit runs, an e-mail can contain an IP literal.
_PRIORITY = {
    PiiKind.CREDIT_CARD: 0,
    PiiKind.IBAN: 1,
    PiiKind.EMAIL: 2,
    PiiKind.IP_ADDRESS: 3,
    PiiKind.PHONE: 4,
    PiiKind.PERSON: 5,
}

_PRESIDIO_KIND = {
    "EMAIL_ADDRESS": PiiKind.EMAIL,
    "PHONE_NUMBER": PiiKind.PHONE,
    "CREDIT_CARD": PiiKind.CREDIT_CARD,
    "IBAN_CODE": PiiKind.IBAN,
    "IP_ADDRESS": PiiKind.IP_ADDRESS,
}

# --- pre-filters: cheap tests that rule a kind out for most texts -------------------------
_HAS_DIGIT_RUN = re.compile(r"\d[\d \-.()/]{5,}\d")  # phones, cards, IBAN bodies
_PHONE_CANDIDATE = re.compile(r"(?:\+|\(|\b)\d[\d \-.()/]{5,}\d\b")
_CARD_CANDIDATE = re.compile(r"(?:\d[ -]?){12,19}")
_IBAN_CANDIDATE = re.compile(r"\b[A-Za-z]{2}\d{2}[ ]?[A-Za-z0-9]")
_IP_CANDIDATE = re.compile(r"\d{1,3}\.\d{1,3}\.\d{1,3}\.\d{1,3}|[0-9A-Fa-f]{0,4}::?[0-9A-Fa-f]{1,4}:")
_NAME_PATTERN = re.compile(
    r"(?:\b(?:[Mm]y name is|[Mm]y name's|[Tt]his is|[Nn]ame:|[Ss]igned,?|[Rr]egards,|[Ss]incerely,)"
    r"|\b(?:Mr|Mrs|Ms|Miss|Dr|Prof|Herr|Frau|Mme|M)\.?)"
    r"[ \t]+(?P<name>[A-Z][a-z'\-]+(?:[ \t]+[A-Z][a-z'\-]+){0,2})"
)
# Texts that exercise every recognizer once at start-up: Presidio and phonenumbers import their
# data lazily (region metadata, compiled patterns), which would otherwise stall the first records.
_WARM_UP = (
    "Mail jane.doe@example.com or call +44 20 7946 0958 or (212) 555-0142; card 4111 1111 1111 1111, "
    "IBAN GB82 WEST 1234 5698 7654 32, from 192.168.0.1 or 2001:db8::1. My name is Jane Doe.",
)

# Capitalised words after "I am" / "This is" are often not names ("This is The third time");
# a name never starts with one of these.
_NOT_NAMES = frozenset(
    {
        "A",
        "An",
        "The",
        "Not",
        "So",
        "Very",
        "Still",
        "Just",
        "Also",
        "Here",
        "Writing",
        "Calling",
        "Sorry",
        "Happy",
        "Unable",
        "Trying",
        "Going",
        "Looking",
        "Interested",
        "Sure",
        "From",
        "In",
    }
)


@dataclass(frozen=True, slots=True)
class Finding:
    """One detected span of personal data."""

    kind: PiiKind
    start: int
    end: int


@dataclass(frozen=True, slots=True)
class RedactionResult:
    """The redacted text and how many spans of each kind were replaced."""

    text: str
    counts: dict[PiiKind, int] = field(default_factory=dict)

    @property
    def total(self) -> int:
        return sum(self.counts.values())

    def count(self, kind: PiiKind) -> int:
        return self.counts.get(kind, 0)


class Redactor:
    """Finds and replaces PII. Build one per process: constructing it imports Presidio (seconds).

    ``phone_regions`` are the regions whose national formats (without a ``+`` prefix) are
    recognised; international numbers are recognised whatever the list.
    """

    def __init__(
        self,
        *,
        phone_regions: Sequence[str] = ("US", "GB", "DE", "FR"),
        detect_names: bool = True,
        min_score: float = 0.3,
    ) -> None:
        # Presidio logs at INFO as it loads and matches; keep that (and any matched text) out of logs.
        logging.getLogger("presidio-analyzer").setLevel(logging.WARNING)
        recognizers = _import_presidio_recognizers()
        CreditCardRecognizer, EmailRecognizer, IbanRecognizer, IpRecognizer, PhoneRecognizer = recognizers

        self._email = _offline_email_recognizer(EmailRecognizer)
        # A number written with "+" parses the same from any region, so one region suffices
        # (the matcher costs ~0.3 ms per region); national formats need every configured region.
        self._phone_international = PhoneRecognizer(supported_regions=(phone_regions[0],))
        self._phone_national = PhoneRecognizer(supported_regions=tuple(phone_regions))
        self._card = CreditCardRecognizer()
        self._iban = IbanRecognizer()
        self._ip = IpRecognizer()
        self._detect_names = detect_names
        self._min_score = min_score
        for text in _WARM_UP:
            self.find(text)

    def find(self, text: str) -> list[Finding]:
        """Every PII span in ``text``, non-overlapping, in text order."""
        candidates: list[Finding] = []
        if "@" in text:
            candidates += self._run(self._email, text)
        has_digits = _HAS_DIGIT_RUN.search(text) is not None
        if has_digits and _CARD_CANDIDATE.search(text):
            candidates += self._run(self._card, text)
        if has_digits and _IBAN_CANDIDATE.search(text):
            candidates += self._run(self._iban, text)
        if _IP_CANDIDATE.search(text):
            candidates += self._run(self._ip, text)
        if has_digits:
            # A run inside a finding of a more specific kind (card, IBAN, e-mail, IP address) can
            # only yield phone findings that lose to it: the phone matcher (~0.3 ms per region)
            # is not asked. Those findings are resolved first, exactly as they would be at the end,
            # since the resolution takes kinds in priority order and phones come after them.
            specific = _resolve_overlaps(candidates)
            for match in _PHONE_CANDIDATE.finditer(text):
                if any(f.start <= match.start() and match.end() <= f.end for f in specific):
                    continue
                # The phone matcher is ~100x slower than a regex: give it only the candidate run.
                run = match.group()
                recognizer = self._phone_international if run.startswith("+") else self._phone_national
                candidates += self._run(recognizer, run, offset=match.start())
        if self._detect_names:
            candidates += _find_names(text)
        return _resolve_overlaps(candidates)

    def redact(self, text: str) -> RedactionResult:
        """``text`` with each PII span replaced by its kind's placeholder, and counts per kind."""
        findings = self.find(text)
        if not findings:
            return RedactionResult(text=text, counts={})
        parts: list[str] = []
        position = 0
        for finding in findings:
            parts.append(text[position : finding.start])
            parts.append(finding.kind.placeholder)
            position = finding.end
        parts.append(text[position:])
        counts = Counter(finding.kind for finding in findings)
        return RedactionResult(text="".join(parts), counts=dict(counts))

    def _run(self, recognizer: Any, text: str, *, offset: int = 0) -> list[Finding]:
        results = recognizer.analyze(text, entities=recognizer.supported_entities, nlp_artifacts=None)
        return [
            Finding(_PRESIDIO_KIND[result.entity_type], result.start + offset, result.end + offset)
            for result in results
            if result.score >= self._min_score and result.entity_type in _PRESIDIO_KIND
        ]


def _import_presidio_recognizers() -> tuple[Any, ...]:
    """Presidio's pattern recognizer classes, imported without its optional NLP back ends.

    ``import presidio_analyzer`` also imports its NLP engines, which pull in transformers and
    torch when they are installed (about 20 s and hundreds of MB here). The pattern recognizers
    need neither, and Presidio treats both as optional (``try: import … except ImportError``),
    so they are hidden for the duration of this import unless the process already has them.
    """
    hidden = [name for name in ("transformers", "torch") if name not in sys.modules]
    for name in hidden:
        sys.modules[name] = None  # type: ignore[assignment]  # makes ``import name`` raise ImportError
    try:
        from presidio_analyzer.predefined_recognizers import (
            CreditCardRecognizer,
            EmailRecognizer,
            IbanRecognizer,
            IpRecognizer,
            PhoneRecognizer,
        )
    finally:
        for name in hidden:
            del sys.modules[name]
    return CreditCardRecognizer, EmailRecognizer, IbanRecognizer, IpRecognizer, PhoneRecognizer


def _offline_email_recognizer(base: type[Any]) -> Any:
    """Presidio's e-mail recognizer, validating the domain against tldextract's bundled suffix list.

    The stock recognizer calls ``tldextract.extract``, which downloads the Public Suffix List on
    first use: with no network that blocks on DNS and logs a traceback per process.
    """
    import tldextract

    extractor = tldextract.TLDExtract(suffix_list_urls=(), cache_dir=None)

    class OfflineEmailRecognizer(base):  # type: ignore[misc,valid-type]
        def validate_result(self, pattern_text: str) -> bool:
            return extractor(pattern_text).fqdn != ""

    return OfflineEmailRecognizer()


def _find_names(text: str) -> list[Finding]:
    findings = []
    for match in _NAME_PATTERN.finditer(text):
        if match.group("name").split()[0] in _NOT_NAMES:
            continue
        findings.append(Finding(PiiKind.PERSON, match.start("name"), match.end("name")))
    return findings


def _resolve_overlaps(findings: Iterable[Finding]) -> list[Finding]:
    """Keep the most specific, then the longest, finding wherever spans overlap."""
    chosen: list[Finding] = []
    for finding in sorted(findings, key=lambda f: (_PRIORITY[f.kind], -(f.end - f.start), f.start)):
        if all(finding.end <= other.start or finding.start >= other.end for other in chosen):
            chosen.append(finding)
    return sorted(chosen, key=lambda f: f.start)
