"""Instruction examples: the rules of their turns and answer format (each DLQ reason), and the
curation of every turn (normalised, redacted, identified)."""

from __future__ import annotations

import json

import pytest

from llmops_ingestion.domain.instructions import (
    AnswerFormat,
    InstructionInput,
    Turn,
    curate_instructions,
    instruction_dedup_key,
    normalise_turn,
)
from llmops_ingestion.domain.validation import (
    RejectReason,
    ValidationRules,
    check_answer,
    check_output_format,
    check_token_count,
    check_turns,
)
from llmops_privacy.redaction import PiiKind, Redactor

RULES = ValidationRules(max_text_length=40, max_instruction_tokens=100)


def _roles(*roles: str) -> tuple[list[str], list[str]]:
    return list(roles), [f"turn {index}" for index in range(len(roles))]


@pytest.mark.parametrize(
    "roles",
    [
        ("user", "assistant"),
        ("system", "user", "assistant"),
        ("user", "assistant", "user", "assistant"),
        ("system", "user", "assistant", "user", "assistant"),
    ],
)
def test_turns_in_order_pass(roles: tuple[str, ...]) -> None:
    assert check_turns(*_roles(*roles), rules=RULES) is None


@pytest.mark.parametrize(
    ("roles", "said"),
    [
        ((), "no turns"),
        (("system",), "system turn only"),
        (("assistant", "user"), "turn 1 of 2 is 'assistant': expected 'user'"),
        (("system", "assistant"), "turn 2 of 2 is 'assistant': expected 'user'"),
        (("user", "user", "assistant"), "turn 2 of 3 is 'user': expected 'assistant'"),
        (("user", "system", "assistant"), "turn 2 of 3 is 'system': a system turn is only allowed first"),
        (("system", "system", "user", "assistant"), "turn 2 of 4 is 'system'"),
        (("user",), "the last of 1 turns is 'user'"),
        (("system", "user", "assistant", "user"), "the last of 4 turns is 'user'"),
    ],
)
def test_turns_out_of_order_are_invalid_turns_and_the_detail_says_where(roles: tuple[str, ...], said: str) -> None:
    violation = check_turns(*_roles(*roles), rules=RULES)
    assert violation is not None and violation.reason is RejectReason.INVALID_TURNS
    assert said in violation.detail


def test_every_turn_is_held_to_the_rules_of_a_record_text() -> None:
    roles = ["system", "user", "assistant"]
    blank = check_turns(roles, ["be brief", " \n\t ", "ok"], rules=RULES)
    assert blank is not None and blank.reason is RejectReason.EMPTY_TEXT and "turn 2 (user)" in blank.detail
    long = check_turns(roles, ["x" * 41, "hi", "ok"], rules=RULES)
    assert long is not None and long.reason is RejectReason.TEXT_TOO_LONG and "turn 1 (system)" in long.detail
    assert "x" * 41 not in long.detail  # details never echo the text
    assert check_turns(roles, ["x" * 40, "hi", "ok"], rules=RULES) is None


def test_too_many_tokens() -> None:
    assert check_token_count(100, rules=RULES) is None
    violation = check_token_count(101, rules=RULES)
    assert violation is not None and violation.reason is RejectReason.TOO_MANY_TOKENS
    assert "101 tokens" in violation.detail and "limit is 100" in violation.detail


@pytest.mark.parametrize(
    ("labels", "schema", "said"),
    [
        (["a", " "], None, "blank"),
        (["a", "b "], None, "surrounding whitespace"),
        (["a", "a"], None, "repeat"),
        (None, {"type": "string", "pattern": "^(a+)+$"}, "keyword 'pattern' at / is not supported"),
        (None, {"properties": {"x": {"$ref": "#/$defs/x"}}}, "keyword '$ref' at /properties/x is not supported"),
        (None, {"type": "text"}, "/type must name types"),
        (None, {"anyOf": []}, "/anyOf must be a non-empty array"),
        (None, {"minLength": -1}, "/minLength must be a non-negative integer"),
        (None, {"multipleOf": 0}, "/multipleOf must be a number above 0"),
        (None, {"properties": {"x": 3}}, "/properties/x is not a schema"),
        (None, {"required": ["a", "a"]}, "/required repeats a name"),
    ],
)
def test_an_unusable_output_format_is_invalid_output_format(labels, schema, said: str) -> None:
    violation = check_output_format(labels, schema)
    assert violation is not None and violation.reason is RejectReason.INVALID_OUTPUT_FORMAT
    assert said in violation.detail


def test_output_formats_that_can_be_checked_pass() -> None:
    assert check_output_format(None, None) is None
    assert check_output_format(["card_arrival", "lost_card"], None) is None
    schema = {
        "$schema": "https://json-schema.org/draft/2020-12/schema",
        "title": "intent",
        "type": "object",
        "properties": {"intent": {"enum": ["a", "b"]}, "confidence": {"type": "number", "minimum": 0}},
        "required": ["intent"],
        "additionalProperties": False,
    }
    assert check_output_format(None, schema) is None


def test_a_deep_or_huge_schema_is_refused() -> None:
    deep: dict = {"type": "string"}
    for _ in range(40):
        deep = {"items": deep}
    violation = check_output_format(None, deep)
    assert violation is not None and "nested deeper than 32" in violation.detail
    wide = {"properties": {f"p{index}": {"type": "string"} for index in range(2500)}}
    violation = check_output_format(None, wide)
    assert violation is not None and "more than 2000 subschemas" in violation.detail


