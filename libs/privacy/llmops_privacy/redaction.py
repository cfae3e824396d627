"""PII redaction: replace personal data with typed placeholders before anything is stored.

Detection uses Presidio's pattern recognizers (e-mail, phone via ``phonenumbers``, payment
card with a Luhn check, IBAN with its mod-97 checksum, IP addresses), instantiated directly so
that no spaCy model is needed. Names are found by a model-free rule: a self-introduction
("my name is …") or a title ("Mr …") followed by capitalised words.

Speed matters (the ingestion target is thousands of records per second on two cores), so each
recognizer runs only when a cheap pre-filter says the text could contain its kind, and the slow
phone matcher runs only on the candidate digit runs rather than the whole text.

Cost is bounded whatever the text. Every pattern runs in linear time: those here (no nested
unbounded quantifiers; the digit-run patterns that can backtrack give up within a few characters
of a run's end), Presidio's card, IBAN and IP patterns, and ``EMAIL_PATTERN``, which replaces
Presidio's quadratic e-mail pattern: together about 1 to 2 µs per character. The exception is
``phonenumbers``' matcher, about 50 µs per character of digit-heavy text with four regions (one
8,000-character record of digits took 0.1 to 0.3 s, and a batch of them could outlive Kafka's poll
interval). So the matcher examines at most ``phone_budget_chars`` characters of candidate runs
per text (``PHONE_BUDGET_CHARS``, 256 by default: ~15 phone numbers, at most ~15 ms), in text
order, a run longer than ``PHONE_WINDOW`` characters in overlapping windows (any span of up to
``PHONE_MAX_SPAN`` characters lies wholly within one window). What it does not examine is not let
through: every candidate run, or rest of a long run, beyond the budget becomes ``<PHONE>``
unexamined, exactly the text the matcher would have been shown. The trade-off falls on
digit-heavy records only (tables, statements, lists of numbers): their digit runs past the first
~256 characters of runs are redacted whether or not they are phone numbers, over-redacting (and
counting them as phones) rather than letting a number through.

Text is normalised before any pattern runs (``normalize_text``): NFKC, which folds full-width and
other compatibility forms (a full-width e-mail address, full-width digits) to the characters
the patterns know, then every format character (Unicode category ``Cf``: zero-width spaces and
joiners, soft hyphens, bidirectional marks) and the other default-ignorable characters are
removed, since they are invisible to a reader but split an e-mail or a number for a regex. Both
``redact`` and ``find`` work on the normalised text: what is stored or published is normalised.

The module is free of service code: ingestion and the gateway redact with the same ``Redactor``.
"""

from __future__ import annotations

import bisect
import logging
import re
import sys
import unicodedata
from collections import Counter
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from enum import StrEnum
from functools import cache
from typing import Any

# Default-ignorable code points outside category Cf (DerivedCoreProperties.txt): invisible too.
_IGNORABLE_NOT_CF = (
    (0x034F, 0x034F),  # combining grapheme joiner
    (0x115F, 0x1160),  # Hangul choseong/jungseong fillers
    (0x17B4, 0x17B5),  # Khmer inherent vowels
    (0x180B, 0x180F),  # Mongolian free variation selectors
    (0x3164, 0x3164),  # Hangul filler
    (0xFE00, 0xFE0F),  # variation selectors
    (0xFFA0, 0xFFA0),  # half-width Hangul filler
    (0xE0100, 0xE01EF),  # variation selectors supplement
)


@cache
def _invisible() -> re.Pattern[str]:
    """Every format (``Cf``) and other default-ignorable character, as one character class; built
    on first use (a pass over every code point, ~0.1 s), never for ASCII-only text."""
    ranges: list[tuple[int, int]] = []
    for code in range(sys.maxunicode + 1):
        if unicodedata.category(chr(code)) == "Cf":
            if ranges and ranges[-1][1] == code - 1:
                ranges[-1] = (ranges[-1][0], code)
            else:
                ranges.append((code, code))
    ranges += _IGNORABLE_NOT_CF
    members = "".join(re.escape(chr(a)) if a == b else f"{re.escape(chr(a))}-{re.escape(chr(b))}" for a, b in ranges)
    return re.compile(f"[{members}]+")


