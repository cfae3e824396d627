"""What the deployment service writes to the audit trail, and the champion history read back from it.

Pure: no I/O. The deployments topic is compacted per model (only the latest event per model
survives), so the order in which champions served is kept on the audit topic instead: every
promotion and rollback records the champion before and after it (``details["champion_before"]``,
``details["champion_after"]``), and :func:`champion_history` folds those pairs exactly as the
lifecycle folds deployment events, so ``rollback`` without a version finds the previous champion
after compaction too.
"""

from __future__ import annotations

from collections.abc import Iterable

from llmops_deployment.domain.canary import Verdict
from llmops_deployment.domain.lifecycle import fold_champions, previous_of
from llmops_events.base import EventData
from llmops_events.v1 import AuditAction, AuditRecorded, DeploymentPromoted, DeploymentRolledBack
from llmops_events.v1.audit import SERVICE_DEPLOYMENT

CHAMPION_BEFORE = "champion_before"
CHAMPION_AFTER = "champion_after"
_SERVICE_ACTORS = frozenset({"deployment", "evaluation", "reconciler", ""})
"""``by`` values of the service's own decisions: an approval deployed, a canary judged, a resume."""


def principal_of(by: str) -> str:
    """The audited principal of a command's ``by``: a verified principal (``operator:alice``, as
    the ops API passes it) as it is; the service's own actors as ``service:deployment``; any
    other bare name as an operator's (a caller that did not verify it says so in ``by``)."""
    by = " ".join(by.split())[:200]  # no line breaks; bounded
    if by in _SERVICE_ACTORS:
        return SERVICE_DEPLOYMENT
    kind, separator, name = by.partition(":")
    if separator and name and kind.replace("_", "").isalpha() and kind.islower():
        return by
    return f"operator:{by}"


def _version(value: int | None) -> str:
    return "" if value is None else str(value)


def audit_of_deployment(event: EventData, before: int | None, after: int | None) -> AuditRecorded | None:
    """The audit record of a deployment event the service published (None: not audited, e.g.
    ``requested`` and ``canary_started``, which decide nothing yet). ``before`` and ``after`` are
    the model's champion before and after the event."""
    champions = {CHAMPION_BEFORE: _version(before), CHAMPION_AFTER: _version(after)}
    if isinstance(event, DeploymentPromoted):
        return AuditRecorded(
            action=AuditAction.PROMOTION,
            principal=principal_of(event.promoted_by),
            model=event.model_name,
            version=event.model_version,
            reason=event.reason[:2048],
            details={"previous_version": _version(event.previous_version), "kind": event.kind, **champions},
        )
    if isinstance(event, DeploymentRolledBack):
        return AuditRecorded(
            action=AuditAction.ROLLBACK,
            principal=principal_of(event.rolled_back_by),
            model=event.model_name,
            version=event.model_version,
            reason=event.reason[:2048],
            details={"restored_version": _version(event.restored_version), "kind": event.kind, **champions},
        )
    return None


def audit_of_verdict(model_name: str, version: int, verdict: Verdict, champion: int | None) -> AuditRecorded:
    """The audit record of a canary verdict (promote or roll back), the service's own decision."""
    return AuditRecorded(
        action=AuditAction.CANARY_VERDICT,
        principal=SERVICE_DEPLOYMENT,
        model=model_name,
        version=version,
        reason=verdict.reason[:2048],
        details={"verdict": str(verdict.action), "champion": _version(champion)},
    )


def _parse(value: str | None) -> int | None:
    return int(value) if value and value.isdigit() else None


def champion_history(records: Iterable[AuditRecorded], model_name: str) -> tuple[int, ...]:
    """The champions of ``model_name`` in the order they served, still ways back (the same fold
    as ``ModelLifecycle.champions``), from its promotions and rollbacks in the audit trail."""
    history: tuple[int, ...] = ()
    for record in records:
        if record.model != model_name or record.action not in (AuditAction.PROMOTION, AuditAction.ROLLBACK):
            continue
        if CHAMPION_AFTER not in record.details:
            continue  # not written by this service's rule
        before, after = _parse(record.details.get(CHAMPION_BEFORE)), _parse(record.details.get(CHAMPION_AFTER))
        history = fold_champions(history, before, after)
    return history


def previous_champion(records: Iterable[AuditRecorded], model_name: str, current: int | None) -> int | None:
    """The champion before ``current`` that is still a way back, from the audit trail (None: none)."""
    return previous_of(champion_history(records, model_name), current)
