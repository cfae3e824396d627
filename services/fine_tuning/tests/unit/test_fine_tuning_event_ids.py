"""A training request handled again publishes its events under the same ids (issue 20, item 5):
derived from the request's event id and the step, so evaluation (and anyone else downstream)
recognises the copies of a re-run instead of evaluating one version twice."""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from llmops_events import ContentMode, Envelope, KafkaRecord, derived_id, encode
from llmops_events.base import EventData
from llmops_events.v1.training import (
    TrainingCompleted,
    TrainingFailed,
    TrainingProgressed,
    TrainingRequested,
    TrainingStarted,
)
from llmops_fine_tuning.adapters.defaults import load_defaults
from llmops_fine_tuning.handlers import FineTuningService, ServiceConfig, output_event_id
from llmops_fine_tuning.settings import FineTuningSettings
from llmops_messaging import EventConsumer, Origin, Outcome, ProcessedEvents


class _Sent:
    def __init__(self) -> None:
        self.envelopes: list[Envelope[Any]] = []

    async def publish(
        self, data: EventData, *, correlationid: str | None = None, id: str | None = None
    ) -> Envelope[Any]:
        envelope = Envelope.wrap(data, source="/llmops/fine-tuning", correlationid=correlationid, id=id)
        self.envelopes.append(envelope)
        return envelope


class _TrainedAlready:
    """A registry in which this request's version was published (the replica died before reporting it)."""

    def find_by_request(self, model_name: str, request_id: str) -> dict[str, Any]:
        return {
            "version": 4,
            "request_id": request_id,
            "metrics": {"accuracy": 0.9},
            "lineage": {"dataset_id": "ds"},
            "created_at": datetime(2026, 11, 30, tzinfo=UTC).isoformat(),
        }

    def uri(self, model_name: str, version: int) -> str:
        return f"file:///models/{model_name}/{version}"


def _service(events: _Sent, registry: Any = None) -> FineTuningService:
    config = ServiceConfig(
        defaults=load_defaults(FineTuningSettings().defaults_file),
        min_examples_per_label=1,
        worker_name="unit",
        work_dir=Path("/nonexistent"),
        code_version="unit",
    )
    return FineTuningService(config=config, datasets=None, registry=registry, trainer=None, events=events)  # type: ignore[arg-type]


async def test_a_refused_request_handled_twice_reports_one_failure_id() -> None:
    events = _Sent()
    request = Envelope.wrap(
        TrainingRequested.model_validate({"model_name": "intents", "hyperparameters": {"epochs": 1e9}}),
        source="/tests",
    )
    await _service(events).on_training_requested(request)
    await _service(events).on_training_requested(request)
    first, second = events.envelopes
    assert isinstance(first.data, TrainingFailed)
    assert first.id == second.id == derived_id(request.id, TrainingFailed.event_type)


async def test_a_completion_reported_again_keeps_its_id_and_evaluation_skips_the_copy() -> None:
    events = _Sent()
    request = Envelope.wrap(TrainingRequested(model_name="intents", dataset_id="ds"), source="/tests")
    for _ in range(2):  # the replica died after publishing the version; the request came again
        await _service(events, _TrainedAlready()).on_training_requested(request)
    first, second = events.envelopes
    assert isinstance(first.data, TrainingCompleted) and first.data.model_version == 4
    assert first.id == second.id == derived_id(request.id, TrainingCompleted.event_type)

    evaluated: list[str] = []

    async def on_training_completed(envelope: Envelope[Any]) -> None:
        evaluated.append(envelope.id)

    class NoDeadLetters:
        async def send(self, record: KafkaRecord, **_: Any) -> None:
            raise AssertionError("nothing is dead-lettered")

    evaluation = EventConsumer(
        group_id="evaluation",
        handlers={TrainingCompleted: on_training_completed},
        dlq=NoDeadLetters(),  # type: ignore[arg-type]
        processed=ProcessedEvents(":memory:", consumer="evaluation"),
    )
    outcomes = [
        await evaluation.process(encode(envelope, ContentMode.BINARY), Origin("llmops.training.v1", 0, offset, "e"))
        for offset, envelope in enumerate(events.envelopes)
    ]
    assert outcomes == [Outcome.HANDLED, Outcome.DUPLICATE]
    assert evaluated == [first.id]


def test_each_step_of_a_request_has_its_own_id() -> None:
    def progressed(step: int) -> TrainingProgressed:
        return TrainingProgressed(
            model_name="m",
            request_id="r",
            model_version=1,
            step=step,
            total_steps=10,
            epoch=0.1,
            loss=1.0,
            examples_per_second=1.0,
            eta_seconds=1.0,
        )

    started = TrainingStarted(model_name="m", request_id="r", model_version=1, dataset_id="d", worker="w")
    ids = [output_event_id("e-1", event) for event in (started, progressed(1), progressed(2))]
    assert len(set(ids)) == 3
    assert output_event_id("e-1", progressed(2)) == ids[2]  # the same step of a re-run: the same id
    assert output_event_id("e-2", started) != ids[0]
