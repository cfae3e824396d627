"""A JSON Schema (2020-12) validator for the subset of keywords an answer format may use: the one
check of answer formats, used by ingestion (reference answers) and by the causal_lm kind
(generated answers, ``kinds/causal_lm/answers.in_format``).

An instruction example may declare that its answer is a JSON document valid against a schema.
Ingestion checks the reference answer against it, so only what can be checked is accepted: a
schema with a keyword outside ``SUPPORTED`` (or ``ANNOTATIONS``, which never constrain) is refused
as a whole rather than half-enforced. Within the subset the verdicts are those of the reference
implementation (``jsonschema``; a unit test compares the two), so a consumer validating with a
full implementation agrees with ingestion on every schema ingestion accepted.

Left out on purpose: ``pattern`` and ``patternProperties`` (a regular expression from outside run
by a backtracking engine can take exponential time on an answer: a producer could stall the
consumer), ``$ref``/``$defs`` (references), ``if``/``then``/``else``, ``contains``, the
``unevaluated*`` and ``dependent*`` keywords. Work is bounded: at most ``MAX_DEPTH`` levels and
``MAX_NODES`` subschemas, so checking an answer costs at most their product by its size.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from fractions import Fraction
from typing import Any

MAX_DEPTH = 32
MAX_NODES = 2000

TYPES = frozenset({"null", "boolean", "object", "array", "number", "integer", "string"})
ANNOTATIONS = frozenset(
    {
        "$schema",
        "$id",
        "$comment",
        "title",
        "description",
        "default",
        "examples",
        "deprecated",
        "readOnly",
        "writeOnly",
        "format",  # an annotation in 2020-12 unless a vocabulary asserts it
    }
)
# Keyword → the kind of value it takes.
_SCHEMA = "schema"
_SCHEMAS = "schemas"
_SCHEMA_MAP = "schema map"
_COUNT = "count"
_NUMBER = "number"
_POSITIVE = "positive number"
_BOOLEAN = "boolean"
_STRINGS = "strings"
_ARRAY = "array"
_ANY = "any"
_TYPE = "type"
SUPPORTED: dict[str, str] = {
    "type": _TYPE,
    "enum": _ARRAY,
    "const": _ANY,
    "minimum": _NUMBER,
    "maximum": _NUMBER,
    "exclusiveMinimum": _NUMBER,
    "exclusiveMaximum": _NUMBER,
    "multipleOf": _POSITIVE,
    "minLength": _COUNT,
    "maxLength": _COUNT,
    "items": _SCHEMA,
    "prefixItems": _SCHEMAS,
    "minItems": _COUNT,
    "maxItems": _COUNT,
    "uniqueItems": _BOOLEAN,
    "properties": _SCHEMA_MAP,
    "required": _STRINGS,
    "additionalProperties": _SCHEMA,
    "minProperties": _COUNT,
    "maxProperties": _COUNT,
    "allOf": _SCHEMAS,
    "anyOf": _SCHEMAS,
    "oneOf": _SCHEMAS,
    "not": _SCHEMA,
}


@dataclass(frozen=True, slots=True)
class SchemaError:
    """Where in the answer (a JSON Pointer) a constraint failed, and which."""

    path: str
    message: str


def unsupported_schema(schema: Any) -> str | None:
    """Why ``schema`` cannot be used as an answer format, or None when it can."""
    nodes = [0]
    return _check_schema(schema, "", 0, nodes)


def _check_schema(schema: Any, where: str, depth: int, nodes: list[int]) -> str | None:
    nodes[0] += 1
    if nodes[0] > MAX_NODES:
        return f"more than {MAX_NODES} subschemas"
    if depth > MAX_DEPTH:
        return f"nested deeper than {MAX_DEPTH} levels at {where or '/'}"
    if isinstance(schema, bool):
        return None
    if not isinstance(schema, Mapping):
        return f"{where or '/'} is not a schema (an object or a boolean)"
    for keyword, value in schema.items():
        at = f"{where}/{keyword}"
        if keyword in ANNOTATIONS:
            continue
        kind = SUPPORTED.get(keyword)
        if kind is None:
            return f"keyword {keyword!r} at {where or '/'} is not supported"
        problem = _check_value(kind, value, at, depth, nodes)
        if problem is not None:
            return problem
    return None


def _check_value(kind: str, value: Any, at: str, depth: int, nodes: list[int]) -> str | None:
    if kind == _SCHEMA:
        return _check_schema(value, at, depth + 1, nodes)
    if kind == _SCHEMAS:
        if not isinstance(value, list) or not value:
            return f"{at} must be a non-empty array of schemas"
        for index, item in enumerate(value):
            problem = _check_schema(item, f"{at}/{index}", depth + 1, nodes)
            if problem is not None:
                return problem
        return None
    if kind == _SCHEMA_MAP:
        if not isinstance(value, Mapping):
            return f"{at} must be an object of schemas"
        for name, item in value.items():
            problem = _check_schema(item, f"{at}/{name}", depth + 1, nodes)
            if problem is not None:
                return problem
        return None
    if kind == _TYPE:
        names = value if isinstance(value, list) else [value]
        if not names or not all(isinstance(name, str) and name in TYPES for name in names):
            return f"{at} must name types among {sorted(TYPES)}"
        if len(set(names)) != len(names):
            return f"{at} repeats a type"
        return None
    if kind == _COUNT:
        return None if _is_integer(value) and value >= 0 else f"{at} must be a non-negative integer"
    if kind == _NUMBER:
        return None if _is_number(value) else f"{at} must be a number"
    if kind == _POSITIVE:
        return None if _is_number(value) and value > 0 else f"{at} must be a number above 0"
    if kind == _BOOLEAN:
        return None if isinstance(value, bool) else f"{at} must be a boolean"
    if kind == _STRINGS:
        if not isinstance(value, list) or not all(isinstance(item, str) for item in value):
            return f"{at} must be an array of strings"
        return None if len(set(value)) == len(value) else f"{at} repeats a name"
    if kind == _ARRAY:
        return None if isinstance(value, list) else f"{at} must be an array"
    return None  # _ANY


def schema_errors(instance: Any, schema: Any) -> list[SchemaError]:
    """Every constraint of ``schema`` (accepted by ``unsupported_schema``) that ``instance`` (a
    parsed JSON document) breaks; empty when it is valid."""
    errors: list[SchemaError] = []
    _validate(instance, schema, "", errors)
    return errors


def _validate(instance: Any, schema: Any, path: str, errors: list[SchemaError]) -> None:
    if schema is True:
        return
    if schema is False:
        errors.append(SchemaError(path, "no value is allowed here"))
        return
    for keyword, value in schema.items():
        check = _KEYWORDS.get(keyword)
        if check is not None:
            check(instance, value, schema, path, errors)


# --- the keywords -------------------------------------------------------------------------------


def _type(instance: Any, value: Any, schema: Any, path: str, errors: list[SchemaError]) -> None:
    names = value if isinstance(value, list) else [value]
    if not any(_has_type(instance, name) for name in names):
        errors.append(SchemaError(path, f"expected type {' or '.join(names)}, got {_type_name(instance)}"))


def _enum(instance: Any, value: Any, schema: Any, path: str, errors: list[SchemaError]) -> None:
    if not any(_json_equal(instance, option) for option in value):
        errors.append(SchemaError(path, f"not one of the {len(value)} enum values"))


def _const(instance: Any, value: Any, schema: Any, path: str, errors: list[SchemaError]) -> None:
    if not _json_equal(instance, value):
        errors.append(SchemaError(path, "not the const value"))


def _bound(name: str) -> Any:
    def check(instance: Any, value: Any, schema: Any, path: str, errors: list[SchemaError]) -> None:
        if not _is_number(instance):
            return
        broken = {
            "minimum": instance < value,
            "maximum": instance > value,
            "exclusiveMinimum": instance <= value,
            "exclusiveMaximum": instance >= value,
        }[name]
        if broken:
            errors.append(SchemaError(path, f"breaks {name} {value}"))

    return check


def _multiple_of(instance: Any, value: Any, schema: Any, path: str, errors: list[SchemaError]) -> None:
    if not _is_number(instance):
        return
    # As the reference implementation decides it (floats are inexact: 0.3 is not 3 times 0.1 in a
    # remainder, but its quotient is integral).
    if isinstance(value, float):
        quotient = instance / value
        try:
            failed = int(quotient) != quotient
        except OverflowError:  # the quotient overflowed to infinity: exact arithmetic instead
            failed = Fraction(instance) % Fraction(value) != 0
    else:
        failed = bool(instance % value)
    if failed:
        errors.append(SchemaError(path, f"not a multiple of {value}"))


def _length(name: str) -> Any:
    def check(instance: Any, value: Any, schema: Any, path: str, errors: list[SchemaError]) -> None:
        if isinstance(instance, str) and (len(instance) < value if name == "minLength" else len(instance) > value):
            errors.append(SchemaError(path, f"breaks {name} {value}"))

    return check


def _count(name: str, kind: type[list[Any]] | type[dict[str, Any]]) -> Any:
    def check(instance: Any, value: Any, schema: Any, path: str, errors: list[SchemaError]) -> None:
        if not isinstance(instance, kind):
            return
        size = len(instance)
        if size < value if name.startswith("min") else size > value:
            errors.append(SchemaError(path, f"breaks {name} {value}"))

    return check


def _items(instance: Any, value: Any, schema: Any, path: str, errors: list[SchemaError]) -> None:
    if not isinstance(instance, list):
        return
    start = len(schema.get("prefixItems", []))
    for index in range(start, len(instance)):
        _validate(instance[index], value, f"{path}/{index}", errors)


def _prefix_items(instance: Any, value: Any, schema: Any, path: str, errors: list[SchemaError]) -> None:
    if not isinstance(instance, list):
        return
    for index, (item, item_schema) in enumerate(zip(instance, value, strict=False)):
        _validate(item, item_schema, f"{path}/{index}", errors)


def _unique_items(instance: Any, value: Any, schema: Any, path: str, errors: list[SchemaError]) -> None:
    if not value or not isinstance(instance, list):
        return
    for index, item in enumerate(instance):
        if any(_json_equal(item, earlier) for earlier in instance[:index]):
            errors.append(SchemaError(path, "items are not unique"))
            return


def _properties(instance: Any, value: Any, schema: Any, path: str, errors: list[SchemaError]) -> None:
    if not isinstance(instance, dict):
        return
    for name, property_schema in value.items():
        if name in instance:
            _validate(instance[name], property_schema, f"{path}/{_escape(name)}", errors)


def _required(instance: Any, value: Any, schema: Any, path: str, errors: list[SchemaError]) -> None:
    if not isinstance(instance, dict):
        return
    missing = [name for name in value if name not in instance]
    if missing:
        errors.append(SchemaError(path, f"missing required {', '.join(repr(name) for name in missing)}"))


def _additional_properties(instance: Any, value: Any, schema: Any, path: str, errors: list[SchemaError]) -> None:
    if not isinstance(instance, dict):
        return
    declared = schema.get("properties", {})
    extra = [name for name in instance if name not in declared]
    if value is False:
        if extra:
            errors.append(SchemaError(path, f"{len(extra)} propert{'y' if len(extra) == 1 else 'ies'} not declared"))
        return
    for name in extra:
        _validate(instance[name], value, f"{path}/{_escape(name)}", errors)


def _all_of(instance: Any, value: Any, schema: Any, path: str, errors: list[SchemaError]) -> None:
    for subschema in value:
        _validate(instance, subschema, path, errors)


def _matching(instance: Any, subschemas: Sequence[Any]) -> int:
    return sum(1 for subschema in subschemas if not schema_errors(instance, subschema))


def _any_of(instance: Any, value: Any, schema: Any, path: str, errors: list[SchemaError]) -> None:
    if not any(not schema_errors(instance, subschema) for subschema in value):
        errors.append(SchemaError(path, f"matches none of the {len(value)} anyOf schemas"))


def _one_of(instance: Any, value: Any, schema: Any, path: str, errors: list[SchemaError]) -> None:
    matched = _matching(instance, value)
    if matched != 1:
        errors.append(SchemaError(path, f"matches {matched} of the oneOf schemas, not exactly 1"))


def _not(instance: Any, value: Any, schema: Any, path: str, errors: list[SchemaError]) -> None:
    if not schema_errors(instance, value):
        errors.append(SchemaError(path, "matches the schema under not"))


_KEYWORDS: dict[str, Any] = {
    "type": _type,
    "enum": _enum,
    "const": _const,
    "minimum": _bound("minimum"),
    "maximum": _bound("maximum"),
    "exclusiveMinimum": _bound("exclusiveMinimum"),
    "exclusiveMaximum": _bound("exclusiveMaximum"),
    "multipleOf": _multiple_of,
    "minLength": _length("minLength"),
    "maxLength": _length("maxLength"),
    "items": _items,
    "prefixItems": _prefix_items,
    "minItems": _count("minItems", list),
    "maxItems": _count("maxItems", list),
    "uniqueItems": _unique_items,
    "properties": _properties,
    "required": _required,
    "additionalProperties": _additional_properties,
    "minProperties": _count("minProperties", dict),
    "maxProperties": _count("maxProperties", dict),
    "allOf": _all_of,
    "anyOf": _any_of,
    "oneOf": _one_of,
    "not": _not,
}
if set(_KEYWORDS) != set(SUPPORTED):  # pragma: no cover - a definition error, caught at import
    raise RuntimeError("every supported keyword needs a check")


# --- JSON values --------------------------------------------------------------------------------


def _is_number(value: Any) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool) and not _is_nan(value)


def _is_nan(value: Any) -> bool:
    return isinstance(value, float) and math.isnan(value)


def _is_integer(value: Any) -> bool:
    """An integer in JSON Schema's sense: any number with a zero fractional part (``1.0`` too)."""
    if isinstance(value, bool):
        return False
    if isinstance(value, int):
        return True
    return isinstance(value, float) and math.isfinite(value) and value.is_integer()


