"""Evaluation: the policy gate between a trained model version and its deployment.

The package's public API (what the ``llmops`` CLI and the benchmarks may use) is ``__all__``;
everything else is internal. Names are imported on first use."""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from .main import evaluate_by_hand

__all__ = [
    "evaluate_by_hand",
]

_EXPORTS: dict[str, str] = {
    # operator actions (`llmops evaluate`)
    "evaluate_by_hand": ".main",
}


def __getattr__(name: str) -> Any:
    # Imported on first use, so ``import llmops_evaluation`` (and ``python -m llmops_evaluation``) stays cheap.
    module = _EXPORTS.get(name)
    if module is None:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    value = getattr(importlib.import_module(module, __name__), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted({*globals(), *__all__})
