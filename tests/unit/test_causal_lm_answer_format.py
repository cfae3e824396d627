"""The causal_lm kind's JSON Schema check of generated answers agrees with ``jsonschema`` (the
reference implementation) on every keyword an answer format may use, on hand-picked edge cases
and on random documents."""

from __future__ import annotations

import random
from typing import Any

import jsonschema
import pytest

from llmops_models.kinds.causal_lm.answers import in_format, json_schema_errors

SCHEMAS: list[Any] = [
    True,
    False,
    {"type": "integer"},
    {"type": ["string", "null"]},
    {"enum": [1, "a", None, [1, 2], {"k": True}]},
    {"const": 1},
    {"const": False},
    {"type": "number", "minimum": 0, "exclusiveMaximum": 1},
    {"exclusiveMinimum": -1, "maximum": 10},
    {"multipleOf": 0.1},
    {"multipleOf": 3},
    {"type": "string", "minLength": 2, "maxLength": 3},
    {"type": "array", "prefixItems": [{"type": "integer"}, {"type": "string"}], "items": {"type": "boolean"}},
    {"type": "array", "items": {"type": "integer"}, "minItems": 1, "maxItems": 3, "uniqueItems": True},
    {
        "type": "object",
        "properties": {"a": {"type": "integer"}, "b": {"type": "string"}},
        "required": ["a"],
        "additionalProperties": False,
    },
    {"type": "object", "additionalProperties": {"type": "integer"}, "minProperties": 1, "maxProperties": 2},
    {"allOf": [{"type": "integer"}, {"minimum": 2}]},
    {"anyOf": [{"type": "string"}, {"type": "integer", "maximum": 0}]},
    {"oneOf": [{"type": "integer"}, {"type": "number", "minimum": 1}]},
    {"not": {"type": "null"}},
    {"title": "annotations only", "description": "x", "format": "email"},
]
VALUES: list[Any] = [
    None,
    True,
    False,
    0,
    1,
    1.0,
    2,
    2.5,
    0.30000000000000004,
    0.3,
    -1,
    9,
    10,
    12,
    "",
    "a",
    "ab",
    "abcd",
    [],
    [1],
    [1, 1],
    [1, "x"],
    [1, "x", True],
    [1, "x", 2],
    [1, 2, 3, 4],
    [1, 2],
    {},
    {"a": 1},
    {"a": 1.0, "b": "x"},
    {"a": "1"},
    {"b": "x"},
    {"a": 1, "c": 2},
    {"k": True},
    {"x": 1, "y": 2, "z": 3},
]


@pytest.mark.parametrize("schema", SCHEMAS, ids=[str(i) for i in range(len(SCHEMAS))])
def test_verdicts_agree_with_jsonschema(schema: Any) -> None:
    validator = jsonschema.Draft202012Validator(schema)
    for value in VALUES:
        assert (not json_schema_errors(value, schema)) == validator.is_valid(value), (schema, value)


def _random_value(rng: random.Random, depth: int = 0) -> Any:
    kind = rng.choice(["null", "bool", "int", "float", "str", "list", "dict"] if depth < 2 else ["int", "str", "bool"])
    if kind == "null":
        return None
    if kind == "bool":
        return rng.random() < 0.5
    if kind == "int":
        return rng.randint(-3, 12)
    if kind == "float":
        return rng.choice([0.5, 1.0, 2.0, 0.1, 3.3])
    if kind == "str":
        return "x" * rng.randint(0, 4)
    if kind == "list":
        return [_random_value(rng, depth + 1) for _ in range(rng.randint(0, 4))]
    return {rng.choice("abcxy"): _random_value(rng, depth + 1) for _ in range(rng.randint(0, 3))}


def test_verdicts_agree_on_random_documents() -> None:
    rng = random.Random(7)
    validators = [(schema, jsonschema.Draft202012Validator(schema)) for schema in SCHEMAS]
    for _ in range(400):
        value = _random_value(rng)
        for schema, validator in validators:
            assert (not json_schema_errors(value, schema)) == validator.is_valid(value), (schema, value)


def test_an_answer_is_in_format_only_as_a_program_would_read_it() -> None:
    assert in_format(" card_arrival ", ["card_arrival"], None)
    assert not in_format("Card arrival", ["card_arrival"], None)
    assert in_format('{"a": 1}', None, {"type": "object"}) and not in_format("{'a': 1}", None, {"type": "object"})
    assert not in_format('Here it is: {"a": 1}', None, {"type": "object"})
