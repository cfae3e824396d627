"""Writing a window's report to the artifact store:
``reports/monitoring/<model>/<report_id>/{report.html, report.json, summary.json, quality.html}``.

``summary.json`` (and the header at the top of ``report.html``) hold the signals, the thresholds,
the policy and the decision, so a detection is explained by the report alone; ``report.json`` adds
Evidently's full results; ``report.html`` is Evidently's drift report under that header, and
``quality.html`` its classification report when feedback labels existed. A generation window's
report has the same files (no ``quality.html``): its Evidently part shows prompt and output drift
and the window's shares of refusals, format-invalid answers, PII and length-cut generations next
to the training answers'.
"""

from __future__ import annotations

import html
import json
import tempfile
from pathlib import Path
from typing import Any

from llmops_storage import ArtifactStore


def report_path(model_name: str, report_id: str) -> str:
    return f"reports/monitoring/{model_name}/{report_id}"


def _header(summary: dict[str, Any], quality_link: bool) -> str:
    decision = summary["decision"]
    rows = []
    for name, item in sorted(summary["signals"].items()):
        threshold = item.get("threshold")
        breached = item.get("breached")
        style = ' style="color:#b00020;font-weight:bold"' if breached else ""
        rows.append(
            f"<tr{style}><td>{html.escape(name)}</td><td>{item['score']:.4f}</td>"
            f"<td>{'' if threshold is None else f'{threshold:g}'}</td>"
            f"<td>{'yes' if item.get('decides') else 'report only'}</td><td>{'BREACH' if breached else ''}</td>"
            f"<td>{html.escape(item.get('meaning', ''))}</td></tr>"
        )
    quality = summary.get("quality") or {}
    quality_text = (
        ", ".join(f"{k} {v:.3f}" for k, v in quality.items()) if quality else "no feedback labels in this window"
    )
    window = summary["window"]
    reference = summary["reference"]
    reference_text = reference.get("description") or (
        f"{reference['size']} validation examples of snapshot {reference['dataset_id']}"
    )
    if summary.get("kind") == "generation":
        quality_text = (
            ", ".join(f"{k} {v:.3f}" for k, v in quality.items()) if quality else "no feedback in this window"
        )
        quality_text = f"feedback: {quality_text}"
    link = ' — <a href="quality.html">classification report</a>' if quality_link else ""
    return (
        '<div id="llmops-monitoring-summary" style="font-family:sans-serif;margin:16px;padding:12px;'
        'border:2px solid #444;border-radius:6px">'
        f"<h2>Monitoring report {html.escape(summary['report_id'])}: {html.escape(summary['model_name'])} "
        f"v{summary['model_version']} ({html.escape(summary.get('kind', 'classification'))})</h2>"
        f"<p><b>Decision: {html.escape(decision['action'])}</b>"
        f"{' (' + html.escape(str(decision['kind'])) + ')' if decision.get('kind') else ''} — "
        f"{html.escape(decision['explanation'])}</p>"
        f"<p>Window: {window['size']} events from {html.escape(window['start'])} to {html.escape(window['end'])}; "
        f"reference: {html.escape(reference_text)}; embedding sample {summary['embedding_sample']}.</p>"
        "<table border=1 cellpadding=4 style='border-collapse:collapse'>"
        "<tr><th>signal</th><th>score</th><th>threshold</th><th>decides</th><th></th><th>meaning</th></tr>"
        + "".join(rows)
        + f"</table><p>Quality: {html.escape(quality_text)}{link}</p>"
        f"<pre style='font-size:11px'>policy: {html.escape(json.dumps(summary['policy'], sort_keys=True))}</pre>"
        "</div>"
    )


def write_report(
    store: ArtifactStore,
    *,
    summary: dict[str, Any],
    drift_snapshot: Any,
    quality_snapshot: Any | None,
) -> tuple[str, str]:
    """Write the report files; returns the HTML and JSON URIs."""
    base = report_path(summary["model_name"], summary["report_id"])
    with tempfile.TemporaryDirectory(prefix="monitoring-report-") as staging:
        folder = Path(staging)
        drift_snapshot.save_html(str(folder / "drift.html"))
        page = (folder / "drift.html").read_text()
        header = _header(summary, quality_snapshot is not None)
        marker = page.find("<body")
        if marker >= 0:
            end = page.find(">", marker) + 1
            page = page[:end] + header + page[end:]
        else:
            page = header + page
        document: dict[str, Any] = {"summary": summary, "drift": drift_snapshot.dict(), "quality": None}
        if quality_snapshot is not None:
            quality_snapshot.save_html(str(folder / "quality.html"))
            store.write_bytes(f"{base}/quality.html", (folder / "quality.html").read_bytes())
            document["quality"] = quality_snapshot.dict()
        html_uri = store.write_bytes(f"{base}/report.html", page.encode())
        json_uri = store.write_bytes(f"{base}/report.json", json.dumps(document, default=_jsonable).encode())
        store.write_bytes(f"{base}/summary.json", json.dumps(summary, indent=2, default=_jsonable).encode())
    return html_uri, json_uri


def _jsonable(value: Any) -> Any:
    if hasattr(value, "item"):
        return value.item()  # numpy scalars
    if hasattr(value, "tolist"):
        return value.tolist()
    return str(value)
