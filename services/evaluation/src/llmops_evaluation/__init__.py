"""Evaluation: the policy gate between a trained model version and its deployment.

The package's public API (what the ``llmops`` CLI and the benchmarks may use) is ``__all__``;
everything else is internal. Names are imported on first use."""

from __future__ import annotations

from typing import TYPE_CHECKING

from llmops_config.lazy import lazy_exports

if TYPE_CHECKING:
    from .main import evaluate_by_hand

__all__ = [
    "evaluate_by_hand",
]

_EXPORTS: dict[str, str] = {
    # operator actions (`llmops evaluate`)
    "evaluate_by_hand": ".main",
}


# Imported on first use, so importing the package (and ``python -m`` starting it) stays cheap.
__getattr__, __dir__ = lazy_exports(__name__, _EXPORTS, __all__)
