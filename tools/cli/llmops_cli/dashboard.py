"""The Grafana dashboard of the loop, generated: ``make generate`` writes ``deploy/grafana/llmops.json``
and a test checks the committed file matches (and that every metric it queries is one the code
registers).

A small typed builder instead of a generator library: the panels are a few dataclasses that become
Grafana's dashboard JSON (schema 39, Prometheus data source chosen by the ``datasource`` variable).
Rows follow the loop: traffic, latency, canary shares, drift signals, the retraining chain, the DLQ,
consumer lag.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

DASHBOARD_PATH = Path("deploy") / "grafana" / "llmops.json"
_DATASOURCE = {"type": "prometheus", "uid": "${datasource}"}
_WIDTH = 24  # Grafana's grid


@dataclass(frozen=True, slots=True)
class Query:
    expr: str
    legend: str = ""


@dataclass(frozen=True, slots=True)
class Panel:
    title: str
    queries: tuple[Query, ...]
    unit: str = "short"
    description: str = ""
    kind: str = "timeseries"
    """``timeseries`` or ``stat``."""
    width: int = 12
    height: int = 8


@dataclass(frozen=True, slots=True)
class Row:
    title: str
    panels: tuple[Panel, ...]


@dataclass
class Dashboard:
    title: str
    uid: str
    rows: list[Row] = field(default_factory=list)

    def to_json(self) -> dict[str, Any]:
        panels: list[dict[str, Any]] = []
        next_id = 1
        y = 0
        for row in self.rows:
            panels.append(
                {
                    "type": "row",
                    "title": row.title,
                    "id": next_id,
                    "collapsed": False,
                    "panels": [],
                    "gridPos": {"x": 0, "y": y, "w": _WIDTH, "h": 1},
                }
            )
            next_id += 1
            y += 1
            x = 0
            row_height = 0
            for panel in row.panels:
                if x + panel.width > _WIDTH:
                    x, y, row_height = 0, y + row_height, 0
                panels.append(_panel(panel, next_id, x, y))
                next_id += 1
                x += panel.width
                row_height = max(row_height, panel.height)
            y += row_height
        return {
            "title": self.title,
            "uid": self.uid,
            "tags": ["llmops"],
            "timezone": "utc",
            "schemaVersion": 39,
            "version": 1,
            "editable": True,
            "refresh": "30s",
            "time": {"from": "now-6h", "to": "now"},
            "templating": {
                "list": [
                    {
                        "type": "datasource",
                        "name": "datasource",
                        "label": "Prometheus",
                        "query": "prometheus",
                        "current": {},
                        "hide": 0,
                    }
                ]
            },
            "annotations": {"list": []},
            "panels": panels,
        }

    def queries(self) -> list[str]:
        return [query.expr for row in self.rows for panel in row.panels for query in panel.queries]


def _panel(panel: Panel, panel_id: int, x: int, y: int) -> dict[str, Any]:
    return {
        "type": panel.kind,
        "title": panel.title,
        "description": panel.description,
        "id": panel_id,
        "datasource": _DATASOURCE,
        "gridPos": {"x": x, "y": y, "w": panel.width, "h": panel.height},
        "fieldConfig": {"defaults": {"unit": panel.unit}, "overrides": []},
        "options": {"legend": {"displayMode": "list", "placement": "bottom", "showLegend": True}}
        if panel.kind == "timeseries"
        else {"reduceOptions": {"calcs": ["lastNotNull"], "fields": "", "values": False}},
        "targets": [
            {
                "refId": chr(ord("A") + index),
                "datasource": _DATASOURCE,
                "expr": query.expr,
                "legendFormat": query.legend,
            }
            for index, query in enumerate(panel.queries)
        ],
    }


def _quantiles(metric: str, by: str, window: str = "5m") -> tuple[Query, ...]:
    return tuple(
        Query(
            f"histogram_quantile({q}, sum by (le, {by}) (rate({metric}_bucket[{window}])))",
            f"p{int(q * 100)} {{{{{by}}}}}",
        )
        for q in (0.5, 0.95, 0.99)
    )


def llmops_dashboard() -> Dashboard:
    """The loop on one page."""
    return Dashboard(
        title="llmops: the closed loop",
        uid="llmops-loop",
        rows=[
            Row(
                "Traffic",
                (
                    Panel(
                        "Requests by method and status",
                        (
                            Query(
                                "sum by (method, code) (rate(llmops_gateway_requests_total[5m]))", "{{method}} {{code}}"
                            ),
                        ),
                        unit="reqps",
                    ),
                    Panel(
                        "Texts classified and generations, by model and route",
                        (
                            Query(
                                "sum by (model, route) (rate(llmops_gateway_predictions_total[5m]))",
                                "{{model}} {{route}}",
                            ),
                            Query(
                                "sum by (model, route) (rate(llmops_gateway_generations_total[5m]))",
                                "{{model}} {{route}} (generations)",
                            ),
                        ),
                        unit="ops",
                    ),
                    Panel("Calls in flight", (Query("sum(llmops_gateway_in_flight)", "in flight"),), width=8),
                    Panel(
                        "Inference logs published and dropped",
                        (
                            Query("sum(rate(llmops_gateway_inference_log_published_total[5m]))", "published"),
                            Query(
                                "sum by (reason) (rate(llmops_gateway_inference_log_dropped_total[5m]))",
                                "dropped {{reason}}",
                            ),
                        ),
                        unit="ops",
                        width=8,
                    ),
                    Panel(
                        "Inference-log queue",
                        (Query("sum(llmops_gateway_inference_log_queue_size)", "queued"),),
                        width=8,
                    ),
                ),
            ),
            Row(
                "Latency",
                (
                    Panel("Gateway latency", _quantiles("llmops_gateway_request_latency_seconds", "method"), unit="s"),
                    Panel(
                        "Triton call latency", _quantiles("llmops_gateway_triton_latency_seconds", "model"), unit="s"
                    ),
                    Panel(
                        "Time to first token",
                        _quantiles("llmops_gateway_time_to_first_token_seconds", "model"),
                        unit="s",
                    ),
                    Panel(
                        "Go-live (write, load, warm-up, smoke test)",
                        (
                            Query(
                                "histogram_quantile(0.95, sum by (le) "
                                "(rate(llmops_deployment_go_live_seconds_bucket[1h])))",
                                "p95",
                            ),
                        ),
                        unit="s",
                    ),
                ),
            ),
            Row(
                "Canary",
                (
                    Panel(
                        "Canary traffic share",
                        (Query("max by (model) (llmops_deployment_canary_traffic_share)", "{{model}}"),),
                        unit="percentunit",
                    ),
                    Panel(
                        "Live versions (champion, canary)",
                        (Query("max by (model, role) (llmops_deployment_live_version)", "{{model}} {{role}}"),),
                    ),
                    Panel(
                        "Canary verdicts",
                        (
                            Query(
                                "sum by (decision) (increase(llmops_deployment_canary_decisions_total[1h]))",
                                "{{decision}}",
                            ),
                        ),
                    ),
                    Panel(
                        "Canary fallbacks and re-routes",
                        (
                            Query(
                                "sum by (model) (rate(llmops_gateway_canary_fallbacks_total[5m]))", "fallback {{model}}"
                            ),
                            Query("sum by (model) (rate(llmops_gateway_reroutes_total[5m]))", "re-route {{model}}"),
                        ),
                        unit="ops",
                    ),
                ),
            ),
            Row(
                "Drift",
                (
                    Panel(
                        "Drift score per signal",
                        (Query("max by (model, signal) (llmops_monitoring_drift_score)", "{{model}} {{signal}}"),),
                        width=24,
                    ),
                    Panel(
                        "Monitoring windows by policy action",
                        (
                            Query(
                                "sum by (model, action) (increase(llmops_monitoring_reports_total[1h]))",
                                "{{model}} {{action}}",
                            ),
                        ),
                    ),
                    Panel(
                        "Events per window",
                        (
                            Query(
                                "max by (model, version) (llmops_monitoring_window_size)",
                                "closed {{model}} v{{version}}",
                            ),
                            Query(
                                "max by (model, version) (llmops_monitoring_open_window_size)",
                                "open {{model}} v{{version}}",
                            ),
                        ),
                    ),
                ),
            ),
            Row(
                "Retraining chain",
                (
                    Panel(
                        "Retraining requested",
                        (
                            Query(
                                "sum by (model, reason) (increase(llmops_monitoring_retrains_requested_total[1h]))",
                                "{{model}} {{reason}}",
                            ),
                        ),
                        width=8,
                    ),
                    Panel(
                        "Training jobs by outcome",
                        (Query("sum by (outcome) (increase(llmops_fine_tuning_jobs_total[1h]))", "{{outcome}}"),),
                        width=8,
                    ),
                    Panel(
                        "Evaluation decisions",
                        (Query("sum by (decision) (increase(llmops_evaluation_decisions_total[1h]))", "{{decision}}"),),
                        width=8,
                    ),
                    Panel(
                        "Deployments by outcome",
                        (Query("sum by (outcome) (increase(llmops_deployment_deployments_total[1h]))", "{{outcome}}"),),
                        width=8,
                    ),
                    Panel(
                        "Snapshots cut",
                        (Query("sum by (trigger) (increase(llmops_ingestion_snapshots_total[1h]))", "{{trigger}}"),),
                        width=8,
                    ),
                    Panel(
                        "Training throughput",
                        (Query("max(llmops_fine_tuning_examples_per_second)", "examples/s"),),
                        width=8,
                    ),
                ),
            ),
            Row(
                "Dead-letter queue",
                (
                    Panel(
                        "Messages dead-lettered, by group and reason",
                        (
                            Query(
                                "sum by (consumer_group, reason) (increase(llmops_dlq_messages_total[1h]))",
                                "{{consumer_group}} {{reason}}",
                            ),
                        ),
                    ),
                    Panel(
                        "Dead letters in the last 24 h",
                        (Query("sum(increase(llmops_dlq_messages_total[24h]))", "total"),),
                        kind="stat",
                    ),
                ),
            ),
            Row(
                "Consumer lag",
                (
                    Panel(
                        "Lag per group and topic",
                        (
                            Query(
                                "sum by (consumer_group, topic) (llmops_consumer_lag)", "{{consumer_group}} {{topic}}"
                            ),
                        ),
                    ),
                    Panel(
                        "Stalled consumers",
                        (Query("max by (consumer_group) (llmops_consumer_stalled)", "{{consumer_group}}"),),
                    ),
                ),
            ),
        ],
    )


def render() -> str:
    """The dashboard file's content (stable: sorted keys, two-space indent, final newline)."""
    return json.dumps(llmops_dashboard().to_json(), indent=2, sort_keys=True) + "\n"


def write(root: Path) -> Path:
    path = root / DASHBOARD_PATH
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(render())
    return path
