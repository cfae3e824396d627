"""Prometheus metrics of the evaluation service."""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Histogram

from llmops_config.metrics import serve_metrics


class EvaluationMetrics:
    def __init__(self, registry: CollectorRegistry | None = None) -> None:
        self.registry = registry or CollectorRegistry()
        self.decisions = Counter(
            "llmops_evaluation_decisions_total",
            "Evaluations by decision and first failed rule",
            ["decision", "rule"],
            registry=self.registry,
        )
        self.duration = Histogram(
            "llmops_evaluation_duration_seconds",
            "Wall time of one evaluation",
            buckets=(1, 2, 5, 10, 20, 40, 80, 160, 320),
            registry=self.registry,
        )

    def serve(self, port: int, *, host: str) -> None:
        """Expose ``/metrics`` on ``host:port`` (port 0 disables it)."""
        serve_metrics(self.registry, port=port, host=host)
