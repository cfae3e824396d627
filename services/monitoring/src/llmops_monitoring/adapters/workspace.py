"""A window's Evidently snapshots into the Evidently workspace (``llmops ui``): the drift snapshot,
and the classification snapshot when the window had feedback labels, in the model's project under
the tag ``monitoring``, with a dashboard tab plotting every drift signal and the accuracy over the
windows. The files in the artifact store (``report_store``) stay the record; this is the view."""

from __future__ import annotations

import logging
from datetime import datetime
from typing import Any

from llmops_monitoring.domain.analysis import COLUMN_METHODS
from llmops_monitoring.domain.generation import GENERATION_DRIFT_METHODS, SHARE_COLUMNS
from llmops_storage.evidently_workspace import ReportWorkspace, Series, TrendPanel

logger = logging.getLogger(__name__)

TAB = "Monitoring"
TAG = "monitoring"

PANELS: tuple[TrendPanel, ...] = (
    TrendPanel(
        "Drift per signal (classification windows)",
        TAG,
        tuple(Series(column, "ValueDrift", {"column": column}) for column in COLUMN_METHODS),
        "Evidently's drift score per window: Jensen-Shannon distance for the predicted label, "
        "normed Wasserstein distance for the rest.",
    ),
    TrendPanel(
        "Accuracy on labelled traffic",
        TAG,
        (Series("accuracy", "Accuracy"),),
        "Windows with feedback labels only (the classification snapshots).",
    ),
    TrendPanel(
        "Drift per signal (generation windows)",
        TAG,
        tuple(Series(column, "ValueDrift", {"column": column}) for column in GENERATION_DRIFT_METHODS),
    ),
    TrendPanel(
        "Shares of generations (refusals, invalid format, PII, cut by length)",
        TAG,
        tuple(Series(column, "MeanValue", {"column": column}) for column in SHARE_COLUMNS),
    ),
)


def add_window(
    workspace: ReportWorkspace,
    *,
    summary: dict[str, Any],
    drift_snapshot: Any,
    quality_snapshot: Any | None,
    html_uri: str,
) -> None:
    """Add the window's snapshots; a failure is logged, never raised (the report files are written)."""
    model, version, report_id = summary["model_name"], summary["model_version"], summary["report_id"]
    decision = summary["decision"]["action"]
    metadata = {
        "model_version": str(version),
        "report_id": report_id,
        "kind": str(summary.get("kind", "classification")),
        "decision": str(decision),
        "report_uri": html_uri,
        "window_size": str(summary["window"]["size"]),
    }
    timestamp = _parse(summary["window"].get("end", ""))
    tags = [TAG, f"v{version}", metadata["kind"]]
    try:
        workspace.add(
            model_name=model,
            key=f"monitoring/{report_id}/drift",
            snapshot=drift_snapshot,
            name=f"window {report_id} (v{version}): drift, {decision}",
            tags=[*tags, "drift"],
            metadata=metadata,
            timestamp=timestamp,
            tab=TAB,
            panels=PANELS,
        )
        if quality_snapshot is not None:
            workspace.add(
                model_name=model,
                key=f"monitoring/{report_id}/quality",
                snapshot=quality_snapshot,
                name=f"window {report_id} (v{version}): quality on feedback labels",
                tags=[*tags, "quality"],
                metadata=metadata,
                timestamp=timestamp,
            )
    except Exception:  # the workspace is a view: losing one snapshot must not fail the window
        logger.warning(
            "could not add the window to the Evidently workspace",
            extra={"workspace": str(workspace.path), "report": report_id},
            exc_info=True,
        )


def _parse(value: str) -> datetime | None:
    try:
        return datetime.fromisoformat(value) if value else None
    except ValueError:
        return None
