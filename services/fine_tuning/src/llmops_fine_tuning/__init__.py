"""Fine-tuning: LoRA training jobs asked for on the training topic.

The package's public API (what the ``llmops`` CLI and the benchmarks may use) is ``__all__``;
everything else is internal. Names are imported on first use."""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from .offline import train_model, train_offline
    from .settings import FineTuningSettings
    from .starter import request_training

__all__ = [
    "FineTuningSettings",
    "request_training",
    "train_model",
    "train_offline",
]

_EXPORTS: dict[str, str] = {
    # operator actions (`llmops retrain`)
    "FineTuningSettings": ".settings",
    "request_training": ".starter",
    # training without the bus (`llmops train`, tests and benchmarks)
    "train_model": ".offline",
    "train_offline": ".offline",
}


def __getattr__(name: str) -> Any:
    # Imported on first use, so ``import llmops_fine_tuning`` (and ``python -m llmops_fine_tuning``) stays cheap.
    module = _EXPORTS.get(name)
    if module is None:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    value = getattr(importlib.import_module(module, __name__), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted({*globals(), *__all__})
