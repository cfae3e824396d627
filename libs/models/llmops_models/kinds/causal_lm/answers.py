"""Comparing a generated answer with a reference, the same way wherever it is done (fine-tuning's
validation, the evaluation gate)."""

from __future__ import annotations

import json
import re
import string
import unicodedata
from collections.abc import Sequence
from typing import Any

from llmops_models.json_schema import schema_errors, unsupported_schema

# Feedback ratings run 1-5; these two bounds say what a thumbs-down and a thumbs-up are, for every
# service that turns ratings into preference pairs or quality signals.
THUMBS_DOWN_MAX_RATING = 2
THUMBS_UP_MIN_RATING = 4

_PUNCTUATION = str.maketrans({c: " " for c in string.punctuation})
_SPACES = re.compile(r"\s+")


def normalize_answer(text: str) -> str:
    """Lower case, Unicode NFKC, punctuation as spaces, whitespace collapsed: ``"Card arrival!"``,
    ``"card_arrival"`` and ``" CARD ARRIVAL "`` all become ``"card arrival"``."""
    text = unicodedata.normalize("NFKC", text).lower().translate(_PUNCTUATION)
    return _SPACES.sub(" ", text).strip()


def exact_match(prediction: str, reference: str) -> bool:
    """Equal after ``normalize_answer``."""
    return normalize_answer(prediction) == normalize_answer(reference)


def in_format(answer: str, labels: Sequence[str] | None, json_schema: Any | None) -> bool:
    """Whether an answer has its declared format, as strictly as a program reading it would see
    it: one of ``labels`` exactly (surrounding whitespace aside), and/or a JSON document (nothing
    around it, no Markdown fence) that ``json_schema`` accepts."""
    text = answer.strip()
    if json_schema is not None and unsupported_schema(json_schema) is not None:
        return False  # a format ingestion would have refused: nothing can be certified against it
    if labels is not None and text not in labels:
        return False
    if json_schema is not None:
        try:
            value = json.loads(text)
        except ValueError:
            return False
        return not schema_errors(value, json_schema)
    return True
