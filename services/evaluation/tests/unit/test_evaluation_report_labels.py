"""The evaluation's Evidently report when targets and predictions hold only two labels: Evidently
reads that as a binary task whose positive class defaults to 1, which named labels do not have (a
KeyError that failed every evaluation of a tiny model in the end-to-end loop)."""

from __future__ import annotations

from typing import Any

import pandas as pd

from llmops_evaluation.adapters.report import classification_report


def _frame(targets: list[str], predictions: list[str]) -> pd.DataFrame:
    return pd.DataFrame({"target": targets, "prediction": predictions})


def _accuracy(snapshot: Any) -> float:
    values = [m["value"] for m in snapshot.dict()["metrics"] if m["metric_name"].startswith("Accuracy(")]
    assert values, "the report has no accuracy metric"
    return float(values[0])


def test_two_named_labels_make_a_report() -> None:
    current = _frame(["card_arrival", "lost_card", "lost_card", "card_arrival"], ["card_arrival"] * 4)
    assert _accuracy(classification_report(current, None)) == 0.5


def test_two_labels_against_a_champion_with_other_labels_report_the_candidate_alone() -> None:
    current = _frame(["card_arrival", "lost_card"], ["card_arrival", "card_arrival"])
    champion = _frame(["card_arrival", "lost_card"], ["top_up", "lost_card"])
    assert _accuracy(classification_report(current, champion)) == 0.5


def test_many_labels_stay_multiclass_with_the_champion() -> None:
    current = _frame(["a", "b", "c", "a"], ["a", "b", "c", "b"])
    champion = _frame(["a", "b", "c", "a"], ["a", "a", "c", "a"])
    assert _accuracy(classification_report(current, champion)) == 0.75
