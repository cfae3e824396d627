"""The causal_lm kind's format check of generated answers (``in_format``): as strict as a program
reading the answer, with the one JSON Schema validator of the platform (``llmops_models.json_schema``,
whose verdicts ``test_json_schema.py`` compares with ``jsonschema``)."""

from __future__ import annotations

from llmops_models.kinds.causal_lm.answers import in_format


def test_an_answer_is_in_format_only_as_a_program_would_read_it() -> None:
    assert in_format(" card_arrival ", ["card_arrival"], None)
    assert not in_format("Card arrival", ["card_arrival"], None)
    assert in_format('{"a": 1}', None, {"type": "object"}) and not in_format("{'a': 1}", None, {"type": "object"})
    assert not in_format('Here it is: {"a": 1}', None, {"type": "object"})
    assert not in_format('```json\n{"a": 1}\n```', None, {"type": "object"})
    schema = {"type": "object", "properties": {"amount": {"type": "number", "minimum": 0}}, "required": ["amount"]}
    assert in_format('{"amount": 12.5}', None, schema)
    assert not in_format('{"amount": -1}', None, schema) and not in_format("{}", None, schema)
    assert in_format('"card_arrival"', ["card_arrival"], None) is False  # a label is bare text, not a JSON string


def test_no_answer_is_certified_against_a_format_the_validator_cannot_check() -> None:
    # ``pattern`` is refused at ingestion (a producer's regular expression could stall it); an
    # answer is never called valid against it, rather than checked against half of the schema.
    assert not in_format('"abc"', None, {"type": "string", "pattern": "^a"})
    assert in_format('"abc"', None, {"type": "string", "maxLength": 3})
