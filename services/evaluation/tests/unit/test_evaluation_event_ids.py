"""A re-run evaluation publishes its decision under the same event id (issue 20, item 5): the
handler ran again after a crash before its offset was committed, and deployment must not act on
the second copy."""

from __future__ import annotations

import sqlite3
from datetime import UTC, datetime
from typing import Any

from llmops_evaluation.adapters.metrics import EvaluationMetrics
from llmops_evaluation.handlers import EvaluationService
from llmops_evaluation.settings import EvaluationSettings
from llmops_events import ContentMode, Envelope, KafkaRecord, derived_id, encode
from llmops_events.v1 import Decision, EvaluationCompleted, TrainingCompleted
from llmops_messaging import EventConsumer, Origin, Outcome, ProcessedEvents
from llmops_serving import ChampionTable


class RecordingPublisher:
    """What ``EventPublisher.publish`` does with a payload, less Kafka: the envelope it would send."""

    source = "/llmops/evaluation"

    def __init__(self) -> None:
        self.sent: list[Envelope[Any]] = []

    async def publish(self, data: Any, *, correlationid: str | None = None, id: str | None = None) -> Envelope[Any]:
        envelope = Envelope.wrap(data, source=self.source, correlationid=correlationid, id=id)
        self.sent.append(envelope)
        return envelope


def _training_completed() -> Envelope[TrainingCompleted]:
    return Envelope.wrap(
        TrainingCompleted(
            model_name="banking-intents",
            request_id="r-1",
            model_version=3,
            artifact_uri="file:///models/banking-intents/3",
            trainable_parameter_share=0.01,
            wall_time_seconds=12.0,
            lineage={"dataset_id": "d-1"},
            completed_at=datetime(2026, 11, 30, tzinfo=UTC),
        ),
        source="/llmops/fine-tuning",
        correlationid="c-1",
    )


async def test_a_re_run_evaluation_publishes_the_same_event_id_and_deployment_skips_the_copy() -> None:
    publisher = RecordingPublisher()
    service = EvaluationService(
        settings=EvaluationSettings(),
        store=None,  # type: ignore[arg-type]
        publisher=publisher,  # type: ignore[arg-type]
        champions=ChampionTable(sqlite3.connect(":memory:")),
        metrics=EvaluationMetrics(),
    )

    def evaluate_version(model_name: str, version: int, **_: Any) -> EvaluationCompleted:
        return EvaluationCompleted(
            model_name=model_name,
            model_version=version,
            candidate_artifact_uri="file:///models/banking-intents/3",
            decision=Decision.APPROVED,
        )

    service.evaluate_version = evaluate_version  # type: ignore[method-assign]
    request = _training_completed()
    await service.on_training_completed(request)
    await service.on_training_completed(request)  # the same input again

    first, second = publisher.sent
    assert first.id == second.id == derived_id(request.id, EvaluationCompleted.event_type)
    assert first.correlationid == "c-1"

    # Downstream (deployment's consumer) applies the decision once.
    applied: list[str] = []

    async def on_evaluation_completed(envelope: Envelope[Any]) -> None:
        applied.append(envelope.id)

    class NoDeadLetters:
        async def send(self, record: KafkaRecord, **_: Any) -> None:
            raise AssertionError("nothing is dead-lettered")

    downstream = EventConsumer(
        group_id="deployment",
        handlers={EvaluationCompleted: on_evaluation_completed},
        dlq=NoDeadLetters(),  # type: ignore[arg-type]
        processed=ProcessedEvents(":memory:", consumer="deployment"),
    )
    outcomes = [
        await downstream.process(encode(envelope, ContentMode.BINARY), Origin("llmops.evaluations.v1", 0, offset, "d"))
        for offset, envelope in enumerate(publisher.sent)
    ]
    assert outcomes == [Outcome.HANDLED, Outcome.DUPLICATE]
    assert applied == [first.id]
