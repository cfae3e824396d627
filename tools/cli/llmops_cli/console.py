"""The platform page beside Evidently's UI (``make ui``): what Evidently cannot show. Per model: who is
live (champion, canary and its share, from the compacted deployments topic), every version with what
it was trained from and why (the retraining chain: reason, requester, dataset snapshot) and the
evaluation gate's decision, and the latest monitoring windows with their decisions. Each links to
the model's project in Evidently's UI for the reports themselves.

It reads the artifact store and the deployments topic only, on each request; it writes nothing.
Served by Starlette (``/`` the page, ``/api/models`` the same as JSON).
"""

from __future__ import annotations

import html
from dataclasses import asdict, dataclass, field
from typing import Any

from llmops_config import PlatformSettings
from llmops_events.topics import DEPLOYMENTS
from llmops_storage import ArtifactStore, open_store
from llmops_storage.evidently_workspace import project_id

MONITORING_REPORTS = "reports/monitoring"
"""Where the monitoring service writes a folder per window (``<model>/<report id>/summary.json``)."""

WINDOWS_SHOWN = 5
"""Latest monitoring windows listed per model."""

DEPLOYMENTS_TIMEOUT_S = 5.0
"""How long one page load waits to replay the deployments topic."""


@dataclass
class VersionView:
    version: int
    reason: str
    requested_by: str
    dataset_id: str
    decision: str
    decision_reasons: list[str]


@dataclass
class WindowView:
    report_id: str
    version: int
    size: int
    action: str
    breached: list[str]


@dataclass
class ModelView:
    name: str
    champion: int | None = None
    canary: int | None = None
    canary_share: float = 0.0
    phase: str = "unknown"
    versions: list[VersionView] = field(default_factory=list)
    windows: list[WindowView] = field(default_factory=list)


def _read(store: ArtifactStore, path: str) -> dict[str, Any]:
    try:
        data = store.read_json(path)
    except (OSError, ValueError):
        return {}
    return data if isinstance(data, dict) else {}


def read_models(store: ArtifactStore) -> dict[str, ModelView]:
    """Models, versions, gate decisions and latest windows, from the artifact store's layout."""
    from llmops_models import ModelRegistry, evaluation_path, is_valid_name, manifest_path
    from llmops_models.layout import EVALUATIONS_PREFIX

    registry = ModelRegistry(store)
    registered = set(registry.model_names())
    names = registered | set(store.list(EVALUATIONS_PREFIX)) | set(store.list(MONITORING_REPORTS))
    models: dict[str, ModelView] = {}
    for name in sorted(n for n in names if is_valid_name(n)):
        view = ModelView(name=name)
        published = registry.published_versions(name) if name in registered else []
        evaluated = [int(v) for v in store.list(f"{EVALUATIONS_PREFIX}/{name}") if v.isdigit()]
        for version in sorted({*published, *evaluated}):
            lineage = _read(store, manifest_path(name, version)).get("lineage", {})
            decision = _read(store, f"{evaluation_path(name, version)}/decision.json")
            view.versions.append(
                VersionView(
                    version=version,
                    reason=str(lineage.get("reason") or ""),
                    requested_by=str(lineage.get("requested_by") or ""),
                    dataset_id=str(lineage.get("dataset_id") or ""),
                    decision=str(decision.get("decision") or "not evaluated"),
                    decision_reasons=[
                        str(r.get("rule", r) if isinstance(r, dict) else r) for r in decision.get("reasons") or []
                    ],
                )
            )
        for report_id in store.list(f"{MONITORING_REPORTS}/{name}")[-WINDOWS_SHOWN:][::-1]:
            summary = _read(store, f"{MONITORING_REPORTS}/{name}/{report_id}/summary.json")
            if not summary:
                continue
            view.windows.append(
                WindowView(
                    report_id=report_id,
                    version=int(summary.get("model_version", 0)),
                    size=int(summary.get("window", {}).get("size", 0)),
                    action=str(summary.get("decision", {}).get("action", "")),
                    breached=sorted(k for k, v in summary.get("signals", {}).items() if v.get("breached")),
                )
            )
        models[name] = view
    return models


