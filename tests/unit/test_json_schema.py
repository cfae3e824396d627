"""The answer-format validator agrees with the reference implementation (``jsonschema``, Draft
2020-12) on every schema it accepts: on a table of edge cases and on random JSON documents."""

from __future__ import annotations

from typing import Any

import jsonschema
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from llmops_models.json_schema import schema_errors, unsupported_schema

SCHEMAS: list[Any] = [
    True,
    False,
    {},
    {"type": "integer"},
    {"type": ["string", "null"]},
    {"type": "number", "minimum": 0, "exclusiveMaximum": 1},
    {"type": "number", "exclusiveMinimum": -1.5, "maximum": 2},
    {"multipleOf": 3},
    {"multipleOf": 0.1},
    {"type": "string", "minLength": 2, "maxLength": 3},
    {"enum": ["a", 1, None, [1, 2], {"k": True}]},
    {"const": 1},
    {"const": True},
    {"const": {"a": [1, 2.0]}},
    {"type": "array", "items": {"type": "string"}, "minItems": 1, "maxItems": 3},
    {"type": "array", "prefixItems": [{"type": "integer"}, {"type": "string"}], "items": False},
    {"type": "array", "prefixItems": [{"type": "integer"}]},
    {"uniqueItems": True},
    {
        "type": "object",
        "properties": {"intent": {"enum": ["refund", "card_arrival"]}, "confidence": {"type": "number"}},
        "required": ["intent"],
        "additionalProperties": False,
    },
    {"type": "object", "properties": {"a": {"type": "integer"}}, "additionalProperties": {"type": "string"}},
    {"minProperties": 1, "maxProperties": 2},
    {"allOf": [{"type": "integer"}, {"minimum": 2}]},
    {"anyOf": [{"type": "string"}, {"type": "integer", "maximum": 5}]},
    {"oneOf": [{"type": "integer"}, {"minimum": 2}]},
    {"not": {"type": "object"}},
    {"type": "object", "properties": {"a~b/c": {"type": "string"}}},
    {"format": "email", "description": "annotations do not constrain", "examples": ["x"]},
]

INSTANCES: list[Any] = [
    None,
    True,
    False,
    0,
    1,
    1.0,
    2,
    2.5,
    3,
    0.3,
    0.30000000000000004,
    -1.5,
    6,
    10**30,
    1e308,
    "",
    "a",
    "ab",
    "abcd",
    [],
    [1, 2],
    [1, 2.0],
    [1, "x"],
    [1, "x", "y"],
    [True, 1],
    [[1], [1.0]],
    ["a", "b", "c", "d"],
    {},
    {"k": True},
    {"k": 1},
    {"intent": "refund"},
    {"intent": "refund", "confidence": 0.9},
    {"intent": "refund", "extra": 1},
    {"intent": "other"},
    {"a": 1, "b": "x"},
    {"a": "1"},
    {"a": 1, "b": 2},
    {"a": [1, 2.0]},
    {"a~b/c": 3},
]


@pytest.mark.parametrize("schema", SCHEMAS, ids=[str(index) for index in range(len(SCHEMAS))])
def test_verdicts_match_the_reference_implementation(schema: Any) -> None:
    assert unsupported_schema(schema) is None
    reference = jsonschema.Draft202012Validator(schema)
    for instance in INSTANCES:
        assert (not schema_errors(instance, schema)) == reference.is_valid(instance), (schema, instance)


JSON = st.recursive(
    st.none()
    | st.booleans()
    | st.integers(min_value=-(10**20), max_value=10**20)
    | st.floats(allow_nan=False, allow_infinity=False)
    | st.text(max_size=6),
    lambda children: st.lists(children, max_size=4) | st.dictionaries(st.text(max_size=4), children, max_size=4),
    max_leaves=12,
)


@settings(max_examples=300, deadline=None)
@given(instance=JSON, schema=st.sampled_from(SCHEMAS))
def test_verdicts_match_on_random_documents(instance: Any, schema: Any) -> None:
    expected = jsonschema.Draft202012Validator(schema).is_valid(instance)
    assert (not schema_errors(instance, schema)) == expected


def test_errors_name_where_in_the_answer_they_are() -> None:
    schema = SCHEMAS[18]
    (error,) = schema_errors({"intent": "other"}, schema)
    assert error.path == "/intent" and "enum" in error.message
    (error,) = schema_errors({"a~b/c": 3}, SCHEMAS[25])
    assert error.path == "/a~0b~1c"  # a JSON Pointer
