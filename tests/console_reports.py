"""Reports for the console's tests, written by the services' own report code on small frames, in
seconds and without a model: a monitoring window (the service's analysis on a hashed bag-of-words
encoder standing in for MiniLM, then its report files and workspace snapshots) and an evaluation
(the service's scoring and gate on a lookup-table classifier, then its report files and snapshot)."""

from __future__ import annotations

import zlib
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path

import numpy as np
import pandas as pd

from llmops_storage import ArtifactStore
from llmops_storage.evidently_workspace import ReportWorkspace

BANKING = [
    "where is my new card",
    "my card has not arrived yet",
    "what exchange rate do you use",
    "i lost my card yesterday",
    "how do i top up my account",
    "why was my transfer declined",
    "can i change my pin",
    "the atm kept my card",
]
LABELS = ["card_arrival", "card_arrival", "exchange_rate", "lost_card", "top_up", "transfer", "pin", "atm"]
SHIFTED = ["book me a table for two tonight", "what is the weather in paris", "play some jazz please"]


class HashedWords:
    """Sentence vectors from hashed words: similar texts get similar vectors, like an encoder."""

    def encode(self, texts: Sequence[str]) -> np.ndarray:
        vectors = np.zeros((len(texts), 64), dtype=np.float32)
        for row, text in enumerate(texts):
            for word in text.lower().split():
                vectors[row, zlib.crc32(word.encode()) % 64] += 1.0
        return vectors / np.maximum(np.linalg.norm(vectors, axis=1, keepdims=True), 1e-9)


class LookupClassifier:
    """The evaluation's ``Scorer`` as a table: right on every text but the ones it is told to miss."""

    def __init__(self, wrong: int) -> None:
        self.wrong = wrong

    def predict(self, texts: Sequence[str]) -> tuple[list[str], list[float]]:
        labels = [LABELS[BANKING.index(t)] if t in BANKING else "card_arrival" for t in texts]
        labels = ["atm" if i < self.wrong else label for i, label in enumerate(labels)]
        return labels, [0.9] * len(texts)

    def latencies_ms(self, texts: Sequence[str]) -> list[float]:
        return [1.0] * len(texts)


@dataclass(frozen=True)
class ConsoleReports:
    model: str
    window_report_ids: list[str]
    evaluated_versions: list[int]


def write_console_reports(workspace_dir: Path, store_dir: Path, *, model: str = "banking-intents") -> ConsoleReports:
    """Two monitoring windows (one in domain, one shifted, both with feedback labels) and two
    evaluated versions of ``model``, into the artifact store at ``store_dir`` and the Evidently
    workspace at ``workspace_dir``."""
    from llmops_evaluation.adapters.report import write_report as write_evaluation_report
    from llmops_evaluation.domain.evaluation import evaluate
    from llmops_evaluation.domain.policy import Policy
    from llmops_evaluation.domain.ports import TestSet
    from llmops_monitoring.adapters.report_store import write_report as write_window_report
    from llmops_monitoring.adapters.workspace import add_window
    from llmops_monitoring.domain.analysis import analyse, vocabulary_of
    from llmops_monitoring.domain.policy import DriftPolicy
    from llmops_monitoring.domain.ports import Reference
    from llmops_monitoring.domain.windows import Observation

    store = ArtifactStore(str(store_dir))
    workspace = ReportWorkspace(workspace_dir)
    rng = np.random.default_rng(0)
    index = rng.integers(0, len(BANKING), size=300)
    texts = [BANKING[i] for i in index]
    frame = pd.DataFrame(
        {
            "text": texts,
            "label": [LABELS[i] for i in index],
            "prediction": [LABELS[i] for i in index],
            "confidence": rng.uniform(0.7, 1.0, size=len(index)),
        }
    )
    reference = Reference(model, 1, "snapshot-1", frame, HashedWords().encode(texts), vocabulary_of(texts))

    report_ids = []
    start = datetime(2026, 12, 1, 6, 0, tzinfo=UTC)
    for number, (pool, confidence) in enumerate([(BANKING, 0.85), (SHIFTED, 0.45)], start=1):
        served_at = start + timedelta(minutes=10 * number)
        observations = [
            Observation(
                f"r{number}-{i}",
                pool[i % len(pool)],
                LABELS[i % len(LABELS)],
                float(rng.uniform(confidence - 0.1, confidence + 0.1)),
                served_at,
                true_label=LABELS[i % len(LABELS)] if pool is BANKING or i % 2 else "card_arrival",
            )
            for i in range(60)
        ]
        analysis = analyse(observations, reference, encoder=HashedWords(), thresholds={}, embedding_sample_size=60)
        report_id = f"{served_at:%Y%m%dT%H%M%SZ}-window{number}"
        summary = {
            "report_id": report_id,
            "model_name": model,
            "model_version": 1,
            "kind": "classification",
            "window": {"size": len(observations), "start": served_at.isoformat(), "end": served_at.isoformat()},
            "reference": {"dataset_id": "snapshot-1", "size": reference.size, "model_version": 1},
            "embedding_sample": analysis.embedding_sample,
            "signals": {},
            "quality": analysis.quality,
            "decision": {"action": "none" if number == 1 else "request", "kind": None, "explanation": "test"},
            "policy": DriftPolicy().model_dump(),
        }
        html_uri, _ = write_window_report(
            store, summary=summary, drift_snapshot=analysis.drift_snapshot, quality_snapshot=analysis.quality_snapshot
        )
        add_window(
            workspace,
            summary=summary,
            drift_snapshot=analysis.drift_snapshot,
            quality_snapshot=analysis.quality_snapshot,
            html_uri=html_uri,
        )
        report_ids.append(report_id)

    test_set = TestSet(texts=BANKING * 4, labels=LABELS * 4)
    versions = [1, 2]
    for version in versions:
        verdict = evaluate(
            candidate=LookupClassifier(wrong=4 if version == 1 else 1),
            champion=None,
            test_set=test_set,
            policy=Policy(min_examples=5),
            latency_examples=4,
            seed=0,
        )
        write_evaluation_report(
            store,
            model_name=model,
            version=version,
            test_set=test_set,
            verdict=verdict,
            decision_record={"decision": verdict.decision.value},
            workspace=workspace,
        )
    return ConsoleReports(model=model, window_report_ids=report_ids, evaluated_versions=versions)
