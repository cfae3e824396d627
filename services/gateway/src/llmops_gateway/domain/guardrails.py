"""Guardrails of generation: prompt-injection checks on the way in, PII redaction on the way out.

The policy is a YAML file (``deploy/policies/guardrails.yaml``, ``LLMOPS_GATEWAY_GUARDRAILS_FILE``):

- ``injection.patterns``: regular expressions, each with a reason code, matched against every turn
  of a request after normalisation (NFKC, format and zero-width characters removed, case folded,
  whitespace collapsed), so full-width letters or a zero-width space inside "ignore" do not slip
  past. A match refuses the request with ``refused:<code>`` (FAILED_PRECONDITION). Patterns, not a
  model: no download, microseconds per request, and measured on the labelled set in
  ``tests/unit/test_gateway_guardrails.py`` (precision and recall printed there).
- ``output_redaction``: per tenant (``default`` for the others), whether answers are redacted
  with the platform's PII redactor before they leave the gateway. A stream is redacted through
  :class:`StreamRedactor`, which holds back the last ``lookbehind_chars`` characters so a PII span
  split across chunks is still found whole. Limits: a span longer than ``lookbehind_chars`` (an
  e-mail address of more than 64 characters by default) may be cut in two and missed; and text
  near a digit, an ``@`` or a name introduction reaches the client up to ``lookbehind_chars``
  characters (about 15 tokens) later; elsewhere only the trailing partial word waits.
"""

from __future__ import annotations

import re
from collections import Counter
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

import yaml

from llmops_gateway.errors import Refused
from llmops_privacy import normalize_text

_SPACES = re.compile(r"\s+")


class GuardrailsPolicyError(ValueError):
    """The guardrails policy file is malformed; the message names the field."""


@dataclass(frozen=True, slots=True)
class InjectionPattern:
    code: str
    pattern: re.Pattern[str]


@dataclass(frozen=True, slots=True)
class GuardrailsPolicy:
    injection_enabled: bool = True
    injection_patterns: tuple[InjectionPattern, ...] = ()
    max_scan_chars: int = 16_000
    """Characters of a request's turns examined (requests are bounded far below it by the gateway's limits)."""
    redact_output_default: bool = False
    redact_output_tenants: Mapping[str, bool] = field(default_factory=dict)
    lookbehind_chars: int = 64

    def redacts_output(self, tenant: str) -> bool:
        return self.redact_output_tenants.get(tenant, self.redact_output_default)


def load_policy(path: Path) -> GuardrailsPolicy:
    try:
        document = yaml.safe_load(path.read_text())
    except OSError as error:
        raise GuardrailsPolicyError(f"{path}: cannot be read ({error.strerror or error})") from error
    except yaml.YAMLError as error:
        raise GuardrailsPolicyError(f"{path}: not valid YAML: {error}") from error
    return parse_policy(document, source=str(path))


def _mapping(value: Any, where: str, allowed: set[str]) -> Mapping[str, Any]:
    if value is None:
        return {}
    if not isinstance(value, Mapping):
        raise GuardrailsPolicyError(f"{where} must be a mapping")
    unknown = set(value) - allowed
    if unknown:
        raise GuardrailsPolicyError(f"{where}: unknown fields {sorted(unknown)}")
    return value


def parse_policy(document: Any, *, source: str = "the guardrails policy") -> GuardrailsPolicy:
    top = _mapping(document, source, {"injection", "output_redaction"})
    injection = _mapping(top.get("injection"), f"{source}: injection", {"enabled", "max_scan_chars", "patterns"})
    output = _mapping(
        top.get("output_redaction"), f"{source}: output_redaction", {"default", "tenants", "lookbehind_chars"}
    )
    patterns: list[InjectionPattern] = []
    for index, entry in enumerate(injection.get("patterns") or []):
        where = f"{source}: injection.patterns[{index}]"
        entry = _mapping(entry, where, {"code", "pattern"})
        code = str(entry.get("code", ""))
        if not re.fullmatch(r"[a-z][a-z0-9_]{0,63}", code):
            raise GuardrailsPolicyError(f"{where}.code {code!r} must be a lower-case identifier")
        try:
            compiled = re.compile(str(entry.get("pattern", "")), re.IGNORECASE)
        except re.error as error:
            raise GuardrailsPolicyError(f"{where}.pattern does not compile: {error}") from error
        patterns.append(InjectionPattern(code, compiled))
    tenants = output.get("tenants") or {}
    if not isinstance(tenants, Mapping) or not all(isinstance(v, bool) for v in tenants.values()):
        raise GuardrailsPolicyError(f"{source}: output_redaction.tenants must map tenant names to true/false")
    lookbehind = output.get("lookbehind_chars", 64)
    max_scan = injection.get("max_scan_chars", 16_000)
    for name, value in (("output_redaction.lookbehind_chars", lookbehind), ("injection.max_scan_chars", max_scan)):
        if isinstance(value, bool) or not isinstance(value, int) or value < 1:
            raise GuardrailsPolicyError(f"{source}: {name} must be a positive whole number")
    return GuardrailsPolicy(
        injection_enabled=bool(injection.get("enabled", True)),
        injection_patterns=tuple(patterns),
        max_scan_chars=max_scan,
        redact_output_default=bool(output.get("default", False)),
        redact_output_tenants={str(k): v for k, v in tenants.items()},
        lookbehind_chars=lookbehind,
    )


def normalise(text: str) -> str:
    """The redactor's normalisation (NFKC, format and other invisible characters removed), case
    folded, whitespace collapsed: the form injection patterns are written against."""
    return _SPACES.sub(" ", normalize_text(text).casefold()).strip()


