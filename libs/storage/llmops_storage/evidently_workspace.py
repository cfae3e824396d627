"""The Evidently workspace: every monitoring window's and evaluation's Evidently snapshot in one
place, so ``llmops ui`` (Evidently's own UI) shows drift and quality over time per model instead
of HTML files scattered under the artifact store.

Layout (Evidently's local workspace, read by ``evidently ui --workspace``): a *project* per model,
a *snapshot* per monitoring window (drift, and quality when labelled) and per evaluation, tagged
with where it came from (``monitoring``, ``evaluation``) and the model version, and a dashboard tab
per service plotting its signals over the snapshots.

Ids are derived, not random: the project's from the model name and a snapshot's from its report
(the window's report id, the evaluated version), so two services writing the same model share one
project and a re-run (a redelivered window, ``make evaluate`` again) replaces its snapshot instead
of adding a copy. Evidently is imported on first use (it takes seconds).
"""

from __future__ import annotations

import threading
import uuid
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any

# Fixed once: changing it would give every model a second project.
_NAMESPACE = uuid.UUID("5b0c6f1e-8f5e-4d8a-9a55-3c2f4e6b7d10")


def project_id(model_name: str) -> uuid.UUID:
    """The workspace project of ``model_name`` (the same in every service and run)."""
    return uuid.uuid5(_NAMESPACE, f"project:{model_name}")


def snapshot_id(model_name: str, key: str) -> uuid.UUID:
    """The snapshot of report ``key`` of ``model_name`` (a re-run of the same report replaces it)."""
    return uuid.uuid5(_NAMESPACE, f"snapshot:{model_name}:{key}")


@dataclass(frozen=True, slots=True)
class Series:
    """One line of a dashboard panel: an Evidently metric (``ValueDrift``, ``Accuracy``, ...) whose
    parameters include ``labels`` (e.g. ``{"column": "length"}``)."""

    legend: str
    metric: str
    labels: Mapping[str, str] = field(default_factory=dict)


@dataclass(frozen=True, slots=True)
class TrendPanel:
    """A line plot over the project's snapshots tagged ``tag``, one line per series."""

    title: str
    tag: str
    series: tuple[Series, ...]
    description: str = ""


class ReportWorkspace:
    """Adds reports to the Evidently workspace at ``path`` (a local directory, created on first use)."""

    def __init__(self, path: Path) -> None:
        self.path = Path(path)
        self._workspace: Any = None
        self._tabs_done: set[tuple[str, str]] = set()
        self._lock = threading.Lock()  # the services write from worker threads

    def _open(self) -> Any:
        if self._workspace is None:
            from evidently.ui.workspace import Workspace

            self.path.mkdir(parents=True, exist_ok=True)
            self._workspace = Workspace(str(self.path))
        return self._workspace

    def add(
        self,
        *,
        model_name: str,
        key: str,
        snapshot: Any,
        name: str,
        tags: Sequence[str] = (),
        metadata: Mapping[str, str] | None = None,
        timestamp: datetime | None = None,
        tab: str | None = None,
        panels: Sequence[TrendPanel] = (),
    ) -> uuid.UUID:
        """Add Evidently ``snapshot`` (a ``Report.run`` result) to ``model_name``'s project as report
        ``key``; ``panels`` go on the dashboard tab ``tab`` (added once, kept if already there).
        Returns the snapshot's id."""
        with self._lock:
            workspace = self._open()
            project = self._ensure_project(workspace, model_name)
            if tab is not None and panels and (model_name, tab) not in self._tabs_done:
                self._ensure_tab(workspace, project, tab, panels)
                self._tabs_done.add((model_name, tab))
            model = snapshot.to_snapshot_model()
            # The caller's snapshot is left as it is: name, tags and metadata go on the stored copy.
            model.name = name
            model.tags = sorted({*model.tags, *tags})
            model.metadata = {**model.metadata, **(metadata or {})}
            if timestamp is not None:
                model.timestamp = timestamp
            identifier = snapshot_id(model_name, key)
            # What ``Workspace.add_run`` does, with our derived id instead of a random one.
            workspace.state.write_snapshot(project, identifier, model)
            return identifier

    def _ensure_project(self, workspace: Any, model_name: str) -> uuid.UUID:
        from evidently.sdk.models import ProjectModel

        identifier = project_id(model_name)
        if workspace.get_project(identifier) is None:
            workspace.add_project(
                ProjectModel(
                    id=identifier,
                    name=model_name,
                    description=f"Model {model_name}: monitoring windows and evaluations (llmops)",
                )
            )
        return identifier

    def _ensure_tab(self, workspace: Any, project: uuid.UUID, tab: str, panels: Sequence[TrendPanel]) -> None:
        from evidently.sdk.models import DashboardTabModel
        from evidently.sdk.panels import line_plot_panel

        dashboard = workspace.get_dashboard(project)
        tab_id = uuid.uuid5(_NAMESPACE, f"tab:{tab}")
        existing = {panel.id for panel in dashboard.panels}
        current = next((t for t in dashboard.tabs if t.id == tab_id), None)
        if current is None:
            current = DashboardTabModel(id=tab_id, title=tab, panels=[])
            dashboard.tabs.append(current)
        changed = False
        for spec in panels:
            panel_id = uuid.uuid5(_NAMESPACE, f"panel:{tab}:{spec.title}")
            if panel_id not in existing:
                panel = line_plot_panel(
                    title=spec.title, values=_panel_metrics(spec), description=spec.description or None
                )
                panel.id = panel_id
                dashboard.panels.append(panel)
                changed = True
            if panel_id not in current.panels:
                current.panels.append(panel_id)
                changed = True
        if changed:
            workspace.save_dashboard(project, dashboard)


def _panel_metrics(spec: TrendPanel) -> list[Any]:
    from evidently.sdk.models import PanelMetric

    return [
        PanelMetric(legend=s.legend, metric=s.metric, metric_labels=dict(s.labels), tags=[spec.tag])
        for s in spec.series
    ]
