"""Comparing a generated answer with a reference, the same way wherever it is done (fine-tuning's
validation, the evaluation gate)."""

from __future__ import annotations

import json
import math
import re
import string
import unicodedata
from collections.abc import Mapping, Sequence
from typing import Any

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


# --- answers in a declared format ------------------------------------------------------------------
#
# A JSON Schema (2020-12) validator for the keywords an instruction example's answer format may
# use (ingestion refuses a format with any other keyword, so every format that reaches a snapshot
# is checked here in full): type, enum, const, minimum, maximum, exclusiveMinimum,
# exclusiveMaximum, multipleOf, minLength, maxLength, items, prefixItems, minItems, maxItems,
# uniqueItems, properties, required, additionalProperties, minProperties, maxProperties, allOf,
# anyOf, oneOf, not, and boolean schemas; annotations are ignored. The verdicts are those of the
# reference implementation, ``jsonschema`` (a unit test compares them). ``pattern`` is not a
# supported keyword: a producer's regular expression on a backtracking engine could take
# exponential time on a generated answer.


def _is_number(value: Any) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool)


def _has_type(value: Any, name: str) -> bool:
    if name == "integer":
        return _is_number(value) and (isinstance(value, int) or (math.isfinite(value) and float(value).is_integer()))
    return {
        "null": value is None,
        "boolean": isinstance(value, bool),
        "object": isinstance(value, dict),
        "array": isinstance(value, list),
        "string": isinstance(value, str),
        "number": _is_number(value),
    }.get(name, False)


def json_equal(left: Any, right: Any) -> bool:
    """Equality of JSON values: ``1 == 1.0``, but ``true`` is not ``1``."""
    if isinstance(left, bool) or isinstance(right, bool):
        return isinstance(left, bool) and isinstance(right, bool) and left == right
    if isinstance(left, list) and isinstance(right, list):
        return len(left) == len(right) and all(json_equal(a, b) for a, b in zip(left, right, strict=True))
    if isinstance(left, dict) and isinstance(right, dict):
        return left.keys() == right.keys() and all(json_equal(left[k], right[k]) for k in left)
    if _is_number(left) and _is_number(right):
        return bool(left == right)
    return type(left) is type(right) and bool(left == right)


def _multiple_of(value: float, divisor: float) -> bool:
    if isinstance(divisor, float) or isinstance(value, float):
        try:
            quotient = value / divisor
            return math.isfinite(quotient) and int(quotient) == quotient
        except (OverflowError, ZeroDivisionError):
            return False
    return value % divisor == 0


def json_schema_errors(value: Any, schema: Any, path: str = "$") -> list[str]:
    """Where ``value`` (parsed JSON) breaks ``schema``; empty when it is valid."""
    if schema is True:
        return []
    if schema is False:
        return [f"{path}: no value is allowed"]
    if not isinstance(schema, Mapping):
        return []
    errors: list[str] = []
    s = schema
    if "type" in s:
        names = s["type"] if isinstance(s["type"], list) else [s["type"]]
        if not any(_has_type(value, n) for n in names):
            return [f"{path}: expected {' or '.join(names)}"]
    if "enum" in s and not any(json_equal(value, option) for option in s["enum"]):
        errors.append(f"{path}: not one of {s['enum']}")
    if "const" in s and not json_equal(value, s["const"]):
        errors.append(f"{path}: not {s['const']!r}")
    if _is_number(value):
        for keyword, broken in (
            ("minimum", lambda b: value < b),
            ("maximum", lambda b: value > b),
            ("exclusiveMinimum", lambda b: value <= b),
            ("exclusiveMaximum", lambda b: value >= b),
            ("multipleOf", lambda b: not _multiple_of(value, b)),
        ):
            if keyword in s and broken(s[keyword]):
                errors.append(f"{path}: {keyword} {s[keyword]}")
    if isinstance(value, str) and (
        len(value) < s.get("minLength", 0) or ("maxLength" in s and len(value) > s["maxLength"])
    ):
        errors.append(f"{path}: length {len(value)}")
    if isinstance(value, list):
        prefix = s.get("prefixItems", [])
        for i, (item, sub) in enumerate(zip(value, prefix, strict=False)):
            errors += json_schema_errors(item, sub, f"{path}[{i}]")
        if "items" in s:
            for i in range(len(prefix), len(value)):
                errors += json_schema_errors(value[i], s["items"], f"{path}[{i}]")
        if len(value) < s.get("minItems", 0) or ("maxItems" in s and len(value) > s["maxItems"]):
            errors.append(f"{path}: {len(value)} items")
        if s.get("uniqueItems") and any(
            json_equal(value[i], value[j]) for i in range(len(value)) for j in range(i + 1, len(value))
        ):
            errors.append(f"{path}: items are not unique")
    if isinstance(value, dict):
        properties = s.get("properties", {})
        errors += [f"{path}: missing {name!r}" for name in s.get("required", []) if name not in value]
        for name, item in value.items():
            if name in properties:
                errors += json_schema_errors(item, properties[name], f"{path}.{name}")
            elif "additionalProperties" in s:
                errors += json_schema_errors(item, s["additionalProperties"], f"{path}.{name}")
        if len(value) < s.get("minProperties", 0) or ("maxProperties" in s and len(value) > s["maxProperties"]):
            errors.append(f"{path}: {len(value)} properties")
    for sub in s.get("allOf", []):
        errors += json_schema_errors(value, sub, path)
    if "anyOf" in s and not any(not json_schema_errors(value, sub, path) for sub in s["anyOf"]):
        errors.append(f"{path}: matches none of anyOf")
    if "oneOf" in s and sum(not json_schema_errors(value, sub, path) for sub in s["oneOf"]) != 1:
        errors.append(f"{path}: does not match exactly one of oneOf")
    if "not" in s and not json_schema_errors(value, s["not"], path):
        errors.append(f"{path}: matches not")
    return errors


def in_format(answer: str, labels: Sequence[str] | None, json_schema: Any | None) -> bool:
    """Whether an answer has its declared format, as strictly as a program reading it would see
    it: one of ``labels`` exactly (surrounding whitespace aside), and/or a JSON document (nothing
    around it, no Markdown fence) that ``json_schema`` accepts."""
    text = answer.strip()
    if labels is not None and text not in labels:
        return False
    if json_schema is not None:
        try:
            value = json.loads(text)
        except ValueError:
            return False
        return not json_schema_errors(value, json_schema)
    return True