def injection_code(policy: GuardrailsPolicy, texts: Sequence[str]) -> str | None:
    """The reason code of the first injection pattern found in ``texts``; None: none found."""
    if not policy.injection_enabled or not policy.injection_patterns:
        return None
    budget = policy.max_scan_chars
    for text in texts:
        if budget <= 0:
            break
        scanned = normalise(text[:budget])
        budget -= len(text)
        for pattern in policy.injection_patterns:
            if pattern.pattern.search(scanned):
                return pattern.code
    return None


def check_prompt(policy: GuardrailsPolicy, texts: Sequence[str]) -> None:
    """Raise ``Refused`` when a turn looks like a prompt injection."""
    code = injection_code(policy, texts)
    if code is not None:
        raise Refused(f"prompt_injection.{code}", "the request looks like a prompt injection and was not served")


_RISKY = re.compile(r"[\d@]")
"""Characters every PII span that may hold whitespace has (phone, card, IBAN), or an e-mail's."""
_NAME_INTRO = re.compile(
    r"\b(?:[Mm]y|[Tt]his|[Nn]ame|[Ss]igned|[Rr]egards|[Ss]incerely|Mr|Mrs|Ms|Miss|Dr|Prof|Herr|Frau|Mme|M)\b"
)
"""The first word of each introduction after which ``llmops_privacy`` reads capitalised words as a
person's name ("my name is", "this is", "Mr", ...; kept in step with its ``_NAME_PATTERN``). The
first word, not the whole phrase: the redactor must see the introduction and the name in one
text, so neither may be sent before the other has arrived. A wider match only holds text longer."""
_INTRO_CHARS = 16


class SpanFinder(Protocol):
    """``llmops_privacy.Redactor`` is one: PII spans of ``normalize_text(text)``, non-overlapping,
    in order (each with ``kind.placeholder``, ``start`` and ``end``)."""

    def find(self, text: str) -> Sequence[Any]: ...


def _kind_name(kind: Any) -> str:
    return str(getattr(kind, "value", kind))


def redact_spans(text: str, spans: Sequence[Any], counts: Counter[str]) -> str:
    """``text`` with each span replaced by its kind's placeholder, counting kinds into ``counts``."""
    parts: list[str] = []
    position = 0
    for span in spans:
        parts.append(text[position : span.start])
        parts.append(span.kind.placeholder)
        counts[_kind_name(span.kind)] += 1
        position = span.end
    parts.append(text[position:])
    return "".join(parts)


class StreamRedactor:
    """Redacts a stream of text pieces. ``feed`` returns what may be sent now: everything but the
    last ``lookbehind_chars`` characters, cut earlier if a PII span crosses the cut; ``flush``
    returns the rest. The text is normalised first (``llmops_privacy.normalize_text``: NFKC,
    invisible characters removed), the form the redactor's spans index, so a full-width or
    zero-width-split e-mail is caught too; what is sent is the normalised text."""

    def __init__(self, finder: SpanFinder, *, lookbehind_chars: int) -> None:
        if lookbehind_chars < 1:
            raise ValueError("lookbehind_chars must be at least 1")
        self._finder = finder
        self._lookbehind = lookbehind_chars
        self._pending = ""
        self.counts: Counter[str] = Counter()

    def _cut(self) -> int:
        """Where the text that may be sent now ends. Always safe: all but the last
        ``lookbehind_chars``. Earlier is fine when nothing near the end can still become a PII span
        that crosses a word boundary: then only the trailing partial word is held. Spans without
        whitespace (e-mail, IP address) cannot cross one; those with whitespace need a digit (phone,
        card, IBAN) or follow a name introduction ("my name is", "Mr", ...), so the last word
        boundary is used only when the ``lookbehind_chars`` before it (and the introduction's
        length) hold neither."""
        pending = self._pending
        hard = len(pending) - self._lookbehind
        boundary = max(pending.rfind(" "), pending.rfind("\n"), pending.rfind("\t")) + 1
        if boundary <= max(hard, 0):
            return hard
        window = pending[max(0, boundary - self._lookbehind - _INTRO_CHARS) :]
        if _RISKY.search(window) or _NAME_INTRO.search(window):
            return hard
        return boundary

    def feed(self, text: str) -> str:
        # A combining mark may compose with the previous piece's last character: the held text and
        # the new piece are normalised together.
        self._pending = normalize_text(self._pending + text)
        cut = self._cut()
        if cut <= 0:
            return ""
        spans = self._finder.find(self._pending)
        # A span not sent yet keeps what precedes it too: a name is only found after its
        # introduction ("This is Dr Anna Berg"), so sending the introduction alone would let the
        # name out unrecognised next time. Moving the cut back may hold more spans: until stable.
        moved = True
        while moved:
            moved = False
            for span in spans:
                if span.end > cut:
                    start = max(0, span.start - (_INTRO_CHARS if _kind_name(span.kind) == "person" else 0))
                    if start < cut:
                        cut, moved = start, True
        if cut <= 0:
            return ""
        before = [span for span in spans if span.end <= cut]
        emitted = redact_spans(self._pending[:cut], before, self.counts)
        self._pending = self._pending[cut:]
        return emitted

    def flush(self) -> str:
        text, self._pending = self._pending, ""
        if not text:
            return ""
        return redact_spans(text, self._finder.find(text), self.counts)


def redact_text(finder: SpanFinder, text: str, counts: Counter[str]) -> str:
    """A whole answer, redacted (``Generate``)."""
    normalised = normalize_text(text)
    return redact_spans(normalised, finder.find(normalised), counts)
