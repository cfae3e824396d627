"""The human-readable side of a generative evaluation (``evaluations/<model>/<version>/``):

* ``report.html``: Evidently's text evaluation (``TextEvals``) of the answers' descriptors, the
  candidate as *current* and the champion as *reference*: answer length and words, the reference's
  length, OOV share (words absent from the training split), PII found, exact match, ROUGE-L, chrF,
  tokens and time to first token; followed by the generated examples, each answer next to its
  reference (and the champion's answer), and the answers to the prompt-injection probes;
* ``report.json``: Evidently's JSON, plus ``summary`` (both models' metrics and the paired
  comparisons), ``examples`` and ``probes``, the same as the HTML shows;
* ``predictions.parquet``: every test conversation with both models' answers and scores;
* ``decision.json``: the policy applied and the decision.
"""

from __future__ import annotations

import html
import io
import json
import tempfile
from pathlib import Path
from typing import Any

import pandas as pd

from llmops_evaluation.adapters.workspace import add_evaluation
from llmops_evaluation.domain.generation import GenerativeTestSet
from llmops_evaluation.domain.generative_evaluation import GenerativeReport, GenerativeVerdict
from llmops_models import evaluation_path
from llmops_storage import ArtifactStore
from llmops_storage.evidently_workspace import ReportWorkspace

DESCRIPTOR_COLUMNS = (
    "answer_length",
    "answer_words",
    "reference_length",
    "oov_share",
    "pii_found",
    "exact_match",
    "rouge_l",
    "chrf",
    "output_tokens",
    "ttft_ms",
)
MAX_EXAMPLES_SHOWN = 200


def _frame(test_set: GenerativeTestSet, report: GenerativeReport) -> pd.DataFrame:
    frame = pd.DataFrame(
        {
            "record_id": [e.record_id for e in test_set.examples],
            "prompt": [e.last_user_turn for e in test_set.examples],
            "reference": [e.reference for e in test_set.examples],
            "answer": [a.text for a in report.answers],
            "oov_share": [s.oov_share for s in report.scores],
            "pii_found": [s.pii_found for s in report.scores],
            "pii_leaked": [",".join(s.pii_leaked) for s in report.scores],
            "exact_match": [float(s.exact_match) for s in report.scores],
            "rouge_l": [s.rouge_l for s in report.scores],
            "chrf": [s.chrf for s in report.scores],
            "format_valid": [s.format_valid for s in report.scores],
            "banned": [",".join(s.banned) for s in report.scores],
            "output_tokens": [a.output_tokens for a in report.answers],
            "ttft_ms": [a.ttft_ms for a in report.answers],
            "tokens_per_s": [a.tokens_per_s for a in report.answers],
        }
    )
    for name, values in test_set.slices.items():
        frame[name] = values
    return frame


def _evidently(current: pd.DataFrame, reference: pd.DataFrame | None) -> Any:
    from evidently import DataDefinition, Dataset, Report
    from evidently.descriptors import TextLength, WordCount
    from evidently.presets import TextEvals

    numerical = [c for c in DESCRIPTOR_COLUMNS if c not in ("answer_length", "answer_words", "reference_length")]
    definition = DataDefinition(text_columns=["answer", "reference"], numerical_columns=numerical)

    def dataset(frame: pd.DataFrame) -> Any:
        return Dataset.from_pandas(
            frame[["answer", "reference", *numerical]].astype({"answer": str, "reference": str}),
            data_definition=definition,
            descriptors=[
                TextLength("answer", alias="answer_length"),
                WordCount("answer", alias="answer_words"),
                TextLength("reference", alias="reference_length"),
            ],
        )

    return Report([TextEvals(columns=list(DESCRIPTOR_COLUMNS))]).run(
        dataset(current), dataset(reference) if reference is not None else None
    )


def _examples(current: pd.DataFrame, reference: pd.DataFrame | None) -> list[dict[str, Any]]:
    rows = []
    for i, row in enumerate(current.head(MAX_EXAMPLES_SHOWN).to_dict("records")):
        item = {
            "record_id": row["record_id"],
            "prompt": row["prompt"],
            "reference": row["reference"],
            "answer": row["answer"],
            "exact_match": bool(row["exact_match"]),
            "rouge_l": round(float(row["rouge_l"]), 4),
            "pii_leaked": row["pii_leaked"],
        }
        if reference is not None:
            item["champion_answer"] = reference["answer"].iloc[i]
        rows.append(item)
    return rows


def _preference_rows(verdict: GenerativeVerdict) -> list[dict[str, Any]]:
    """One row per shown held-out preference pair: both models' answers, their ROUGE-L to the
    chosen answer, the outcome and the log-probability margins."""
    if verdict.preferences is None:
        return []
    rows = []
    for result in verdict.preferences.results:
        row: dict[str, Any] = {
            "pair_id": result.pair_id,
            "prompt": result.prompt,
            "chosen": result.chosen,
            "rejected": result.rejected,
            "candidate_answer": result.candidate_answer,
            "candidate_rouge_l": round(result.candidate_rouge_l, 4),
            "candidate_logp_margin": round(result.candidate_logp_margin, 3),
        }
        if result.champion_answer is not None:
            row.update(
                champion_answer=result.champion_answer,
                champion_rouge_l=round(result.champion_rouge_l or 0.0, 4),
                champion_logp_margin=round(result.champion_logp_margin or 0.0, 3),
                outcome=result.outcome.value if result.outcome else None,
            )
        rows.append(row)
    return rows


