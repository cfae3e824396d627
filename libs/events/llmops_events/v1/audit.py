"""The audit trail: one event per decision that changes what is served or who may do what.

``llmops.audit.v1`` is a plain event stream, **never compacted** and kept for a long time (the
deployments topic is compacted per model, so it keeps only the latest state; the history lives
here). Each event names the *verified* principal: the identity a credential proved (an mTLS
client certificate, an API key, the service's own Kafka principal), never a name a caller typed.

Publish with :func:`publish_audit` from any service that holds an ``EventPublisher``.
"""

from __future__ import annotations

from datetime import UTC, datetime
from enum import StrEnum
from typing import TYPE_CHECKING, Any, ClassVar, Protocol

from pydantic import Field

from llmops_events import topics
from llmops_events.base import EventData
from llmops_events.names import ModelName, ModelVersion

if TYPE_CHECKING:
    from llmops_events.envelope import Envelope

PRINCIPAL_REGEX = r"^[a-z][a-z_]*:\S.*$"
"""``<kind>:<name>``: ``operator:alice``, ``service:deployment``, ``key:<key id>`` (a name may hold
spaces, as a certificate's common name can; not a line break)."""

SERVICE_DEPLOYMENT = "service:deployment"
"""The principal of the deployment service's own automatic decisions (canary verdicts, auto-promotion)."""


class AuditAction(StrEnum):
    """What was decided. A version only grows: new actions are added, none is removed."""

    PROMOTION = "promotion"
    """A version became the champion (automatically after its canary, or by an operator)."""
    ROLLBACK = "rollback"
    """A version stopped serving and an earlier one was restored (or nothing was left serving)."""
    CANARY_VERDICT = "canary_verdict"
    """The canary of a version was judged (``details["verdict"]``: ``promote`` or ``roll_back``)."""
    OVERRIDE = "override"
    """An operator put live a version the evaluation gate rejected (``reason`` says why)."""
    POLICY_CHANGE = "policy_change"
    """A policy file (evaluation gate, guardrails, key scopes) changed."""
    KEY_DENIED = "key_denied"
    """An API key or credential was refused (wrong tenant, scope, revoked, rate-limited)."""
    ERASURE = "erasure"
    """A tenant's or data subject's records were erased."""
    GUARDRAIL_REFUSAL = "guardrail_refusal"
    """The gateway refused a generation request by a guardrail (``details["code"]``, e.g.
    ``prompt_injection.ignore_instructions``); the principal is the key that sent it."""


class AuditRecorded(EventData):
    """One audited decision, with the verified principal that made it."""

    event_type: ClassVar[str] = "llmops.audit.recorded.v1"
    topic: ClassVar[str] = topics.AUDIT
    key_field: ClassVar[str] = "audit_key"

    action: AuditAction
    principal: str = Field(min_length=3, max_length=256, pattern=PRINCIPAL_REGEX, examples=["operator:alice"])
    """The verified identity: ``operator:<name>``, ``service:<service>`` or ``key:<key id>``."""

    model: ModelName | None = None
    """The model concerned, when the decision is about one."""

    version: ModelVersion | None = None
    """The model version concerned (the promoted one, the one rolled back, the canary judged)."""

    tenant: str | None = Field(default=None, max_length=128)
    """The tenant concerned (key use, erasure)."""

    reason: str = Field(default="", max_length=2048, examples=["canary error rate 0.4% below the limit"])
    """Why, in a sentence (an override's reason is required by the ops API)."""

    details: dict[str, str] = Field(default_factory=dict, examples=[{"restored_version": "2"}])
    """Anything else worth keeping, as text: ``previous_version``, ``restored_version``,
    ``verdict``, ``request_id``, the source event's id, ..."""

    recorded_at: datetime = Field(default_factory=lambda: datetime.now(UTC))
    """When the decision was taken (the envelope's ``time`` is when it was published)."""

    @property
    def audit_key(self) -> str:
        """The Kafka key: the model when there is one (its history stays in order on one
        partition), else the tenant, else the principal."""
        return self.model or self.tenant or self.principal


class AuditPublisher(Protocol):
    """What :func:`publish_audit` needs: ``llmops_messaging.EventPublisher`` is one."""

    async def publish(self, data: Any, *, correlationid: str | None = ..., id: str | None = ...) -> Envelope[Any]: ...


async def publish_audit(
    publisher: AuditPublisher,
    action: AuditAction | str,
    principal: str,
    *,
    model: str | None = None,
    version: int | None = None,
    tenant: str | None = None,
    reason: str = "",
    details: dict[str, str] | None = None,
    correlationid: str | None = None,
    id: str | None = None,
) -> Envelope[AuditRecorded]:
    """Validate and publish one ``AuditRecorded`` (acks=all through the publisher); returns what
    was sent. ``id``: derive it (``llmops_events.derived_id``) when a redelivered input may make
    the caller audit the same decision twice, so readers can recognise the duplicate."""
    event = AuditRecorded(
        action=AuditAction(action),
        principal=principal,
        model=model,
        version=version,
        tenant=tenant,
        reason=reason,
        details=dict(details or {}),
    )
    return await publisher.publish(event, correlationid=correlationid, id=id)