def normalize_text(text: str) -> str:
    """``text`` as the redaction patterns must see it: format and other invisible characters
    removed, then NFKC (full-width and compatibility forms folded), then removed again (NFKC never
    makes them, but the rule stays true whatever a future Unicode does). ASCII is returned as is."""
    if text.isascii():
        return text
    invisible = _invisible()
    return invisible.sub("", unicodedata.normalize("NFKC", invisible.sub("", text)))


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
# A phone candidate: at least 7 characters of digits and separators, digit to digit. The greedy
# middle backtracks only to the run's last digit before a separator, so a failed attempt costs the
# run's length, and only attempts starting in its last few characters can fail: linear overall.
_PHONE_CANDIDATE = re.compile(r"(?:\+|\(|\b)\d[\d \-.()/]{5,}\d\b")
# Digits and separators, digit to digit, without backtracking (possessive): the unexamined rest of
# a run is redacted along these.
_DIGIT_STRETCH = re.compile(r"[+(]?+\d(?:[ \-.()/]*+\d)*+")
_MIN_CANDIDATE_CHARS = 7
_CARD_CANDIDATE = re.compile(r"(?:\d[ -]?){12,19}")
_IBAN_CANDIDATE = re.compile(r"\b[A-Za-z]{2}\d{2}[ ]?[A-Za-z0-9]")
_IP_CANDIDATE = re.compile(r"\d{1,3}\.\d{1,3}\.\d{1,3}\.\d{1,3}|[0-9A-Fa-f]{0,4}::?[0-9A-Fa-f]{1,4}:")
_NAME_PATTERN = re.compile(
    r"(?:\b(?:[Mm]y name is|[Mm]y name's|[Tt]his is|[Nn]ame:|[Ss]igned,?|[Rr]egards,|[Ss]incerely,)"
    r"|\b(?:Mr|Mrs|Ms|Miss|Dr|Prof|Herr|Frau|Mme|M)\.?)"
    r"[ \t]+(?P<name>[A-Z][a-z'\-]+(?:[ \t]+[A-Z][a-z'\-]+){0,2})"
)
# Presidio's e-mail pattern (``EmailRecognizer.PATTERNS``) is quadratic: it tries a local part
# from every word boundary of a run like "a.b.c.…" and rescans the run each time, so 8,000 such
# characters and an "@" took 9 s. This one finds the same matches (a unit test compares them on
# random strings) in linear time, for the ``regex`` module Presidio compiles patterns with: a local
# part starts only at the first word character of a run of local-part characters (the first
# position Presidio could succeed from; if it fails there it fails from every later start, since
# every start ends at the same "@"), or right after the previous match, where a word character
# precedes; every quantifier is possessive.
_LOCAL = r"!#$%&'*+\-/=?^_`{|}~\w"  # a local part's first and last character
_LOCAL_NON_WORD = r"!#$%&'*+\-/=?^`{|}~."
EMAIL_PATTERN = (
    rf"(?:(?:(?<![{_LOCAL}.])|\G(?<=\w)\.)[{_LOCAL_NON_WORD}]*+\K(?=\w)|\G(?<=\w))"
    rf"[{_LOCAL}][{_LOCAL}.]*+(?<=[{_LOCAL}])@"
    r"\w++(?:-++\w++)*+(?:\.\w++(?:-++\w++)*+)++"
)

