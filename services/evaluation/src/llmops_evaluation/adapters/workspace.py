"""An evaluation's Evidently snapshot into the Evidently workspace (``llmops ui``): in the model's
project under the tag ``evaluation``, one snapshot per evaluated version (evaluating a version again
replaces it, as its files in the artifact store are replaced), with a dashboard tab plotting the
candidates' scores version after version."""

from __future__ import annotations

import logging
from typing import Any

from llmops_storage.evidently_workspace import ReportWorkspace, Series, TrendPanel

logger = logging.getLogger(__name__)

TAB = "Evaluation"
TAG = "evaluation"

PANELS: tuple[TrendPanel, ...] = (
    TrendPanel(
        "Candidates on the test set (classifiers)",
        TAG,
        (Series("accuracy", "Accuracy"), Series("F1", "F1Score")),
        "Each point is one evaluated version (Evidently's classification preset on the held-out split).",
    ),
    TrendPanel(
        "Candidates on the test conversations (generative models)",
        TAG,
        tuple(Series(column, "MeanValue", {"column": column}) for column in ("exact_match", "rouge_l", "chrf")),
        "Mean exact match, ROUGE-L and chrF of each evaluated version's answers.",
    ),
)


def add_evaluation(
    workspace: ReportWorkspace,
    *,
    model_name: str,
    version: int,
    snapshot: Any,
    decision: str,
    html_uri: str,
    kind: str,
) -> None:
    """Add the evaluation's snapshot; a failure is logged, never raised (the report files are written)."""
    try:
        workspace.add(
            model_name=model_name,
            key=f"evaluation/v{version}",
            snapshot=snapshot,
            name=f"evaluation of v{version}: {decision}",
            tags=[TAG, f"v{version}", kind, decision],
            metadata={"model_version": str(version), "decision": decision, "report_uri": html_uri, "kind": kind},
            tab=TAB,
            panels=PANELS,
        )
    except Exception:  # the workspace is a view: losing one snapshot must not fail the evaluation
        logger.warning(
            "could not add the evaluation to the Evidently workspace",
            extra={"workspace": str(workspace.path), "model": model_name, "version": version},
            exc_info=True,
        )
