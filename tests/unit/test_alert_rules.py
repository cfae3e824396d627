"""The alert rules and the dashboard query only metrics the code registers, every alert has a
runbook and a promtool unit test, and the committed dashboard is the generator's output.

The registries are built from the services' metrics classes and the bus collectors every service
registers (``service_app``), without running anything. ``promtool test rules`` itself runs in
``make lint``.
"""

from __future__ import annotations

import re
from pathlib import Path

import yaml
from prometheus_client import CollectorRegistry

from llmops_cli import dashboard
from llmops_config import PlatformSettings
from llmops_deployment.adapters.metrics import DeploymentMetrics
from llmops_evaluation.adapters.metrics import EvaluationMetrics
from llmops_fine_tuning.adapters.metrics import FineTuningMetrics
from llmops_gateway.adapters.metrics import GatewayMetrics
from llmops_ingestion.adapters.metrics import IngestionMetrics
from llmops_messaging import ConsumerHealthCollector
from llmops_messaging.bus_metrics import (
    ConsumerLagCollector,
    DeadLetterCollector,
    PartitionLag,
    count_dead_letter,
)
from llmops_monitoring.adapters.metrics import MonitoringMetrics

ROOT = Path(__file__).resolve().parents[2]
ALERTS = ROOT / "deploy" / "prometheus" / "alerts.yaml"
ALERT_TESTS = ROOT / "deploy" / "prometheus" / "alerts_test.yaml"
PROMETHEUS_OWN = {"up"}
"""Series Prometheus writes itself for every scrape target."""
_PROMQL_WORDS = {
    "sum", "max", "min", "avg", "by", "without", "rate", "increase", "offset", "unless", "or", "and",
    "histogram_quantile", "le", "on", "ignoring", "bool", "count", "clamp_min",
}  # fmt: skip


class _StubLag(ConsumerLagCollector):
    """The lag collector with the broker replaced by one row (its names are what is checked)."""

    def _rows(self, groups: list[str]) -> list[PartitionLag]:
        return [PartitionLag("g", "t", 0, 1, 2)]


def _registered_names() -> set[str]:
    names: set[str] = set()
    registries = [
        metrics.registry
        for metrics in (
            IngestionMetrics(),
            FineTuningMetrics(),
            EvaluationMetrics(),
            DeploymentMetrics(),
            GatewayMetrics(),
            MonitoringMetrics(),
        )
    ]
    bus = CollectorRegistry()
    bus.register(ConsumerHealthCollector(lambda: []))
    bus.register(DeadLetterCollector())
    bus.register(_StubLag(PlatformSettings(), service="tests", groups=lambda: ["g"]))
    count_dead_letter(consumer_group="g", topic="t", stage="decode", reason="invalid_json")
    registries.append(bus)
    for registry in registries:
        for family in registry.collect():
            names.add(family.name)
            names.update(sample.name for sample in family.samples)
            if family.type == "counter":
                names.add(f"{family.name}_total")
            if family.type == "histogram":
                names.update(f"{family.name}_{suffix}" for suffix in ("bucket", "sum", "count"))
    return names


def _metric_names(expr: str) -> set[str]:
    without_strings = re.sub(r'"[^"]*"', '""', expr)
    without_labels = re.sub(r"\{[^}]*\}", "", without_strings)
    without_ranges = re.sub(r"\[[^\]]*\]", "", without_labels)
    without_groupings = re.sub(r"\b(by|without|on|ignoring)\s*\([^)]*\)", "", without_ranges)
    words = set(re.findall(r"\b[a-zA-Z_:][a-zA-Z0-9_:]*\b", without_groupings))
    return {
        word
        for word in words
        if word not in _PROMQL_WORDS and not word.isdigit() and not re.fullmatch(r"\d+[smhd]", word)
    }


def _rules() -> list[dict[str, object]]:
    return [rule for group in yaml.safe_load(ALERTS.read_text())["groups"] for rule in group["rules"]]


def test_every_metric_an_alert_uses_is_registered_by_the_code() -> None:
    registered = _registered_names()
    for rule in _rules():
        used = _metric_names(str(rule["expr"]))
        assert used, f"{rule['alert']}: no metric found in its expression"
        unknown = used - registered - PROMETHEUS_OWN
        assert not unknown, f"{rule['alert']} uses metrics no service registers: {sorted(unknown)}"


def test_every_alert_links_an_existing_runbook_and_has_a_promtool_test() -> None:
    tested = set(re.findall(r"alertname: (\w+)", ALERT_TESTS.read_text()))
    for rule in _rules():
        annotations = rule["annotations"]
        assert isinstance(annotations, dict)
        runbook = ROOT / str(annotations["runbook_url"])
        assert runbook.is_file(), f"{rule['alert']}: runbook {runbook} is missing"
        assert rule["alert"] in tested, f"{rule['alert']} has no case in {ALERT_TESTS.name}"
        assert rule["labels"]["severity"] in {"warning", "critical"}  # type: ignore[index]


def test_every_metric_the_dashboard_queries_is_registered_by_the_code() -> None:
    registered = _registered_names()
    for expr in dashboard.llmops_dashboard().queries():
        unknown = _metric_names(expr) - registered
        assert not unknown, f"the dashboard queries unregistered metrics {sorted(unknown)} in {expr}"


def test_the_committed_dashboard_is_the_generated_one() -> None:
    committed = (ROOT / dashboard.DASHBOARD_PATH).read_text()
    assert committed == dashboard.render(), "deploy/grafana/llmops.json is stale: run `make generate`"


def test_the_dashboard_covers_the_loop() -> None:
    rows = [row.title for row in dashboard.llmops_dashboard().rows]
    assert rows == ["Traffic", "Latency", "Canary", "Drift", "Retraining chain", "Dead-letter queue", "Consumer lag"]
