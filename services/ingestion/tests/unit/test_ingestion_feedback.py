from llmops_ingestion.domain.feedback import ServedRequest, record_from_feedback


def test_feedback_becomes_a_labelled_record_keyed_by_request() -> None:
    served = ServedRequest(
        request_id="req-1",
        tenant="acme",
        text="where is <EMAIL>'s card",
        model_name="m",
        model_version=3,
        predicted_label="card_arrival",
    )
    record = record_from_feedback(served, true_label="lost_card")
    assert (record.source, record.label, record.text, record.tenant) == ("feedback", "lost_card", served.text, "acme")
    assert record.record_id == "feedback-req-1"
    assert record.metadata["predicted_label"] == "card_arrival"