@pytest.mark.parametrize(
    ("answer", "labels", "schema", "said"),
    [
        ("refund", ["card_arrival", "lost_card"], None, "not one of the 2 declared labels"),
        ("Card_arrival", ["card_arrival"], None, "not one of the 1 declared labels"),
        ("the intent is refund", None, {"type": "object"}, "not JSON"),
        ("NaN", None, {"type": "number"}, "not JSON"),
        ('{"intent": 3}', None, {"properties": {"intent": {"type": "string"}}}, "first at /intent"),
        ("{}", None, {"required": ["intent"]}, "missing required 'intent'"),
        ("[" * 5000 + "]" * 5000, None, {"type": "array"}, "not JSON"),
        ('{"intent": "a", "x": 1}', None, {"properties": {"intent": {}}, "additionalProperties": False}, "1 property"),
    ],
)
def test_an_answer_without_the_declared_format_is_invalid_answer_format(answer, labels, schema, said) -> None:
    violation = check_answer(answer, labels=labels, json_schema=schema)
    assert violation is not None and violation.reason is RejectReason.INVALID_ANSWER_FORMAT
    assert said in violation.detail
    if len(answer) > 8:
        assert answer not in violation.detail  # details never echo the answer


@pytest.mark.parametrize(
    ("answer", "labels", "schema"),
    [
        ("anything at all", None, None),
        ("lost_card", ["card_arrival", "lost_card"], None),
        ('{"intent": "a", "confidence": 0.5}', None, {"type": "object", "required": ["intent"]}),
        ("3", None, {"type": "integer", "maximum": 3}),
        ('"a"', ['"a"'], {"type": "string"}),  # both declared: both must hold
    ],
)
def test_answers_with_the_declared_format_pass(answer, labels, schema) -> None:
    assert check_answer(answer, labels=labels, json_schema=schema) is None


# --- curation ---------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def redactor() -> Redactor:
    return Redactor(phone_regions=["US", "GB"], detect_names=True)


def _example(*turns: tuple[str, str], **fields) -> InstructionInput:
    return InstructionInput(
        tenant=fields.pop("tenant", "acme"),
        source="playbook",
        turns=tuple(Turn(role, content) for role, content in turns),
        **fields,
    )


def test_every_turn_is_redacted_and_the_pii_counts_are_summed(redactor: Redactor) -> None:
    example = _example(
        ("system", "Escalate to jane.doe@example.com when unsure."),
        ("user", "My name is John Smith, call me on +44 20 7946 0958."),
        ("assistant", "Thanks, I will mail ops@example.com about it."),
        metadata={"reply_to": "x.y@example.org"},
    )
    (curated,) = curate_instructions([example], redact=redactor.redact)
    assert [turn.content for turn in curated.turns] == [
        "Escalate to <EMAIL> when unsure.",
        "My name is <PERSON>, call me on <PHONE>.",
        "Thanks, I will mail <EMAIL> about it.",
    ]
    assert curated.metadata == {"reply_to": "<EMAIL>"}
    assert curated.pii_counts == {PiiKind.EMAIL: 3, PiiKind.PERSON: 1, PiiKind.PHONE: 1}
    assert curated.prompt == "My name is <PERSON>, call me on <PHONE>."
    assert curated.answer == "Thanks, I will mail <EMAIL> about it."
    messages = json.loads(curated.messages_json)
    assert messages == [turn.as_dict() for turn in curated.turns]
    assert "example.com" not in curated.messages_json and "Smith" not in curated.messages_json


def test_ids_and_duplicates_come_from_the_normalised_redacted_turns(redactor: Redactor) -> None:
    first = _example(("user", "Where is  my card?"), ("assistant", "On its way."))
    same = _example(("user", "where is my CARD?\r\n"), ("assistant", "On its   way."))
    other_roles = _example(("user", "On its way."), ("assistant", "Where is my card?"))
    named = _example(("user", "Where is my card?"), ("assistant", "On its way."), record_id="pb-7")
    other_tenant = _example(("user", "Where is  my card?"), ("assistant", "On its way."), tenant="globex")
    a, b, c, d, e = curate_instructions([first, same, other_roles, named, other_tenant], redact=redactor.redact)
    assert a.dedup_key == b.dedup_key and a.record_id == b.record_id
    assert a.record_id.startswith("acme/i-") and len(a.record_id) == len("acme/i-") + 32
    assert c.dedup_key != a.dedup_key
    assert d.record_id == "acme/pb-7" and d.dedup_key == a.dedup_key
    assert e.dedup_key == a.dedup_key and e.record_id != a.record_id  # ids are per tenant


def test_a_turn_keeps_its_lines_and_indentation() -> None:
    assert normalise_turn('{\r\n  "intent": "refund"\r\n}\n\n') == '{\n  "intent": "refund"\n}'
    assert normalise_turn("  a\r\n    b\rc  ") == "a\n    b\nc"
    assert normalise_turn("\uff46\uff55\uff4c\uff4c width") == "full width"  # NFKC (full-width letters)


def test_instruction_keys_never_equal_a_records_text_key() -> None:
    from llmops_ingestion.domain.curation import dedup_key

    assert instruction_dedup_key([Turn("user", "hi")]) != dedup_key("user\x1fhi")


def test_the_output_format_is_kept_as_canonical_json() -> None:
    assert AnswerFormat().to_json() == ""
    assert AnswerFormat(labels=("b", "a")).to_json() == '{"json_schema":null,"labels":["b","a"]}'
    schema = {"type": "object", "required": ["é"]}
    assert json.loads(AnswerFormat(json_schema=schema).to_json()) == {"labels": None, "json_schema": schema}
