import re
from pathlib import Path

import pytest

from llmops_ingestion.domain.validation import RejectReason, ValidationRules, check_record


@pytest.mark.parametrize(
    ("text", "label", "rules", "reason"),
    [
        ("x" * 11, None, ValidationRules(max_text_length=10), RejectReason.TEXT_TOO_LONG),
        ("   ", None, ValidationRules(), RejectReason.EMPTY_TEXT),
        ("ok", "nope", ValidationRules(allowed_labels={"a", "b"}), RejectReason.UNKNOWN_LABEL),
        ("ok", " ", ValidationRules(), RejectReason.INVALID_LABEL),
        ("ok", "a ", ValidationRules(), RejectReason.INVALID_LABEL),
    ],
)
def test_rule_violations_have_stable_reasons(text, label, rules, reason) -> None:
    violation = check_record(text=text, label=label, rules=rules)
    assert violation is not None and violation.reason is reason
    assert text not in violation.detail or not text.strip()  # details never echo the text


@pytest.mark.parametrize(
    ("label", "allowed"),
    [(None, {"a"}), ("a", {"a"}), ("anything", set())],
)
def test_valid_records_pass(label, allowed) -> None:
    rules = ValidationRules(max_text_length=10, allowed_labels=allowed)
    assert check_record(text="x" * 10, label=label, rules=rules) is None


def test_reason_codes_are_stable() -> None:
    codes = {reason.value for reason in RejectReason}
    assert codes == {
        "text_too_long",
        "empty_text",
        "unknown_label",
        "invalid_label",
        "invalid_turns",
        "too_many_tokens",
        "invalid_output_format",
        "invalid_answer_format",
    }


def test_the_readme_lists_every_ingestion_reason_with_its_meaning() -> None:
    """The README's table of ingestion's DLQ reasons is this catalogue, row for row."""
    readme = (Path(__file__).parents[4] / "docs" / "events.md").read_text()  # the manual page for producers
    rows = dict(re.findall(r"^\| `([a-z_]+)` \| (.+) \|$", readme.split("**DLQ reasons** of ingestion", 1)[1], re.M))
    listed = {code: meaning for code, meaning in rows.items() if code in {r.value for r in RejectReason}}
    assert listed == {reason.value: reason.meaning for reason in RejectReason}
