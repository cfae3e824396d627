import time

import pytest

from llmops_privacy.redaction import PiiKind, Redactor


@pytest.mark.parametrize(
    ("text", "expected", "kind"),
    [
        ("write to jane.doe@example.com today", "write to <EMAIL> today", PiiKind.EMAIL),
        ("call me on +1 (415) 555-2671 please", "call me on <PHONE> please", PiiKind.PHONE),
        ("my number is 020 7946 0958", "my number is <PHONE>", PiiKind.PHONE),
        ("card 4111 1111 1111 1111 was charged", "card <CREDIT_CARD> was charged", PiiKind.CREDIT_CARD),
        ("card 4111-1111-1111-1111", "card <CREDIT_CARD>", PiiKind.CREDIT_CARD),
        ("IBAN DE89 3704 0044 0532 0130 00 please", "IBAN <IBAN> please", PiiKind.IBAN),
        ("IBAN GB82WEST12345698765432", "IBAN <IBAN>", PiiKind.IBAN),
        ("from 192.168.1.20 again", "from <IP_ADDRESS> again", PiiKind.IP_ADDRESS),
        ("from 2001:db8::1 again", "from <IP_ADDRESS> again", PiiKind.IP_ADDRESS),
        ("Hello, my name is Jane Doe and", "Hello, my name is <PERSON> and", PiiKind.PERSON),
        ("please ask Dr. Watson", "please ask Dr. <PERSON>", PiiKind.PERSON),
    ],
)
def test_each_kind_is_replaced_by_its_placeholder(redactor: Redactor, text: str, expected: str, kind: PiiKind) -> None:
    result = redactor.redact(text)
    assert result.text == expected
    assert result.counts == {kind: 1}


@pytest.mark.parametrize(
    "text",
    [
        "card 4111 1111 1111 1112 fails the Luhn check",
        "IBAN DE89 3704 0044 0532 0130 01 has a wrong checksum",
        "version 1.2.3 costs 3.50 EUR at 12:30, order 123456",
        "999.999.999.999 is not an address",
        "I still have not received my new card, what should I do?",
        "I am Canadian and This is The third time",
        "write to nobody@localhost",
    ],
)
def test_lookalikes_are_left_alone(redactor: Redactor, text: str) -> None:
    result = redactor.redact(text)
    assert result.text == text
    assert result.total == 0


def test_several_kinds_in_one_text_are_counted(redactor: Redactor) -> None:
    text = (
        "Contact john.doe@example.com or +44 20 7946 0958, card 4111 1111 1111 1111, "
        "IBAN DE89 3704 0044 0532 0130 00, from 10.0.0.1 or 10.0.0.2"
    )
    result = redactor.redact(text)
    assert "example.com" not in result.text and "4111" not in result.text and "DE89" not in result.text
    assert result.counts == {
        PiiKind.EMAIL: 1,
        PiiKind.PHONE: 1,
        PiiKind.CREDIT_CARD: 1,
        PiiKind.IBAN: 1,
        PiiKind.IP_ADDRESS: 2,
    }


def test_card_number_is_not_also_counted_as_phone(redactor: Redactor) -> None:
    assert redactor.redact("5555555555554444").counts == {PiiKind.CREDIT_CARD: 1}


def test_redaction_is_idempotent(redactor: Redactor) -> None:
    once = redactor.redact("mail a@b.com, call +1 415 555 2671, Mr. Smith").text
    again = redactor.redact(once)
    assert again.text == once
    assert again.total == 0


def test_names_can_be_switched_off() -> None:
    assert Redactor(detect_names=False).redact("my name is Jane Doe").total == 0


def test_throughput_on_short_records(redactor: Redactor) -> None:
    """The ingestion target is 5,000 records/s on two cores; redaction alone must stay well above."""
    texts = [f"I still have not received card number {i}, what should I do?" for i in range(2000)]
    texts += [f"mail me at user{i}@example.com" for i in range(200)]  # one in eleven has PII
    started = time.perf_counter()
    for text in texts:
        redactor.redact(text)
    rate = len(texts) / (time.perf_counter() - started)
    assert rate > 5000, f"{rate:.0f} records/s"


def test_phone_matcher_skips_digit_runs_already_found_as_a_more_specific_kind(
    redactor: Redactor, monkeypatch: pytest.MonkeyPatch
) -> None:
    texts = [
        "My card number is 4111 1111 1111 1111.",
        "The transfer went to GB82 WEST 1234 5698 7654 32.",
        "I logged in from 192.168.12.34 yesterday",
        "card 4111 1111 1111 1111 and call +44 20 7946 0958",
    ]
    before = [redactor.find(text) for text in texts]
    calls: list[str] = []
    for recognizer in (redactor._phone_national, redactor._phone_international):
        original = recognizer.analyze

        def counting(text: str, *args: object, _original: object = original, **kwargs: object) -> object:
            calls.append(text)
            return _original(text, *args, **kwargs)  # type: ignore[operator]

        monkeypatch.setattr(recognizer, "analyze", counting)
    assert [redactor.find(text) for text in texts] == before
    assert calls == ["+44 20 7946 0958"]  # the one run no card, IBAN or IP address covers
