"""The human-readable side of an evaluation: an Evidently classification report (HTML + JSON)
comparing candidate and champion, and every prediction, so a person can inspect the errors."""

from __future__ import annotations

import json
import tempfile
from pathlib import Path
from typing import Any

import pandas as pd

from llmops_evaluation.adapters.workspace import add_evaluation
from llmops_evaluation.domain.evaluation import Verdict
from llmops_evaluation.domain.ports import TestSet
from llmops_models import evaluation_path
from llmops_storage import ArtifactStore
from llmops_storage.evidently_workspace import ReportWorkspace


def _frame(test_set: TestSet, predictions: list[str], confidences: list[float]) -> pd.DataFrame:
    frame = pd.DataFrame(
        {"text": test_set.texts, "target": test_set.labels, "prediction": predictions, "confidence": confidences}
    )
    for name, values in test_set.slices.items():
        frame[name] = values
    return frame


def _labels(frame: pd.DataFrame) -> list[str]:
    return sorted({str(value) for column in ("target", "prediction") for value in frame[column]})


def classification_report(current: pd.DataFrame, reference: pd.DataFrame | None) -> Any:
    """Evidently's classification report of ``current`` (columns ``target``, ``prediction``) against
    ``reference``. Evidently reads a dataset whose targets and predictions hold exactly two labels
    as a binary task whose positive class defaults to ``1`` (a ``KeyError`` for names such as
    ``card_arrival``, as a tiny or early model produces): name the positive class then, and leave
    out a reference whose labels differ, which that binary reading could not score."""
    from evidently import BinaryClassification, DataDefinition, Dataset, MulticlassClassification, Report
    from evidently.presets import ClassificationPreset

    labels = _labels(current)
    task: BinaryClassification | MulticlassClassification
    if len(labels) == 2:
        task = BinaryClassification(target="target", prediction_labels="prediction", pos_label=labels[-1])
        if reference is not None and _labels(reference) != labels:
            reference = None
    else:
        task = MulticlassClassification(target="target", prediction_labels="prediction")
        if reference is not None and len(_labels(reference)) == 2:
            reference = None
    definition = DataDefinition(classification=[task], categorical_columns=["target", "prediction"])
    columns = ["target", "prediction"]
    return Report([ClassificationPreset()]).run(
        Dataset.from_pandas(current[columns], data_definition=definition),
        None if reference is None else Dataset.from_pandas(reference[columns], data_definition=definition),
    )


def write_report(
    store: ArtifactStore,
    *,
    model_name: str,
    version: int,
    test_set: TestSet,
    verdict: Verdict,
    decision_record: dict[str, object],
    workspace: ReportWorkspace | None = None,
) -> tuple[str, str]:
    """Write report.html/.json, predictions.parquet and decision.json (and the Evidently snapshot
    into ``workspace``); returns the HTML and JSON URIs."""
    current = _frame(test_set, verdict.candidate.predictions, verdict.candidate.confidences)
    reference = None
    if verdict.champion is not None:
        reference = _frame(test_set, verdict.champion.predictions, verdict.champion.confidences)
    snapshot = classification_report(current, reference)
    base = evaluation_path(model_name, version)
    with tempfile.TemporaryDirectory() as staging:
        html, report_json = Path(staging) / "report.html", Path(staging) / "report.json"
        snapshot.save_html(str(html))
        snapshot.save_json(str(report_json))
        html_uri = store.write_bytes(f"{base}/report.html", html.read_bytes())
        json_uri = store.write_bytes(f"{base}/report.json", report_json.read_bytes())
    if workspace is not None:
        add_evaluation(
            workspace,
            model_name=model_name,
            version=version,
            snapshot=snapshot,
            decision=verdict.decision.value,
            html_uri=html_uri,
            kind="classification",
        )
    predictions = current.rename(columns={"prediction": "candidate_prediction", "confidence": "candidate_confidence"})
    if verdict.champion is not None:
        predictions["champion_prediction"] = verdict.champion.predictions
        predictions["champion_confidence"] = verdict.champion.confidences
    buffer = pd.io.common.BytesIO()
    predictions.to_parquet(buffer, index=False)
    store.write_bytes(f"{base}/predictions.parquet", buffer.getvalue())
    store.write_bytes(f"{base}/decision.json", json.dumps(decision_record, indent=2, default=str).encode())
    return html_uri, json_uri
