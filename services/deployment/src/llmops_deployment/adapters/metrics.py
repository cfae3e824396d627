"""Prometheus metrics of the deployment service."""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram

from llmops_config.metrics import serve_metrics
from llmops_serving import ModelDeployment


class DeploymentMetrics:
    def __init__(self, registry: CollectorRegistry | None = None) -> None:
        self.registry = registry or CollectorRegistry()
        self.up = Gauge("llmops_deployment_up", "1 while the service runs", registry=self.registry)
        self.deployments = Counter(
            "llmops_deployment_deployments_total",
            "Deployments by outcome (canary, promoted, deferred to the reconciler, or the reason it failed)",
            ["outcome"],
            registry=self.registry,
        )
        self.canary_decisions = Counter(
            "llmops_deployment_canary_decisions_total",
            "Canaries ended, by decision",
            ["decision"],
            registry=self.registry,
        )
        self.canary_requests = Gauge(
            "llmops_deployment_canary_requests", "Requests the current canary served", ["model"], registry=self.registry
        )
        self.live_version = Gauge(
            "llmops_deployment_live_version",
            "Version serving per model and role (champion, canary)",
            ["model", "role"],
            registry=self.registry,
        )
        self.canary_share = Gauge(
            "llmops_deployment_canary_traffic_share", "Traffic share of the canary", ["model"], registry=self.registry
        )
        self.go_live_seconds = Histogram(
            "llmops_deployment_go_live_seconds",
            "Write, load, warm-up and smoke test of one version",
            buckets=(1, 2, 5, 10, 20, 40, 80, 160, 320),
            registry=self.registry,
        )
        self.retired = Counter("llmops_deployment_retired_total", "Versions unloaded", registry=self.registry)
        self.reconciliations = Counter(
            "llmops_deployment_reconciliations_total", "Reconciliation passes", registry=self.registry
        )

    def observe(self, state: ModelDeployment) -> None:
        self.live_version.labels(model=state.model_name, role="champion").set(state.champion_version or 0)
        self.live_version.labels(model=state.model_name, role="canary").set(state.canary_version or 0)
        self.canary_share.labels(model=state.model_name).set(state.canary_share if state.canary_version else 0)

    def serve(self, port: int, *, host: str) -> None:
        """Expose ``/metrics`` on ``host:port`` (port 0 disables it)."""
        serve_metrics(self.registry, port=port, host=host)
