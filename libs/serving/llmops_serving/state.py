"""Deployment state, folded from the events of the deployments topic (the source of truth).

Every event carries enough to rebuild its model's state on its own (``requested`` and
``canary_started`` name the champion, ``rolled_back`` the restored version), so the fold stays
right after log compaction keeps only the latest event per model.
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from typing import Literal

from llmops_events.base import EventData
from llmops_events.v1 import DeploymentCanaryStarted, DeploymentPromoted, DeploymentRequested, DeploymentRolledBack

Phase = Literal["deploying", "canary", "serving", "none"]


@dataclass(frozen=True, slots=True)
class ModelDeployment:
    """What should be live for one model."""

    model_name: str
    champion_version: int | None = None
    canary_version: int | None = None
    canary_share: float = 0.0
    pending_version: int | None = None
    """A version being written, loaded and smoke-tested before its canary starts."""
    kind: str = "classifier"
    """The model kind of its latest deployment event (``classifier``, ``causal_lm``)."""

    @property
    def phase(self) -> Phase:
        if self.canary_version is not None:
            return "canary"
        if self.pending_version is not None:
            return "deploying"
        return "serving" if self.champion_version is not None else "none"

    @property
    def live_versions(self) -> tuple[int, ...]:
        """Versions that must be loaded on Triton."""
        return tuple(v for v in (self.champion_version, self.canary_version) if v is not None)


def apply(state: ModelDeployment, event: EventData) -> ModelDeployment:
    """The state after ``event`` (events of other types leave it unchanged)."""
    match event:
        case DeploymentRequested():
            champion = event.champion_version if event.champion_version is not None else state.champion_version
            return replace(state, champion_version=champion, pending_version=event.model_version, kind=event.kind)
        case DeploymentCanaryStarted():
            return replace(
                state,
                champion_version=event.champion_version,
                canary_version=event.model_version,
                canary_share=event.traffic_share,
                pending_version=None,
                kind=event.kind,
            )
        case DeploymentPromoted():
            return ModelDeployment(state.model_name, champion_version=event.model_version, kind=event.kind)
        case DeploymentRolledBack():
            pending = None if state.pending_version == event.model_version else state.pending_version
            return ModelDeployment(
                state.model_name, champion_version=event.restored_version, pending_version=pending, kind=event.kind
            )
    return state


class DeploymentBook:
    """The state of every model, kept up to date by :meth:`apply`."""

    def __init__(self) -> None:
        self._models: dict[str, ModelDeployment] = {}

    def apply(self, event: EventData) -> ModelDeployment | None:
        name = getattr(event, "model_name", None)
        if not isinstance(name, str):
            return None
        updated = apply(self._models.get(name, ModelDeployment(name)), event)
        self._models[name] = updated
        return updated

    def get(self, model_name: str) -> ModelDeployment | None:
        return self._models.get(model_name)

    def models(self) -> list[ModelDeployment]:
        return sorted(self._models.values(), key=lambda m: m.model_name)
