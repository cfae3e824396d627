from collections.abc import Sequence

from llmops_ingestion.domain.curation import curate, dedup_key, describe, normalise_text, record_id_for
from llmops_privacy.redaction import PiiKind, Redactor


def test_normalisation_folds_unicode_and_whitespace() -> None:
    full_width_hello = "\uff28\uff45\uff4c\uff4c\uff4f"
    assert normalise_text(f"  {full_width_hello}\u00a0\n world\t ") == "Hello world"


def test_dedup_key_ignores_case_only() -> None:
    assert dedup_key("Hello world") == dedup_key("hello WORLD")
    assert dedup_key("Hello world") != dedup_key("Hello world!")


def test_record_id_is_scoped_to_tenant() -> None:
    assert record_id_for(tenant="acme", record_id="t-1", text_key="k") == "acme/t-1"
    generated = record_id_for(tenant="acme", record_id=None, text_key="k")
    assert generated.startswith("acme/h-")
    assert generated == record_id_for(tenant="acme", record_id=None, text_key="k")
    assert generated != record_id_for(tenant="other", record_id=None, text_key="k")


def test_descriptors() -> None:
    d = describe("Hi there, 42!", detect_language=lambda text: "en")
    assert (d.length, d.token_count, d.language) == (13, 5, "en")
    assert d.non_alpha_share == round(4 / 11, 4)  # ",", "4", "2", "!" of 11 visible characters
    assert describe("", detect_language=None).language == "und"


def test_curate_redacts_text_and_metadata_and_derives_ids_from_redacted_text(redactor: Redactor) -> None:
    first = curate(
        tenant="acme",
        source="crm",
        text="Mail  me: a.b@example.com",
        label="x",
        record_id=None,
        metadata={"from": "c@example.org"},
        occurred_at=None,
        redact=redactor.redact,
    )
    second = curate(
        tenant="acme",
        source="crm",
        text="mail me: z@example.net",
        label=None,
        record_id=None,
        metadata={},
        occurred_at=None,
        redact=redactor.redact,
    )
    assert first.text == "Mail me: <EMAIL>"
    assert first.metadata == {"from": "<EMAIL>"}
    assert first.pii_counts == {PiiKind.EMAIL: 2}
    # Same text once the PII is gone: an exact duplicate, and the same generated id.
    assert first.dedup_key == second.dedup_key
    assert first.record_id == second.record_id
    assert first.labelled and not second.labelled


def test_curating_a_batch_equals_curating_each_record(redactor: Redactor) -> None:
    from llmops_ingestion.domain.curation import RecordInput, curate_batch

    records = [
        RecordInput(tenant="acme", source="crm", text="Mail me at a.b@example.com", label="x", record_id=None),
        RecordInput(tenant="acme", source="crm", text="   ", label=None, record_id="r-1"),
        RecordInput(tenant="beta", source="chat", text="Où est ma carte ?", label=None, record_id=None),
        RecordInput(tenant="beta", source="chat", text="plain", label="y", record_id="r-2", metadata={"m": "v"}),
    ]
    one_by_one = [
        curate(
            tenant=r.tenant,
            source=r.source,
            text=r.text,
            label=r.label,
            record_id=r.record_id,
            metadata=r.metadata,
            occurred_at=r.occurred_at,
            redact=redactor.redact,
        )
        for r in records
    ]
    assert curate_batch(records, redact=redactor.redact) == one_by_one


def test_describing_many_texts_equals_describing_each_with_one_detector_call() -> None:
    from llmops_ingestion.domain.curation import describe_many

    texts = ["Mail me at <EMAIL>", "", "Où est ma carte ?", "plain"]

    def detect(text: str) -> str:
        return f"lang-{len(text)}"

    batch_calls: list[list[str]] = []

    def detect_many(texts: Sequence[str]) -> list[str]:
        batch_calls.append(list(texts))
        return [detect(text) for text in texts]

    described = describe_many(texts, detect_languages=detect_many)
    assert described == [describe(text, detect_language=detect) for text in texts]
    assert len(batch_calls) == 1 and "" not in batch_calls[0]  # empty text: "und" without asking
    assert described[1].language == "und"
    assert {d.language for d in describe_many(texts, detect_languages=None)} == {"und"}


def test_vectorised_language_detection_agrees_with_the_model_text_for_text() -> None:
    from llmops_ingestion.adapters.language import language_detector

    detector = language_detector()
    texts = [
        "Where is my card? I ordered it two weeks ago.",
        "Bonjour, je voudrais savoir où est ma carte bancaire",
        "Wo ist meine Karte? Ich warte seit Tagen darauf.",
        "¿Dónde está mi tarjeta? La pedí hace dos semanas.",
        "Привет, где моя карта?",
        "我的卡在哪里",
        "HELLO, WHY IS MY TRANSFER PENDING",
        "12345",
        "x",
        "<EMAIL> <PHONE>",
        "a" * 400,
    ]
    assert detector.many(texts) == [detector(text) for text in texts]
    assert detector.many([]) == []
    restricted = language_detector(["en", "de"])
    assert restricted.many(texts) == [restricted(text) for text in texts]
