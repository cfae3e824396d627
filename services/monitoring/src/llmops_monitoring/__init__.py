"""Monitoring: windowed drift and quality reports over live traffic that ask for retraining.

The package's public API (what the ``llmops`` CLI and the benchmarks may use) is ``__all__``;
everything else is internal. Names are imported on first use."""

from __future__ import annotations

from typing import TYPE_CHECKING

from llmops_config.lazy import lazy_exports

if TYPE_CHECKING:
    from .adapters.encoder import MiniLMEncoder
    from .adapters.metrics import MonitoringMetrics
    from .adapters.policy_state import PolicyStateStore, postgres_state_twin
    from .adapters.reference import ArtifactReferences
    from .domain.analysis import embedding_sample_rows, embedding_stride
    from .domain.policy import load_policy
    from .domain.windows import Observation, WindowKey
    from .handlers import MonitoringService
    from .main import drift_report_by_hand
    from .settings import MonitoringSettings

__all__ = [
    "ArtifactReferences",
    "MiniLMEncoder",
    "MonitoringMetrics",
    "MonitoringService",
    "MonitoringSettings",
    "Observation",
    "PolicyStateStore",
    "WindowKey",
    "drift_report_by_hand",
    "embedding_sample_rows",
    "embedding_stride",
    "load_policy",
    "postgres_state_twin",
]

_EXPORTS: dict[str, str] = {
    # settings and operator actions (`llmops drift-report`, the demo)
    "MonitoringSettings": ".settings",
    "drift_report_by_hand": ".main",
    # the service's parts, for benchmarks that assemble it in-process
    "ArtifactReferences": ".adapters.reference",
    "MiniLMEncoder": ".adapters.encoder",
    "MonitoringMetrics": ".adapters.metrics",
    "MonitoringService": ".handlers",
    "Observation": ".domain.windows",
    "PolicyStateStore": ".adapters.policy_state",
    "WindowKey": ".domain.windows",
    "embedding_sample_rows": ".domain.analysis",
    "embedding_stride": ".domain.analysis",
    "load_policy": ".domain.policy",
    # `llmops state migrate`: the state that has a PostgreSQL twin
    "postgres_state_twin": ".adapters.policy_state",
}


# Imported on first use, so importing the package (and ``python -m`` starting it) stays cheap.
__getattr__, __dir__ = lazy_exports(__name__, _EXPORTS, __all__)
