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
    assert codes == {"text_too_long", "empty_text", "unknown_label", "invalid_label"}
