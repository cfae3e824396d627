"""The gateway's generation logs (``inference.logged`` with ``generation`` set) and feedback that
carries only a corrected answer pass through ingestion on the real broker: handled, never
dead-lettered, and a classification's feedback behind them still becomes a labelled record (the
correction makes an instruction example, not a record: ``test_ingestion_feedback_flywheel``)."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest
from ingestion_harness import RunningIngestion

from llmops_events.v1 import ChatTurn, FeedbackSubmitted, Generation, InferenceLogged
from llmops_messaging import Outcome

pytestmark = pytest.mark.integration


async def test_generation_logs_and_corrected_answers_are_handled_not_dead_lettered(
    ingestion: RunningIngestion, tenant: str
) -> None:
    now = datetime.now(UTC)
    generated, classified = f"{tenant}-gen", f"{tenant}-cls"
    await ingestion.publisher.publish(
        InferenceLogged(
            request_id=generated,
            tenant=tenant,
            model_name="support-bot",
            model_version=0,
            text="my card has not arrived",
            label="",
            confidence=0.0,
            latency_ms=900.0,
            served_at=now,
            generation=Generation(
                messages=[ChatTurn(role="user", content="my card has not arrived")],
                output="Cards arrive within 5 working days.",
                finish_reason="stop",
                prompt_tokens=20,
                completion_tokens=9,
                time_to_first_token_ms=120.0,
                tokens_per_s=25.0,
            ),
        )
    )
    await ingestion.publisher.publish(
        FeedbackSubmitted(request_id=generated, corrected_answer="Order a new card in the app.", rating=2)
    )
    await ingestion.publisher.publish(
        InferenceLogged(
            request_id=classified,
            tenant=tenant,
            model_name="intent",
            model_version=1,
            text="where is my card",
            label="card_arrival",
            confidence=0.8,
            latency_ms=3.0,
            served_at=now,
        )
    )
    await ingestion.publisher.publish(FeedbackSubmitted(request_id=classified, true_label="card_arrival"))
    # The correction is measured in tokens first: the first one loads the tokenizer (seconds).
    rows = await ingestion.wait_for_rows(tenant, 1, timeout=120)
    assert list(rows["record_id"]) == [f"{tenant}/feedback-{classified}"]  # the generation made no record
    assert Outcome.DEAD_LETTERED not in ingestion.outcomes
    assert ingestion.outcomes.count(Outcome.HANDLED) >= 4
