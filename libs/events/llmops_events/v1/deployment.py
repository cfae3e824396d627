"""Deployment state changes; the deployments topic is the source of truth for serving."""

from __future__ import annotations

from typing import ClassVar

from pydantic import Field

from llmops_events import topics
from llmops_events.base import EventData
from llmops_events.names import ModelName, ModelVersion


class _DeploymentEvent(EventData):
    topic: ClassVar[str] = topics.DEPLOYMENTS
    key_field: ClassVar[str] = "model_name"

    model_name: ModelName
    model_version: ModelVersion
    kind: str = Field(default="classifier", examples=["classifier", "causal_lm"])
    """The model kind (``llmops_models.kinds``): what the gateway serves it with (``Predict`` for a
    classifier, ``Generate`` for a causal LM, whose versions are LoRA adapters on a shared base)."""


class DeploymentRequested(_DeploymentEvent):
    event_type: ClassVar[str] = "llmops.deployment.requested.v1"

    artifact_uri: str
    champion_version: int | None = None
    """The version serving when the request was made (so the latest event alone gives the state)."""
    requested_by: str = "evaluation"


class DeploymentCanaryStarted(_DeploymentEvent):
    event_type: ClassVar[str] = "llmops.deployment.canary_started.v1"

    champion_version: int | None = None
    traffic_share: float = Field(ge=0, le=1)
    """Share of requests routed to the canary."""


class DeploymentPromoted(_DeploymentEvent):
    event_type: ClassVar[str] = "llmops.deployment.promoted.v1"

    previous_version: int | None = None
    reason: str = ""
    promoted_by: str = "deployment"


class DeploymentRolledBack(_DeploymentEvent):
    """The named version stopped serving; ``restored_version`` is the one serving now."""

    event_type: ClassVar[str] = "llmops.deployment.rolled_back.v1"

    restored_version: int | None = None
    reason: str = ""
    rolled_back_by: str = "deployment"
