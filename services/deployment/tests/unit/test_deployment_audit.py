"""The audit trail of the deployment service (issue 17, item 5): each promotion and rollback it
publishes is recorded with the principal that decided it and the champion before and after; the
champions' order folded from the trail equals the lifecycle's own; ``rollback`` without a version
finds the previous champion in the trail when the (compacted) deployments topic no longer says."""

from __future__ import annotations

from typing import Any

import pytest

from llmops_deployment.domain.audit import (
    audit_of_deployment,
    audit_of_verdict,
    champion_history,
    previous_champion,
    principal_of,
)
from llmops_deployment.domain.canary import CanaryAction, Verdict
from llmops_deployment.domain.lifecycle import ModelLifecycle
from llmops_deployment.handlers import DeploymentService
from llmops_deployment.settings import DeploymentSettings
from llmops_events import Envelope, derived_id
from llmops_events.base import EventData
from llmops_events.v1 import AuditAction, AuditRecorded, DeploymentPromoted, DeploymentRolledBack

MODEL = "intents"


def _promoted(version: int, previous: int | None, by: str = "deployment") -> DeploymentPromoted:
    return DeploymentPromoted(model_name=MODEL, model_version=version, previous_version=previous, promoted_by=by)


def _restored(champion: int, restored: int, by: str) -> DeploymentRolledBack:
    return DeploymentRolledBack(model_name=MODEL, model_version=champion, restored_version=restored, rolled_back_by=by)


@pytest.mark.parametrize(
    ("by", "principal"),
    [
        ("deployment", "service:deployment"),
        ("evaluation", "service:deployment"),
        ("operator:alice", "operator:alice"),
        ("operator:Alice Smith", "operator:Alice Smith"),
        ("key:k-42", "key:k-42"),
        ("bob", "operator:bob"),
        ("operator:eve\nforged line", "operator:eve forged line"),
    ],
)
def test_the_principal_is_the_verified_one_or_the_service(by: str, principal: str) -> None:
    assert principal_of(by) == principal


def test_promotions_and_rollbacks_are_audited_with_the_champion_before_and_after() -> None:
    promoted = audit_of_deployment(_promoted(2, 1, by="operator:alice"), 1, 2)
    assert promoted is not None
    assert (promoted.action, promoted.principal, promoted.model, promoted.version) == (
        AuditAction.PROMOTION,
        "operator:alice",
        MODEL,
        2,
    )
    assert promoted.details["champion_before"] == "1" and promoted.details["champion_after"] == "2"
    restored = audit_of_deployment(_restored(2, 1, by="operator:bob"), 2, 1)
    assert restored is not None and restored.action is AuditAction.ROLLBACK
    assert restored.details["restored_version"] == "1" and restored.principal == "operator:bob"
    verdict = audit_of_verdict(MODEL, 3, Verdict(CanaryAction.ROLLBACK, "error rate 40% above 5%"), 2)
    assert verdict.principal == "service:deployment" and verdict.details == {"verdict": "rollback", "champion": "2"}


def test_the_trail_folds_to_the_same_champions_as_the_lifecycle() -> None:
    events: list[EventData] = [
        _promoted(1, None),
        _promoted(2, 1),
        _promoted(3, 2, by="operator:alice"),
        _restored(3, 2, by="operator:bob"),  # 3 is no longer a way back
        _promoted(4, 2),
    ]
    life, records = ModelLifecycle.empty(MODEL), []
    for event in events:
        after = life.apply(event)
        record = audit_of_deployment(event, life.deployment.champion_version, after.deployment.champion_version)
        assert record is not None
        records.append(record)
        life = after
    other = audit_of_deployment(_promoted(9, None).model_copy(update={"model_name": "other"}), None, 9)
    assert other is not None
    assert champion_history([other, *records], MODEL) == life.champions == (1, 2, 4)
    assert previous_champion(records, MODEL, 4) == life.previous_champion() == 2


class RecordingPublisher:
    def __init__(self) -> None:
        self.sent: list[Envelope[Any]] = []

    async def publish(
        self, data: EventData, *, correlationid: str | None = None, id: str | None = None
    ) -> Envelope[Any]:
        envelope = Envelope.wrap(data, source="/llmops/deployment", correlationid=correlationid, id=id)
        self.sent.append(envelope)
        return envelope


class FakeTrail:
    """The audit trail as a list (the Kafka one is exercised by the integration test)."""

    def __init__(self, readable: bool = True) -> None:
        self.records: list[tuple[AuditRecorded, str | None]] = []
        self.readable = readable

    async def record(self, event: AuditRecorded, *, correlationid: str | None, id: str | None) -> None:
        self.records.append((event, id))

    async def history(self, model_name: str) -> list[AuditRecorded]:
        if not self.readable:
            raise TimeoutError("the audit topic did not answer")
        return [event for event, _ in self.records if event.model == model_name]


def _service(trail: FakeTrail) -> tuple[DeploymentService, RecordingPublisher]:
    publisher = RecordingPublisher()
    service = DeploymentService(
        settings=DeploymentSettings(),
        artifacts=None,  # type: ignore[arg-type]
        triton=None,  # type: ignore[arg-type]
        publisher=publisher,  # type: ignore[arg-type]
        audit=trail,  # type: ignore[arg-type]
    )
    return service, publisher


async def test_each_published_promotion_is_recorded_under_an_id_derived_from_its_event() -> None:
    trail = FakeTrail()
    service, publisher = _service(trail)
    for event in (_promoted(1, None), _promoted(2, 1, by="operator:alice")):
        await service._publish(event, "corr")
    assert [(r.version, r.principal) for r, _ in trail.records] == [(1, "service:deployment"), (2, "operator:alice")]
    assert [id for _, id in trail.records] == [derived_id(e.id, AuditRecorded.event_type) for e in publisher.sent]


async def test_rollback_without_a_version_reads_the_previous_champion_from_the_trail() -> None:
    trail = FakeTrail()
    service, _ = _service(trail)
    for event in (_promoted(1, None), _promoted(2, 1), _promoted(3, 2)):
        await service._publish(event, None)
    # A restart after compaction: the deployments topic holds only the latest event of the model.
    restarted, _ = _service(trail)
    restarted.replay(_promoted(3, 2))
    assert restarted.lifecycle(MODEL).previous_champion() is None, "compaction forgot the history"
    assert await restarted._previous_champion(MODEL) == 2


async def test_an_unreadable_trail_falls_back_to_what_the_process_knows() -> None:
    trail = FakeTrail(readable=False)
    service, _ = _service(trail)
    for event in (_promoted(1, None), _promoted(2, 1)):
        await service._publish(event, None)
    assert await service._previous_champion(MODEL) == 1
