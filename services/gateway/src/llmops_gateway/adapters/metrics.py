"""Prometheus metrics of the gateway."""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram

from llmops_config.metrics import serve_metrics

_LATENCY_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10)
_ROW_BUCKETS = (1, 2, 4, 8, 16, 32, 64, 128, 256)
_GENERATION_BUCKETS = (0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 120, 300)


class GatewayMetrics:
    def __init__(self, registry: CollectorRegistry | None = None) -> None:
        self.registry = registry or CollectorRegistry()
        self.requests = Counter(
            "llmops_gateway_requests_total",
            "RPCs by method, model, version (empty before routing, 'mixed' for a batch over versions) and status code",
            ["method", "model", "version", "code"],
            registry=self.registry,
        )
        self.latency = Histogram(
            "llmops_gateway_request_latency_seconds",
            "Gateway-side latency of an RPC, by method, model and version",
            ["method", "model", "version"],
            buckets=_LATENCY_BUCKETS,
            registry=self.registry,
        )
        self.predictions = Counter(
            "llmops_gateway_predictions_total",
            "Texts classified, by model, version and route (champion/canary)",
            ["model", "version", "route"],
            registry=self.registry,
        )
        self.generations = Counter(
            "llmops_gateway_generations_total",
            "Generations finished or cancelled, by model, version (0: the base model), route and finish reason",
            ["model", "version", "route", "finish_reason"],
            registry=self.registry,
        )
        self.completion_tokens = Counter(
            "llmops_gateway_completion_tokens_total",
            "Tokens generated, by model and version",
            ["model", "version"],
            registry=self.registry,
        )
        self.time_to_first_token = Histogram(
            "llmops_gateway_time_to_first_token_seconds",
            "From the gateway's call to Triton to the first generated text, by model and version",
            ["model", "version"],
            buckets=_GENERATION_BUCKETS,
            registry=self.registry,
        )
        self.backend_latency = Histogram(
            "llmops_gateway_triton_latency_seconds",
            "Latency of one Triton inference call, by model and version",
            ["model", "version"],
            buckets=_LATENCY_BUCKETS,
            registry=self.registry,
        )
        self.backend_rows = Histogram(
            "llmops_gateway_triton_batch_rows",
            "Texts in one Triton classifier call (calls arriving in the same event-loop turn are coalesced)",
            buckets=_ROW_BUCKETS,
            registry=self.registry,
        )
        self.canary_fallbacks = Counter(
            "llmops_gateway_canary_fallbacks_total",
            "Canary calls that failed on Triton and were answered by the champion instead",
            ["model"],
            registry=self.registry,
        )
        self.reroutes = Counter(
            "llmops_gateway_reroutes_total",
            "Calls re-routed because Triton no longer had the routed version (e.g. right after a promotion)",
            ["model"],
            registry=self.registry,
        )
        self.log_published = Counter(
            "llmops_gateway_inference_log_published_total",
            "Inference-log events acknowledged by Kafka",
            registry=self.registry,
        )
        self.log_dropped = Counter(
            "llmops_gateway_inference_log_dropped_total",
            "Inference-log events not published, by reason (queue_full, publish_failed, shutdown)",
            ["reason"],
            registry=self.registry,
        )
        self.log_queue = Gauge(
            "llmops_gateway_inference_log_queue_size",
            "Inference-log events waiting to be published",
            registry=self.registry,
        )
        self.in_flight = Gauge(
            "llmops_gateway_in_flight",
            "Inference calls being served (waiting on Triton included); bounded by LLMOPS_GATEWAY_MAX_IN_FLIGHT",
            registry=self.registry,
        )
        self.key_denials = Counter(
            "llmops_gateway_key_denials_total",
            "Calls refused for their API key, by reason (unauthenticated, tenant, scope, rate, concurrency)",
            ["reason"],
            registry=self.registry,
        )
        self.guardrail_refusals = Counter(
            "llmops_gateway_guardrail_refusals_total",
            "Generation requests refused by a guardrail, by reason code (e.g. prompt_injection.ignore_instructions)",
            ["code"],
            registry=self.registry,
        )
        self.output_redactions = Counter(
            "llmops_gateway_output_redactions_total",
            "PII spans redacted from generated answers before they left the gateway, by kind",
            ["kind"],
            registry=self.registry,
        )
        self.audit_dropped = Counter(
            "llmops_gateway_audit_dropped_total",
            "Audit events (denied keys) not published: the bounded queue was full or the broker failed",
            registry=self.registry,
        )
        self.up = Gauge("llmops_gateway_up", "1 while the gateway serves", registry=self.registry)

    def serve(self, port: int, *, host: str) -> None:
        """Expose ``/metrics`` on ``host:port`` (port 0 disables it)."""
        serve_metrics(self.registry, port=port, host=host)
