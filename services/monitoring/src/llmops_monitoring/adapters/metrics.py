"""Prometheus metrics of the monitoring service."""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram

from llmops_config.metrics import serve_metrics


class MonitoringMetrics:
    def __init__(self, registry: CollectorRegistry | None = None) -> None:
        self.registry = registry or CollectorRegistry()
        self.up = Gauge("llmops_monitoring_up", "1 while the service runs", registry=self.registry)
        self.drift_score = Gauge(
            "llmops_monitoring_drift_score",
            "Latest drift score per signal (higher is further from the reference)",
            ["model", "version", "signal"],
            registry=self.registry,
        )
        self.window_size = Gauge(
            "llmops_monitoring_window_size",
            "Events in the latest closed window",
            ["model", "version"],
            registry=self.registry,
        )
        self.open_window_size = Gauge(
            "llmops_monitoring_open_window_size",
            "Events in the window being filled",
            ["model", "version"],
            registry=self.registry,
        )
        self.last_report_time = Gauge(
            "llmops_monitoring_last_report_timestamp_seconds",
            "Unix time of the latest report",
            ["model"],
            registry=self.registry,
        )
        self.reports = Counter(
            "llmops_monitoring_reports_total", "Reports written", ["model", "action"], registry=self.registry
        )
        self.retrains_requested = Counter(
            "llmops_monitoring_retrains_requested_total",
            "Training requests published",
            ["model", "reason"],
            registry=self.registry,
        )
        self.feedback = Counter(
            "llmops_monitoring_feedback_total",
            "Feedback labels by where they joined (window, late, early)",
            ["joined"],
            registry=self.registry,
        )
        self.report_duration = Histogram(
            "llmops_monitoring_report_duration_seconds",
            "Wall time of one window's analysis and report",
            buckets=(0.5, 1, 2, 5, 10, 20, 40, 80),
            registry=self.registry,
        )

    def serve(self, port: int, *, host: str) -> None:
        """Expose ``/metrics`` on ``host:port`` (port 0 disables it)."""
        serve_metrics(self.registry, port=port, host=host)
