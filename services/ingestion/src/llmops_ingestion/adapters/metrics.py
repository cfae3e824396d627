"""Prometheus metrics of the ingestion service, on a registry of its own (tests build several)."""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Gauge

from llmops_config.metrics import serve_metrics


class IngestionMetrics:
    def __init__(self, registry: CollectorRegistry | None = None) -> None:
        self.registry = registry or CollectorRegistry()
        prefix = "llmops_ingestion"
        self.messages = Counter(
            f"{prefix}_messages_total",
            "Messages read, by topic and outcome of processing.",
            ["topic", "outcome"],
            registry=self.registry,
        )
        self.records_in = Counter(
            f"{prefix}_records_in_total",
            "Records and instruction examples that reached curation, by origin (records, feedback, instructions).",
            ["origin"],
            registry=self.registry,
        )
        self.accepted = Counter(
            f"{prefix}_records_accepted_total",
            "Curated records stored, by label status.",
            ["labelled"],
            registry=self.registry,
        )
        self.instructions_accepted = Counter(
            f"{prefix}_instructions_accepted_total",
            "Curated instruction examples stored.",
            registry=self.registry,
        )
        self.preference_pairs = Counter(
            f"{prefix}_preference_pairs_total",
            "Preference pairs made from feedback on generations, by source (correction, ratings).",
            ["source"],
            registry=self.registry,
        )
        self.corrections_refused = Counter(
            f"{prefix}_corrections_refused_total",
            "Corrected answers parked before their generation's log that made an invalid instruction example"
            " once it came (the feedback was consumed before, so it cannot go to the DLQ), by reason.",
            ["reason"],
            registry=self.registry,
        )
        self.duplicates = Counter(
            f"{prefix}_duplicates_total",
            "Records and instruction examples dropped as duplicates, by kind (erased: an erasure removed"
            " the record, or its whole tenant, before it came again).",
            ["kind"],
            registry=self.registry,
        )
        self.redacted = Counter(
            f"{prefix}_pii_redacted_total",
            "PII spans replaced by placeholders, by kind.",
            ["kind"],
            registry=self.registry,
        )
        self.dead_lettered = Counter(
            f"{prefix}_dlq_total",
            "Messages sent to the DLQ, by stage and reason.",
            ["stage", "reason"],
            registry=self.registry,
        )
        self.pushed = Counter(
            f"{prefix}_feast_rows_pushed_total", "Feature rows pushed to Feast.", registry=self.registry
        )
        self.outbox = Gauge(
            f"{prefix}_feast_outbox_rows", "Curated rows waiting to be pushed to Feast.", registry=self.registry
        )
        self.snapshots = Counter(
            f"{prefix}_snapshots_total",
            "Dataset snapshots cut (either series), by trigger.",
            ["trigger"],
            registry=self.registry,
        )
        self.erasures = Counter(
            f"{prefix}_erasures_total",
            "Erasure requests applied, by scope (tenant: every record of a tenant; subjects: listed record ids).",
            ["scope"],
            registry=self.registry,
        )
        self.erased = Counter(
            f"{prefix}_records_erased_total",
            "Curated records and instruction examples removed by erasures (store and Feast).",
            registry=self.registry,
        )
        self.up = Gauge(f"{prefix}_up", "1 while the service is consuming.", registry=self.registry)

    def serve(self, port: int, *, host: str) -> None:
        """Expose ``/metrics`` on ``host:port`` (port 0 disables it)."""
        serve_metrics(self.registry, port=port, host=host)
