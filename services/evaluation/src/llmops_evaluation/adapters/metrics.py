"""Prometheus metrics of the evaluation service."""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Histogram, start_http_server


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

    def serve(self, port: int) -> None:
        if port:
            start_http_server(port, addr="127.0.0.1", registry=self.registry)
