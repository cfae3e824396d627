"""Prometheus metrics of the fine-tuning service, on a registry of its own (tests build several)."""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram

from llmops_config.metrics import serve_metrics


class FineTuningMetrics:
    def __init__(self, registry: CollectorRegistry | None = None) -> None:
        self.registry = registry or CollectorRegistry()
        prefix = "llmops_fine_tuning"
        self.jobs = Counter(
            f"{prefix}_jobs_total",
            "Training requests handled, by outcome (completed, failed reason).",
            ["outcome"],
            registry=self.registry,
        )
        self.running = Gauge(f"{prefix}_jobs_running", "1 while this replica trains.", registry=self.registry)
        self.duration = Histogram(
            f"{prefix}_job_duration_seconds",
            "Wall time of completed jobs.",
            buckets=(10, 30, 60, 120, 300, 600, 1200, 3600, 7200),
            registry=self.registry,
        )
        self.throughput = Gauge(
            f"{prefix}_examples_per_second", "Training throughput of the current job.", registry=self.registry
        )
        self.step = Gauge(f"{prefix}_step", "Optimizer step of the current job.", registry=self.registry)
        self.up = Gauge(f"{prefix}_up", "1 while the service is consuming.", registry=self.registry)

    def serve(self, port: int, *, host: str) -> None:
        """Expose ``/metrics`` on ``host:port`` (port 0 disables it)."""
        serve_metrics(self.registry, port=port, host=host)