def _preference_heading(verdict: GenerativeVerdict) -> str:
    p = verdict.preferences
    if p is None:
        return "Held-out preference pairs: none in the test split"

    def share(value: float | None) -> str:
        return "n/a" if value is None else f"{value:.3f}"

    against = (
        f"win rate against the champion {share(p.win_rate)} ({p.wins} won, {p.ties} tied, {p.losses} lost); "
        if p.win_rate is not None
        else ""
    )
    return (
        f"Held-out preference pairs ({p.pairs}): {against}preference accuracy (log p(chosen) > log p(rejected)) "
        f"candidate {share(p.candidate_preference_accuracy)}, champion {share(p.champion_preference_accuracy)}"
    )


def _html_section(
    title: str,
    examples: list[dict[str, Any]],
    probes: list[dict[str, Any]],
    preference_heading: str = "",
    preferences: list[dict[str, Any]] | None = None,
) -> str:
    def table(rows: list[dict[str, Any]]) -> str:
        if not rows:
            return "<p>none</p>"
        header = "".join(f"<th>{html.escape(str(k))}</th>" for k in rows[0])
        body = "".join(
            "<tr>" + "".join(f"<td>{html.escape(str(v))}</td>" for v in row.values()) + "</tr>" for row in rows
        )
        return f'<table border="1" cellpadding="4" style="border-collapse:collapse"><tr>{header}</tr>{body}</table>'

    return (
        f'<section id="generated-examples" style="font-family:sans-serif;margin:2em">'
        f"<h2>{html.escape(title)}</h2>{table(examples)}"
        f'<h2 id="preference-pairs">{html.escape(preference_heading)}</h2>{table(preferences or [])}'
        f"<h2>Prompt-injection probes</h2>{table(probes)}</section>"
    )


def write_generative_report(
    store: ArtifactStore,
    *,
    model_name: str,
    version: int,
    test_set: GenerativeTestSet,
    verdict: GenerativeVerdict,
    decision_record: dict[str, object],
    workspace: ReportWorkspace | None = None,
) -> tuple[str, str]:
    """Write report.html/.json, predictions.parquet and decision.json (and the Evidently snapshot
    into ``workspace``); returns the HTML and JSON URIs."""
    current = _frame(test_set, verdict.candidate)
    reference = _frame(test_set, verdict.champion) if verdict.champion is not None else None
    snapshot = _evidently(current, reference)
    examples = _examples(current, reference)
    probes = [
        {"probe": p.probe, "answer": p.answer, "leaked": p.leaked, "shared_chars": p.shared_chars}
        for p in verdict.candidate.probes
    ]
    summary = {
        "candidate": verdict.candidate.metrics.summary(),
        "champion": verdict.champion.metrics.summary() if verdict.champion else None,
        "exact_match_comparison": verdict.exact_match_comparison.model_dump(mode="json")
        if verdict.exact_match_comparison
        else None,
        "rouge_l_comparison": verdict.rouge_l_comparison.model_dump(mode="json")
        if verdict.rouge_l_comparison
        else None,
        "preferences": verdict.preferences.summary() if verdict.preferences else None,
        "system_prompt_probed": verdict.system_prompt,
        "decision": verdict.decision.value,
        "reasons": [r.model_dump(mode="json") for r in verdict.reasons],
    }
    base = evaluation_path(model_name, version)
    with tempfile.TemporaryDirectory() as staging:
        html_path, json_path = Path(staging) / "report.html", Path(staging) / "report.json"
        snapshot.save_html(str(html_path))
        snapshot.save_json(str(json_path))
        title = f"Generated answers of {model_name} version {version} next to the references"
        page = html_path.read_text(encoding="utf-8")
        preference_rows = _preference_rows(verdict)
        section = _html_section(title, examples, probes, _preference_heading(verdict), preference_rows)
        page = page.replace("</body>", section + "</body>", 1) if "</body>" in page else page + section
        document = json.loads(json_path.read_text(encoding="utf-8"))
        document.update(summary=summary, examples=examples, probes=probes, preference_pairs=preference_rows)
        html_uri = store.write_bytes(f"{base}/report.html", page.encode())
        json_uri = store.write_bytes(f"{base}/report.json", json.dumps(document, default=str).encode())
    if workspace is not None:
        add_evaluation(
            workspace,
            model_name=model_name,
            version=version,
            snapshot=snapshot,
            decision=verdict.decision.value,
            html_uri=html_uri,
            kind="causal_lm",
        )
    predictions = current.rename(
        columns={
            c: f"candidate_{c}"
            for c in current.columns
            if c not in ("record_id", "prompt", "reference", *test_set.slices)
        }
    )
    if reference is not None:
        for column in ("answer", "exact_match", "rouge_l", "chrf"):
            predictions[f"champion_{column}"] = reference[column]
    buffer = io.BytesIO()
    predictions.astype({"candidate_format_valid": "object"}).to_parquet(buffer, index=False)
    store.write_bytes(f"{base}/predictions.parquet", buffer.getvalue())
    store.write_bytes(f"{base}/decision.json", json.dumps(decision_record, indent=2, default=str).encode())
    return html_uri, json_uri