def _has_type(value: Any, name: str) -> bool:
    if name == "null":
        return value is None
    if name == "boolean":
        return isinstance(value, bool)
    if name == "object":
        return isinstance(value, dict)
    if name == "array":
        return isinstance(value, list)
    if name == "string":
        return isinstance(value, str)
    if name == "integer":
        return _is_integer(value)
    return isinstance(value, int | float) and not isinstance(value, bool)  # number


def _type_name(value: Any) -> str:
    for name in ("null", "boolean", "object", "array", "string", "integer", "number"):
        if _has_type(value, name):
            return name
    return type(value).__name__


def _json_equal(left: Any, right: Any) -> bool:
    """Equality of JSON values: ``1 == 1.0``, but ``true`` is not ``1`` (Python's ``==`` says it is)."""
    if isinstance(left, bool) or isinstance(right, bool):
        return isinstance(left, bool) and isinstance(right, bool) and left == right
    if isinstance(left, list) and isinstance(right, list):
        return len(left) == len(right) and all(_json_equal(a, b) for a, b in zip(left, right, strict=True))
    if isinstance(left, dict) and isinstance(right, dict):
        return left.keys() == right.keys() and all(_json_equal(left[key], right[key]) for key in left)
    if _is_number(left) and _is_number(right):
        return bool(left == right)
    return type(left) is type(right) and bool(left == right)


def _escape(name: str) -> str:
    return name.replace("~", "~0").replace("/", "~1")
