"""Monitoring windows and evaluations land in one Evidently workspace: a project per model shared by
both services, a snapshot per report (replaced, not copied, on a re-run), a dashboard tab per service
whose panels find their points the way Evidently's UI looks them up (its own local data storage)."""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

import pandas as pd
import pytest

from llmops_evaluation.adapters.workspace import PANELS as EVALUATION_PANELS
from llmops_evaluation.adapters.workspace import add_evaluation
from llmops_monitoring.adapters.workspace import PANELS as MONITORING_PANELS
from llmops_monitoring.adapters.workspace import add_window
from llmops_storage.evidently_workspace import ReportWorkspace, TrendPanel, project_id


def _drift_snapshot() -> Any:
    from evidently import DataDefinition, Dataset, Report
    from evidently.metrics import ValueDrift

    definition = DataDefinition(numerical_columns=["length"], categorical_columns=["prediction"])
    current = pd.DataFrame({"length": [30.0, 41, 52, 63, 74, 85] * 5, "prediction": list("abbbab") * 5})
    reference = pd.DataFrame({"length": [10.0, 12, 14, 16, 18, 20] * 5, "prediction": list("aabaaa") * 5})
    metrics = [
        ValueDrift(column="length", method="wasserstein"),
        ValueDrift(column="prediction", method="jensenshannon"),
    ]
    return Report(metrics).run(
        Dataset.from_pandas(current, data_definition=definition),
        Dataset.from_pandas(reference, data_definition=definition),
    )


def _classification_snapshot(accuracy_of_current: float) -> Any:
    from evidently import DataDefinition, Dataset, MulticlassClassification, Report
    from evidently.presets import ClassificationPreset

    definition = DataDefinition(
        classification=[MulticlassClassification(target="target", prediction_labels="prediction")],
        categorical_columns=["target", "prediction"],
    )
    target = ["a", "b", "c", "a", "b", "c", "a", "b", "c", "a"]
    right = int(accuracy_of_current * len(target))
    prediction = target[:right] + ["c" if t != "c" else "a" for t in target[right:]]
    frame = pd.DataFrame({"target": target, "prediction": prediction})
    return Report([ClassificationPreset()]).run(Dataset.from_pandas(frame, data_definition=definition), None)


def _summary(report_id: str) -> dict[str, Any]:
    return {
        "report_id": report_id,
        "model_name": "banking",
        "model_version": 2,
        "kind": "classification",
        "window": {"size": 30, "start": "2026-12-01T07:00:00+00:00", "end": "2026-12-01T07:05:00+00:00"},
        "decision": {"action": "request", "kind": "drift", "explanation": "length drifted"},
    }


def _points(path: Path, model: str, panel: TrendPanel) -> dict[str, list[float]]:
    """The panel's series as Evidently's UI computes them: legend -> values, one per matching snapshot."""
    from evidently.ui.service.base import SeriesFilter
    from evidently.ui.service.storage.local.base import InMemoryDataStorage

    storage = InMemoryDataStorage(str(path))
    result: dict[str, list[float]] = {}
    for series in panel.series:
        metric = series.metric if series.metric.startswith("evidently:") else f"evidently:metric_v2:{series.metric}"
        response = asyncio.run(
            storage.get_data_series(
                project_id(model),
                [SeriesFilter(tags=[panel.tag], metadata={}, metric=metric, metric_labels=dict(series.labels))],
                None,
                None,
            )
        )
        result[series.legend] = [value for item in response.series for value in item.values if value is not None]
    return result


@pytest.fixture(scope="module")
def snapshots() -> dict[str, Any]:
    return {
        "drift": _drift_snapshot(),
        "quality": _classification_snapshot(0.8),
        "evaluation": _classification_snapshot(0.9),
    }


def test_windows_and_evaluations_share_the_model_project(tmp_path: Path, snapshots: dict[str, Any]) -> None:
    from evidently.ui.workspace import Workspace

    monitoring, evaluation = ReportWorkspace(tmp_path), ReportWorkspace(tmp_path)  # two services, one folder
    for _ in range(2):  # a redelivered window and a re-run evaluation replace their snapshots
        add_window(
            monitoring,
            summary=_summary("r-1"),
            drift_snapshot=snapshots["drift"],
            quality_snapshot=snapshots["quality"],
            html_uri="/artifacts/reports/monitoring/banking/r-1/report.html",
        )
        add_evaluation(
            evaluation,
            model_name="banking",
            version=2,
            snapshot=snapshots["evaluation"],
            decision="approved",
            html_uri="/artifacts/evaluations/banking/2/report.html",
            kind="classification",
        )

    workspace = Workspace(str(tmp_path))
    projects = workspace.list_projects()
    assert [(p.name, p.id) for p in projects] == [("banking", project_id("banking"))]
    runs = [workspace.get_run(project_id("banking"), run) for run in workspace.list_runs(project_id("banking"))]
    assert sorted(run.name for run in runs) == [
        "evaluation of v2: approved",
        "window r-1 (v2): drift, request",
        "window r-1 (v2): quality on feedback labels",
    ]
    drift = next(run for run in runs if "drift" in run.tags)
    assert {"monitoring", "v2", "classification"} <= set(drift.tags)
    assert drift.metadata["report_uri"].endswith("r-1/report.html") and drift.metadata["decision"] == "request"
    assert drift.timestamp.isoformat().startswith("2026-12-01T07:05:00")

    dashboard = workspace.get_dashboard(project_id("banking"))
    assert [tab.title for tab in dashboard.tabs] == ["Monitoring", "Evaluation"]
    assert len(dashboard.panels) == len(MONITORING_PANELS) + len(EVALUATION_PANELS)


def test_the_dashboard_panels_find_their_points(tmp_path: Path, snapshots: dict[str, Any]) -> None:
    workspace = ReportWorkspace(tmp_path)
    add_window(
        workspace,
        summary=_summary("r-2"),
        drift_snapshot=snapshots["drift"],
        quality_snapshot=snapshots["quality"],
        html_uri="report.html",
    )
    add_evaluation(
        workspace,
        model_name="banking",
        version=3,
        snapshot=snapshots["evaluation"],
        decision="rejected",
        html_uri="report.html",
        kind="classification",
    )
    drift_panel, accuracy_panel = MONITORING_PANELS[0], MONITORING_PANELS[1]
    drift = _points(tmp_path, "banking", drift_panel)
    assert len(drift["length"]) == 1 and drift["length"][0] > 0.1  # the window's lengths moved
    assert len(drift["prediction"]) == 1
    # Tags keep the services apart: the monitoring panel shows the window, the evaluation panel the version.
    assert _points(tmp_path, "banking", accuracy_panel)["accuracy"] == [pytest.approx(0.8)]
    assert _points(tmp_path, "banking", EVALUATION_PANELS[0])["accuracy"] == [pytest.approx(0.9)]


def test_a_broken_workspace_does_not_fail_the_report(tmp_path: Path, snapshots: dict[str, Any]) -> None:
    blocked = tmp_path / "not-a-directory"
    blocked.write_text("a file where the workspace should be")
    add_window(
        ReportWorkspace(blocked),
        summary=_summary("r-3"),
        drift_snapshot=snapshots["drift"],
        quality_snapshot=None,
        html_uri="report.html",
    )  # logged, not raised
    assert blocked.read_text() == "a file where the workspace should be"
