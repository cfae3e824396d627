"""Ingestion: enterprise records in, curated, redacted, deduplicated training data out.

The package's public API (what the ``llmops`` CLI and the benchmarks may use) is ``__all__``;
everything else is internal. Names are imported on first use."""

from __future__ import annotations

from typing import TYPE_CHECKING

from llmops_config.lazy import lazy_exports

if TYPE_CHECKING:
    from .adapters.state import postgres_state_twin
    from .main import IngestionRuntime, cut_snapshot, cut_snapshots
    from .settings import IngestionSettings

__all__ = [
    "IngestionRuntime",
    "IngestionSettings",
    "cut_snapshot",
    "cut_snapshots",
    "postgres_state_twin",
]

_EXPORTS: dict[str, str] = {
    # settings and the composition root (benchmarks run it in-process)
    "IngestionRuntime": ".main",
    "IngestionSettings": ".settings",
    # operator actions (`llmops snapshot`)
    "cut_snapshot": ".main",
    "cut_snapshots": ".main",
    # `llmops state migrate`: the state that has a PostgreSQL twin
    "postgres_state_twin": ".adapters.state",
}


# Imported on first use, so importing the package (and ``python -m`` starting it) stays cheap.
__getattr__, __dir__ = lazy_exports(__name__, _EXPORTS, __all__)