# --- the bound on the phone matcher (see the module docstring) ------------------------------
PHONE_BUDGET_CHARS = 256
"""Characters of candidate digit runs per text that the phone matcher examines, by default."""
PHONE_WINDOW = 64
"""A run longer than this is examined in windows of this many characters..."""
PHONE_MAX_SPAN = 32
"""...overlapping so that any span of up to this many characters lies wholly within one window."""
_PHONE_WINDOW_STEP = PHONE_WINDOW - PHONE_MAX_SPAN

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
    recognised; international numbers are recognised whatever the list. ``phone_budget_chars``
    bounds the characters per text the phone matcher examines; candidate digit runs beyond it are
    redacted as phone numbers unexamined (see the module docstring).
    """

    def __init__(
        self,
        *,
        phone_regions: Sequence[str] = ("US", "GB", "DE", "FR"),
        detect_names: bool = True,
        min_score: float = 0.3,
        phone_budget_chars: int = PHONE_BUDGET_CHARS,
    ) -> None:
        if phone_budget_chars < 0:
            raise ValueError("phone_budget_chars must be >= 0")
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
        self._phone_budget_chars = phone_budget_chars
        for text in _WARM_UP:
            self.find(text)

    def find(self, text: str) -> list[Finding]:
        """Every PII span in ``normalize_text(text)``, non-overlapping, in text order: the offsets
        index the normalised text (the same as ``text`` when it is ASCII)."""
        text = normalize_text(text)
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
            # Digit runs that a finding of a more specific kind (card, IBAN, e-mail, IP address)
            # covers can only yield phone findings that lose to it: the phone matcher is not asked
            # about them, only about the rest of each run. Those findings are resolved first,
            # exactly as they would be at the end, since the resolution takes kinds in priority
            # order and phones come after them.
            candidates += self._find_phones(text, _resolve_overlaps(candidates))
        if self._detect_names:
            candidates += _find_names(text)
        return _resolve_overlaps(candidates)

    def redact(self, text: str) -> RedactionResult:
        """``normalize_text(text)`` with each PII span replaced by its kind's placeholder, and
        counts per kind."""
        text = normalize_text(text)
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

    def _find_phones(self, text: str, specific: Sequence[Finding]) -> list[Finding]:
        """Phone findings in the candidate runs outside ``specific`` (sorted, non-overlapping).

        The matcher examines the runs in text order until ``phone_budget_chars`` is spent; every
        candidate it does not examine becomes a finding as it is. Linear in ``len(text)``.
        """
        budget = self._phone_budget_chars
        found: list[Finding] = []
        starts = [finding.start for finding in specific]
        for match in _PHONE_CANDIDATE.finditer(text):
            gaps = _uncovered(match.start(), match.end(), specific, starts)
            if gaps == [(match.start(), match.end())]:
                budget = self._examine(text, match.start(), match.end(), budget, found)
                continue
            for start, end in gaps:  # the run's parts no more specific finding covers
                for piece in _PHONE_CANDIDATE.finditer(text, start, end):
                    budget = self._examine(text, piece.start(), piece.end(), budget, found)
        return _merge_overlapping(found)

    def _examine(self, text: str, start: int, end: int, budget: int, found: list[Finding]) -> int:
        """Phone findings in the candidate ``text[start:end]`` onto ``found``; the budget left.

        A run of up to ``PHONE_WINDOW`` characters is examined whole if the budget allows, else
        redacted whole. A longer one is examined in windows overlapping by ``PHONE_MAX_SPAN``
        characters while the budget allows a whole window, so every span of up to that length
        that starts before the next window's start lies in an examined window; from there on,
        the run (digit to digit) is redacted unexamined. Shorter than a candidate, that rest lies
        within the last window anyway.
        """
        if end - start <= PHONE_WINDOW:
            if end - start <= budget:
                found += self._run(self._phone_recognizer(text, start), text[start:end], offset=start)
                return budget - (end - start)
            found.append(Finding(PiiKind.PHONE, start, end))
            return budget
        window = start
        while budget >= PHONE_WINDOW:
            stop = min(window + PHONE_WINDOW, end)
            found += self._run(self._phone_recognizer(text, window), text[window:stop], offset=window)
            budget -= stop - window
            if stop == end:
                return budget
            window += _PHONE_WINDOW_STEP
        for stretch in _DIGIT_STRETCH.finditer(text, window, end):
            if stretch.end() - stretch.start() >= _MIN_CANDIDATE_CHARS:
                found.append(Finding(PiiKind.PHONE, stretch.start(), stretch.end()))
        return budget

    def _phone_recognizer(self, text: str, start: int) -> Any:
        # A number written with "+" parses the same from any region: one region suffices.
        return self._phone_international if text.startswith("+", start) else self._phone_national

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
    """Presidio's e-mail recognizer, validating the domain against tldextract's bundled suffix list,
    with ``EMAIL_PATTERN`` (the same matches in linear time) in place of its pattern.

    The stock recognizer calls ``tldextract.extract``, which downloads the Public Suffix List on
    first use: with no network that blocks on DNS and logs a traceback per process.
    """
    import tldextract
    from presidio_analyzer import Pattern

    extractor = tldextract.TLDExtract(suffix_list_urls=(), cache_dir=None)

    class OfflineEmailRecognizer(base):  # type: ignore[misc,valid-type]
        def validate_result(self, pattern_text: str) -> bool:
            return extractor(pattern_text).fqdn != ""

    return OfflineEmailRecognizer(patterns=[Pattern("Email (Medium, linear)", EMAIL_PATTERN, 0.5)])


def _find_names(text: str) -> list[Finding]:
    findings = []
    for match in _NAME_PATTERN.finditer(text):
        if match.group("name").split()[0] in _NOT_NAMES:
            continue
        findings.append(Finding(PiiKind.PERSON, match.start("name"), match.end("name")))
    return findings


def _uncovered(start: int, end: int, covering: Sequence[Finding], starts: Sequence[int]) -> list[tuple[int, int]]:
    """The parts of ``[start, end)`` outside ``covering`` (sorted, non-overlapping; ``starts`` are
    their starts), found by bisection."""
    index = max(bisect.bisect_right(starts, start) - 1, 0)
    gaps: list[tuple[int, int]] = []
    position = start
    while index < len(covering) and covering[index].start < end:
        finding = covering[index]
        if finding.end > position:
            if finding.start > position:
                gaps.append((position, finding.start))
            position = finding.end
        index += 1
    if position < end:
        gaps.append((position, end))
    return gaps


def _merge_overlapping(findings: list[Finding]) -> list[Finding]:
    """Findings of one kind, overlapping ones merged into their union (windows overlap: keeping
    only the longer of two overlapping phone findings would let the other's rest through)."""
    merged: list[Finding] = []
    for finding in sorted(findings, key=lambda f: f.start):
        if merged and finding.start < merged[-1].end:
            last = merged[-1]
            merged[-1] = Finding(last.kind, last.start, max(last.end, finding.end))
        else:
            merged.append(finding)
    return merged


def _resolve_overlaps(findings: Iterable[Finding]) -> list[Finding]:
    """Keep the most specific, then the longest, finding wherever spans overlap.

    The kept findings stay sorted and disjoint, so only the two neighbours of a candidate can
    overlap it: O(n log n) comparisons rather than a scan of every kept finding per candidate.
    """
    chosen: list[Finding] = []
    starts: list[int] = []
    for finding in sorted(findings, key=lambda f: (_PRIORITY[f.kind], -(f.end - f.start), f.start)):
        index = bisect.bisect_right(starts, finding.start)
        if index > 0 and chosen[index - 1].end > finding.start:
            continue
        if index < len(chosen) and chosen[index].start < finding.end:
            continue
        chosen.insert(index, finding)
        starts.insert(index, finding.start)
    return chosen
