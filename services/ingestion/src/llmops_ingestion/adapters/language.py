"""Offline language identification with py3langid (a small bundled model, no download)."""

from __future__ import annotations

from collections.abc import Callable, Sequence

# Cost grows with length, and a few sentences decide the language as well as a page does.
_PREFIX = 300


def language_detector(languages: Sequence[str] = ()) -> Callable[[str], str]:
    """A function from text to an ISO 639-1 code; ``languages`` restricts the candidates.

    Uses its own identifier rather than py3langid's module-level one, so restricting the
    languages here affects no other user of the library in the process.
    """
    from py3langid.langid import MODEL_FILE, LanguageIdentifier

    identifier = LanguageIdentifier.from_model_file(MODEL_FILE)
    if languages:
        identifier.set_languages(list(languages))

    def detect(text: str) -> str:
        return str(identifier.classify(text[:_PREFIX])[0])

    return detect
