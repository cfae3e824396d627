"""A window's analysis and report without a model: Evidently's metrics on small frames, a hashed
bag-of-words encoder standing in for MiniLM, and the report files it writes."""

from __future__ import annotations

import json
import zlib
from collections.abc import Sequence
from datetime import UTC, datetime
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from llmops_monitoring.adapters.report_store import write_report
from llmops_monitoring.domain.analysis import analyse, vocabulary_of
from llmops_monitoring.domain.policy import DriftPolicy
from llmops_monitoring.domain.ports import Reference
from llmops_monitoring.domain.windows import Observation
from llmops_storage import ArtifactStore
from llmops_workloads import out_of_domain_texts

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


class HashedWords:
    """Sentence vectors from hashed words: similar texts get similar vectors, like an encoder."""

    def encode(self, texts: Sequence[str]) -> np.ndarray:
        vectors = np.zeros((len(texts), 64), dtype=np.float32)
        for row, text in enumerate(texts):
            for word in text.lower().split():
                vectors[row, zlib.crc32(word.encode()) % 64] += 1.0
        return vectors / np.maximum(np.linalg.norm(vectors, axis=1, keepdims=True), 1e-9)


def _reference() -> Reference:
    rng = np.random.default_rng(0)
    index = rng.integers(0, len(BANKING), size=400)
    texts = [f"{BANKING[i]} please" if rng.random() < 0.5 else BANKING[i] for i in index]
    frame = pd.DataFrame(
        {
            "text": texts,
            "label": [LABELS[i] for i in index],
            "prediction": [LABELS[i] for i in index],
            "confidence": rng.uniform(0.7, 1.0, size=len(index)),
        }
    )
    return Reference("m", 1, "d", frame, HashedWords().encode(texts), vocabulary_of(texts))


def _window(texts: list[str], *, confidence: float, labelled: int = 0) -> list[Observation]:
    now = datetime.now(UTC)
    rng = np.random.default_rng(1)
    return [
        Observation(
            f"r{i}",
            text,
            LABELS[BANKING.index(text)] if text in BANKING else "card_arrival",
            float(rng.uniform(confidence - 0.15, confidence + 0.15)),
            now,
            true_label=(LABELS[BANKING.index(text)] if text in BANKING else "unknown") if i < labelled else None,
        )
        for i, text in enumerate(texts)
    ]


@pytest.fixture(scope="module")
def reference() -> Reference:
    return _reference()


def test_in_domain_window_is_close_and_a_foreign_one_is_far(reference: Reference) -> None:
    policy = DriftPolicy()
    rng = np.random.default_rng(2)
    calm_texts = [BANKING[i] for i in rng.integers(0, len(BANKING), size=200)]
    calm = analyse(
        _window(calm_texts, confidence=0.85, labelled=60),
        reference,
        encoder=HashedWords(),
        thresholds=policy.drift_thresholds,
        embedding_sample_size=100,
    )
    foreign = analyse(
        _window(out_of_domain_texts(200, seed=3), confidence=0.3),
        reference,
        encoder=HashedWords(),
        thresholds=policy.drift_thresholds,
        embedding_sample_size=100,
    )
    assert set(calm.signals) >= {"embedding", "prediction", "confidence", "length", "oov_share", "accuracy_drop"}
    assert calm.embedding_sample == 100
    assert calm.labelled == 60 and calm.quality["accuracy"] == 1.0 and calm.signals["accuracy_drop"] <= 0.0
    assert calm.signals["oov_share"] < 0.5 < foreign.signals["oov_share"]
    assert calm.signals["confidence"] < 0.35 < foreign.signals["confidence"]
    assert calm.signals["embedding"] < foreign.signals["embedding"]
    assert foreign.quality_snapshot is None and "accuracy_drop" not in foreign.signals


def test_two_labels_only_still_give_quality_figures(reference: Reference) -> None:
    # Evidently 0.7 treats two labels as a binary task and fails without a positive label;
    # the figures the policy decides on do not depend on its report.
    texts = ["where is my new card", "i lost my card yesterday"] * 20
    analysis = analyse(
        _window(texts, confidence=0.85, labelled=40),
        reference,
        encoder=HashedWords(),
        thresholds={},
        embedding_sample_size=100,
    )
    assert analysis.quality["labelled"] == 40 and analysis.quality["accuracy"] == 1.0


def test_the_report_files_explain_the_decision(reference: Reference, tmp_path: Path) -> None:
    analysis = analyse(
        _window([BANKING[i % len(BANKING)] for i in range(50)], confidence=0.85, labelled=20),
        reference,
        encoder=HashedWords(),
        thresholds={},
        embedding_sample_size=100,
    )
    store = ArtifactStore(str(tmp_path))
    summary = {
        "report_id": "r-1",
        "model_name": "m",
        "model_version": 1,
        "window": {"size": 50, "start": "s", "end": "e", "labelled": 20, "late_labelled": 0},
        "reference": {"dataset_id": "d", "size": reference.size, "model_version": 1},
        "embedding_sample": analysis.embedding_sample,
        "signals": {"oov_share": {"score": 3.2, "threshold": 0.5, "decides": True, "breached": True}},
        "quality": analysis.quality,
        "decision": {"action": "request", "kind": "drift", "explanation": "breach (oov_share=3.200>0.5)"},
        "policy": DriftPolicy().model_dump(),
    }
    html_uri, json_uri = write_report(
        store, summary=summary, drift_snapshot=analysis.drift_snapshot, quality_snapshot=analysis.quality_snapshot
    )
    page = Path(html_uri).read_text()
    assert page.index("<body") < page.index("llmops-monitoring-summary") < page.index("</body>")
    assert "Decision: request" in page and "BREACH" in page and "oov_share" in page
    document = json.loads(Path(json_uri).read_text())
    assert document["summary"]["decision"]["action"] == "request"
    assert document["drift"]["metrics"] and document["quality"]["metrics"]
    assert json.loads((tmp_path / "reports/monitoring/m/r-1/summary.json").read_text())["signals"]["oov_share"]
    assert (tmp_path / "reports/monitoring/m/r-1/quality.html").exists()
