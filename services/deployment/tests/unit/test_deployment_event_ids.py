"""Deployment events published in answer to an approval carry ids derived from it (issue 20,
item 5): the approval handled again (a crash before its offset was committed) publishes the same
ids, and monitoring and evaluation skip the copies. Events that answer no event (an operator's
command, the canary's verdict, the reconciler) keep random ids."""

from __future__ import annotations

from typing import Any

from llmops_deployment.handlers import DeploymentService
from llmops_deployment.settings import DeploymentSettings
from llmops_events import Envelope, KafkaRecord, derived_id, encode
from llmops_events.base import EventData
from llmops_events.v1 import Decision, DeploymentRequested, EvaluationCompleted
from llmops_messaging import EventConsumer, Origin, Outcome, ProcessedEvents


class RecordingPublisher:
    def __init__(self) -> None:
        self.sent: list[Envelope[Any]] = []

    async def publish(
        self, data: EventData, *, correlationid: str | None = None, id: str | None = None
    ) -> Envelope[Any]:
        envelope = Envelope.wrap(data, source="/llmops/deployment", correlationid=correlationid, id=id)
        self.sent.append(envelope)
        return envelope


class NoDeadLetters:
    async def send(self, record: KafkaRecord, **_: Any) -> None:
        raise AssertionError("nothing is dead-lettered")


REQUESTED = DeploymentRequested(model_name="intents", model_version=2, artifact_uri="file:///models/intents/2")


async def test_deployment_events_answering_an_approval_repeat_their_ids_when_it_is_handled_again() -> None:
    publisher = RecordingPublisher()
    service = DeploymentService(
        settings=DeploymentSettings(),
        artifacts=None,  # type: ignore[arg-type]
        triton=None,  # type: ignore[arg-type]
        publisher=publisher,  # type: ignore[arg-type]
    )

    async def on_evaluation_completed(envelope: Envelope[Any]) -> None:
        # What the lifecycle's "publish requested" effect does, deep in the approval's handling.
        await service._publish(REQUESTED, envelope.correlationid)

    approval = Envelope.wrap(
        EvaluationCompleted(
            model_name="intents", model_version=2, candidate_artifact_uri="file:///x", decision=Decision.APPROVED
        ),
        source="/llmops/evaluation",
    )
    for _ in range(2):  # the service crashed before committing: a new process handles it again
        consumer = EventConsumer(
            group_id="deployment",
            handlers={EvaluationCompleted: on_evaluation_completed},
            dlq=NoDeadLetters(),  # type: ignore[arg-type]
            processed=ProcessedEvents(":memory:", consumer="deployment"),
        )
        assert await consumer.process(encode(approval), Origin("llmops.evaluations.v1", 0, 7, "d")) is Outcome.HANDLED
    first, second = publisher.sent
    assert first.id == second.id == derived_id(approval.id, f"{DeploymentRequested.event_type}/2")

    # An operator's promote answers no event: a fresh id each time.
    await service._publish(REQUESTED, None)
    await service._publish(REQUESTED, None)
    assert len({envelope.id for envelope in publisher.sent}) == 3