async def read_deployments(
    settings: PlatformSettings, models: dict[str, ModelView], *, topic: str = DEPLOYMENTS
) -> str:
    """Fill in champion, canary and phase from the deployments topic; '' or why it could not."""
    from llmops_serving import DeploymentFeed

    feed = DeploymentFeed(settings, client_id=f"{settings.kafka_client_id_prefix}-console", topic=topic)
    try:
        await feed.start(timeout=DEPLOYMENTS_TIMEOUT_S, follow=False)
    except Exception as error:  # the broker may be down: the page still shows the artifacts
        return f"deployments unknown: {settings.kafka_bootstrap_servers} did not answer ({type(error).__name__})"
    finally:
        await feed.stop()
    for state in feed.book.models():
        view = models.setdefault(state.model_name, ModelView(name=state.model_name))
        view.champion, view.canary = state.champion_version, state.canary_version
        view.canary_share, view.phase = state.canary_share, state.phase
    return ""


def render(models: dict[str, ModelView], *, evidently_url: str, note: str) -> str:
    """The page: one section per model."""
    e = html.escape
    sections = []
    for view in models.values():
        live = f"champion v{view.champion}" if view.champion else "no champion"
        if view.canary:
            live += f", canary v{view.canary} at {view.canary_share:.0%}"
        versions = "".join(
            f"<tr><td>v{v.version}</td><td>{e(v.reason)}</td><td>{e(v.requested_by)}</td><td>{e(v.dataset_id)}</td>"
            f"<td>{e(v.decision)}</td><td>{e(', '.join(v.decision_reasons))}</td></tr>"
            for v in view.versions
        )
        windows = "".join(
            f"<tr><td>{e(w.report_id)}</td><td>v{w.version}</td><td>{w.size}</td><td>{e(w.action)}</td>"
            f"<td>{e(', '.join(w.breached))}</td></tr>"
            for w in view.windows
        )
        sections.append(
            f'<section class="model" id="model-{e(view.name)}"><h2>{e(view.name)}</h2>'
            f'<p class="live">{e(live)} ({e(view.phase)}) — '
            f'<a href="{e(evidently_url)}/projects/{project_id(view.name)}">reports in Evidently</a></p>'
            "<h3>Versions (the retraining chain)</h3><table><tr><th>version</th><th>reason</th>"
            "<th>requested by</th><th>dataset snapshot</th><th>gate</th><th>rules failed</th></tr>"
            f"{versions or '<tr><td colspan=6>none published</td></tr>'}</table>"
            "<h3>Latest monitoring windows</h3><table><tr><th>report</th><th>version</th><th>events</th>"
            "<th>decision</th><th>signals over threshold</th></tr>"
            f"{windows or '<tr><td colspan=5>none yet</td></tr>'}</table></section>"
        )
    body = "".join(sections) or "<p>No models yet: run <code>make demo</code>.</p>"
    return (
        "<!doctype html><html><head><meta charset='utf-8'><title>llmops platform</title><style>"
        "body{font-family:sans-serif;margin:24px}table{border-collapse:collapse;margin-bottom:12px}"
        "td,th{border:1px solid #999;padding:4px 8px;text-align:left}.note{color:#b00020}</style></head><body>"
        f"<h1>llmops platform</h1><p>Reports, drift and quality over time: <a href='{e(evidently_url)}'>"
        f"Evidently UI</a></p>{f'<p class=note>{e(note)}</p>' if note else ''}{body}</body></html>"
    )


def create_app(settings: PlatformSettings, *, evidently_url: str, deployments_topic: str = DEPLOYMENTS) -> Any:
    from starlette.applications import Starlette
    from starlette.requests import Request
    from starlette.responses import HTMLResponse, JSONResponse
    from starlette.routing import Route

    async def gather() -> tuple[dict[str, ModelView], str]:
        models = read_models(open_store(settings.resolved_artifact_store_uri))
        return models, await read_deployments(settings, models, topic=deployments_topic)

    async def page(request: Request) -> HTMLResponse:
        models, note = await gather()
        return HTMLResponse(render(models, evidently_url=evidently_url, note=note))

    async def api(request: Request) -> JSONResponse:
        models, note = await gather()
        return JSONResponse({"models": [asdict(view) for view in models.values()], "note": note})

    return Starlette(routes=[Route("/", page), Route("/api/models", api)])
