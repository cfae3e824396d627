"""Ingestion: enterprise records in, curated, redacted, deduplicated training data out.

The package's public API (what the ``llmops`` CLI and the benchmarks may use) is ``__all__``;
everything else is internal. Names are imported on first use."""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from .main import IngestionRuntime, cut_snapshot, cut_snapshots
    from .settings import IngestionSettings

__all__ = [
    "IngestionRuntime",
    "IngestionSettings",
    "cut_snapshot",
    "cut_snapshots",
]

_EXPORTS: dict[str, str] = {
    # settings and the composition root (benchmarks run it in-process)
    "IngestionRuntime": ".main",
    "IngestionSettings": ".settings",
    # operator actions (`llmops snapshot`)
    "cut_snapshot": ".main",
    "cut_snapshots": ".main",
}


def __getattr__(name: str) -> Any:
    # Imported on first use, so ``import llmops_ingestion`` (and ``python -m llmops_ingestion``) stays cheap.
    module = _EXPORTS.get(name)
    if module is None:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    value = getattr(importlib.import_module(module, __name__), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted({*globals(), *__all__})
