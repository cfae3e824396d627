"""The platform page (``make ui``, beside Evidently's UI) reads the artifact store's layout: every
version with why it was trained and the gate's decision, the latest monitoring windows first; and
shows it escaped. (Who is live comes from the deployments topic: the browser test covers it.)"""

from __future__ import annotations

from pathlib import Path

from llmops_cli.console import WINDOWS_SHOWN, ModelView, read_models, render
from llmops_storage import ArtifactStore


def _store(tmp_path: Path) -> ArtifactStore:
    store = ArtifactStore(str(tmp_path))
    store.write_json(
        "models/banking/1/manifest.json",
        {"lineage": {"reason": "initial", "requested_by": "operator:alice", "dataset_id": "snap-1"}},
    )
    store.write_bytes("models/banking/1/_COMPLETE", b"")
    store.write_json(
        "models/banking/2/manifest.json",
        {"lineage": {"reason": "drift <breach>", "requested_by": "service:monitoring", "dataset_id": "snap-2"}},
    )
    store.write_bytes("models/banking/2/_COMPLETE", b"")
    store.write_json("evaluations/banking/1/decision.json", {"decision": "approved", "reasons": []})
    store.write_json(
        "evaluations/banking/2/decision.json",
        {"decision": "rejected", "reasons": [{"rule": "max_accuracy_drop", "message": "dropped 0.04"}]},
    )
    for minute in range(WINDOWS_SHOWN + 2):  # the latest (an even minute) requested retraining
        report_id = f"20261201T07{minute:02d}00Z-w{minute}"
        store.write_json(
            f"reports/monitoring/banking/{report_id}/summary.json",
            {
                "model_version": 2,
                "window": {"size": 100 + minute},
                "decision": {"action": "none" if minute % 2 else "request"},
                "signals": {"oov_share": {"breached": minute % 2 == 0}, "length": {"breached": False}},
            },
        )
    return store


def test_versions_carry_their_chain_and_gate_decision(tmp_path: Path) -> None:
    (view,) = read_models(_store(tmp_path)).values()
    assert view.name == "banking"
    assert [(v.version, v.reason, v.requested_by, v.dataset_id, v.decision) for v in view.versions] == [
        (1, "initial", "operator:alice", "snap-1", "approved"),
        (2, "drift <breach>", "service:monitoring", "snap-2", "rejected"),
    ]
    assert view.versions[1].decision_reasons == ["max_accuracy_drop"]


def test_the_latest_windows_come_first(tmp_path: Path) -> None:
    (view,) = read_models(_store(tmp_path)).values()
    assert len(view.windows) == WINDOWS_SHOWN
    assert view.windows[0].report_id == f"20261201T07{WINDOWS_SHOWN + 1:02d}00Z-w{WINDOWS_SHOWN + 1}"
    assert (view.windows[0].action, view.windows[0].breached, view.windows[0].size) == (
        "request",
        ["oov_share"],
        100 + WINDOWS_SHOWN + 1,
    )


def test_the_page_escapes_and_links_to_evidently(tmp_path: Path) -> None:
    models = read_models(_store(tmp_path))
    models["banking"].champion, models["banking"].canary, models["banking"].canary_share = 1, 2, 0.1
    models["banking"].phase = "canary"
    page = render(models, evidently_url="http://127.0.0.1:8085", note="")
    assert "champion v1, canary v2 at 10% (canary)" in page
    assert "drift &lt;breach&gt;" in page and "<breach>" not in page
    assert 'href="http://127.0.0.1:8085/projects/' in page


def test_an_empty_platform_says_what_to_run(tmp_path: Path) -> None:
    empty: dict[str, ModelView] = read_models(ArtifactStore(str(tmp_path)))
    page = render(empty, evidently_url="http://x", note="deployments unknown: broker did not answer")
    assert "make demo" in page and "deployments unknown" in page
