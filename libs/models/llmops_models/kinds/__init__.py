"""The kinds of model the platform knows, by the name their manifests record."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from llmops_models.kinds.base import ModelKind, Predictor, ServingOptions, TritonModel
from llmops_models.kinds.causal_lm import CAUSAL_LM, CausalLmKind
from llmops_models.kinds.classifier import CLASSIFIER, ClassifierKind

KINDS: dict[str, ModelKind] = {CLASSIFIER.name: CLASSIFIER, CAUSAL_LM.name: CAUSAL_LM}
DEFAULT_KIND = CLASSIFIER.name
"""The kind of an artifact whose manifest names none (written before kinds existed)."""


class UnknownKind(ValueError):
    """A manifest or request naming a kind this platform does not have."""


def kind_named(name: str) -> ModelKind:
    try:
        return KINDS[name]
    except KeyError:
        raise UnknownKind(f"unknown model kind {name!r}; known: {', '.join(sorted(KINDS))}") from None


def kind_of(manifest: Mapping[str, Any]) -> ModelKind:
    """The kind of the artifact a manifest describes."""
    return kind_named(str(manifest.get("kind") or DEFAULT_KIND))


def kind_for_task(task: str) -> ModelKind:
    """The kind that trains for a ``training.requested`` task."""
    for kind in KINDS.values():
        if kind.training_task == task:
            return kind
    raise UnknownKind(f"no model kind trains for task {task!r}")


__all__ = [
    "CAUSAL_LM",
    "CLASSIFIER",
    "DEFAULT_KIND",
    "KINDS",
    "CausalLmKind",
    "ClassifierKind",
    "ModelKind",
    "Predictor",
    "ServingOptions",
    "TritonModel",
    "UnknownKind",
    "kind_for_task",
    "kind_named",
    "kind_of",
]
