"""Fine-tuning: LoRA training jobs asked for on the training topic.

The package's public API (what the ``llmops`` CLI and the benchmarks may use) is ``__all__``;
everything else is internal. Names are imported on first use."""

from __future__ import annotations

from typing import TYPE_CHECKING

from llmops_config.lazy import lazy_exports

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


# Imported on first use, so importing the package (and ``python -m`` starting it) stays cheap.
__getattr__, __dir__ = lazy_exports(__name__, _EXPORTS, __all__)
