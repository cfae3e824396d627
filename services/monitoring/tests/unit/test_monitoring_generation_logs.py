"""The gateway's generation logs (``inference.logged`` with ``generation`` set) open windows of their
own, apart from classifications'; ratings and corrected answers join the generation they are about,
whichever arrives first; the prompt embedded while the window fills is the last user turn."""

from __future__ import annotations

import json
from collections.abc import Sequence
from datetime import UTC, datetime
from pathlib import Path

import numpy as np
import pandas as pd

from llmops_config import PlatformSettings
from llmops_events import Envelope
from llmops_events.v1 import ChatTurn, FeedbackSubmitted, Generation, InferenceLogged
from llmops_messaging import EventPublisher, ProcessedEvents
from llmops_models import manifest_path
from llmops_models.snapshots import write_snapshot
from llmops_monitoring.adapters.generation_reference import GenerationReferences
from llmops_monitoring.adapters.metrics import MonitoringMetrics
from llmops_monitoring.adapters.policy_state import PolicyStateStore
from llmops_monitoring.domain.generation import GenerationObservation
from llmops_monitoring.domain.policy import DriftPolicy
from llmops_monitoring.domain.windows import WindowKey
from llmops_monitoring.handlers import MonitoringService
from llmops_monitoring.settings import MonitoringSettings
from llmops_serving import ChampionTable
from llmops_storage import ArtifactStore


class CountingEncoder:
    def __init__(self) -> None:
        self.texts: list[str] = []

    def encode(self, texts: Sequence[str]) -> np.ndarray:
        self.texts.extend(texts)
        return np.zeros((len(texts), 4), dtype=np.float32)


def _logged(request_id: str, *, generation: Generation | None) -> Envelope[InferenceLogged]:
    data = InferenceLogged(
        request_id=request_id,
        model_name="support-bot" if generation else "banking",
        model_version=1,
        text="my card has not arrived",
        label="" if generation else "card_arrival",
        confidence=0.0 if generation else 0.9,
        latency_ms=5.0,
        served_at=datetime.now(UTC),
        generation=generation,
    )
    return Envelope.wrap(data, source="/test")


async def test_generation_logs_open_their_own_window_and_feedback_joins_them(tmp_path: Path) -> None:
    processed = ProcessedEvents(tmp_path / "monitoring.db", consumer="monitoring")
    state = PolicyStateStore(processed.connection)
    encoder = CountingEncoder()
    service = MonitoringService(
        settings=MonitoringSettings(
            platform=PlatformSettings(var_dir=tmp_path / "var"),
            window_size=60,
            window_seconds=None,
            embedding_sample_size=20,
            embedding_batch_size=1,
            metrics_port=0,
        ),
        policy=DriftPolicy(),
        store=ArtifactStore(str(tmp_path / "artifacts")),
        references=None,  # type: ignore[arg-type]
        encoder=encoder,
        publisher=EventPublisher(PlatformSettings(), service="monitoring"),
        policy_state=state,
        champions=ChampionTable(state._connection),
        metrics=MonitoringMetrics(),
    )
    generation = Generation(
        messages=[
            ChatTurn(role="system", content="Answer with the intent name."),
            ChatTurn(role="user", content="my card has not arrived"),
        ],
        output="Cards arrive within 5 working days.",
        finish_reason="stop",
        prompt_tokens=20,
        completion_tokens=9,
        time_to_first_token_ms=120.0,
        tokens_per_s=25.0,
    )
    # Feedback for gen-2 comes before its generation (the topics are not ordered).
    await service.on_feedback(Envelope.wrap(FeedbackSubmitted(request_id="gen-2", rating=1), source="/test"))
    await service.on_inference(_logged("gen-1", generation=generation))
    await service.on_inference(_logged("gen-2", generation=generation))
    await service.on_feedback(
        Envelope.wrap(FeedbackSubmitted(request_id="gen-1", corrected_answer="card_arrival"), source="/test")
    )
    assert service._book.open_windows() == []
    [window] = service._generations.open_windows()
    assert window.key.model_name == "support-bot" and window.size == 2
    first, second = window.observations
    assert first.prompt == "my card has not arrived" and first.corrected_answer == "card_arrival"
    assert second.rating == 1 and second.corrected_answer is None
    assert first.time_to_first_token_ms == 120.0 and first.tokens_per_s == 25.0
    assert encoder.texts == ["my card has not arrived"]  # the window's first text: the embedding sample's

    await service.on_inference(_logged("cls-1", generation=None))
    assert [w.key.model_name for w in service._book.open_windows()] == ["banking"]
    assert [w.key.model_name for w in service._generations.open_windows()] == ["support-bot"]


async def test_a_generation_report_is_built_from_the_versions_instructions_snapshot(tmp_path: Path) -> None:
    """The reference comes from the snapshot the version's lineage names (its held-out split, its
    declared format); the report's files hold the generation signals and the decision under the
    generation rules."""
    store = ArtifactStore(str(tmp_path / "artifacts"))
    intents = ["card_arrival", "lost_or_stolen_card"]
    texts = [f"my card {i} has not arrived" if i % 2 else f"i lost card {i}" for i in range(40)]
    labels = [intents[i % 2 == 0] for i in range(40)]
    frame = pd.DataFrame(
        {
            "text": texts,
            "label": labels,
            "split": ["train"] * 20 + ["validation"] * 20,
            "messages_json": [
                json.dumps([{"role": "user", "content": t}, {"role": "assistant", "content": a}])
                for t, a in zip(texts, labels, strict=True)
            ],
            "output_format_json": json.dumps({"labels": intents, "json_schema": None}),
        }
    )
    write_snapshot(store, frame, dataset_id="instructions-1", content="instructions")
    store.write_json(manifest_path("bot", 1), {"lineage": {"dataset_id": "instructions-1"}})
    processed = ProcessedEvents(tmp_path / "monitoring.db", consumer="monitoring")
    state = PolicyStateStore(processed.connection)
    settings = MonitoringSettings(
        platform=PlatformSettings(var_dir=tmp_path / "var"), window_size=40, embedding_sample_size=20, metrics_port=0
    )
    encoder = CountingEncoder()
    service = MonitoringService(
        settings=settings,
        policy=DriftPolicy.model_validate({"consecutive_windows": 1, "generation": {"min_window_size": 20}}),
        store=store,
        references=None,  # type: ignore[arg-type]
        encoder=encoder,
        publisher=EventPublisher(PlatformSettings(), service="monitoring"),
        policy_state=state,
        champions=ChampionTable(state._connection),
        metrics=MonitoringMetrics(),
        generation_references=GenerationReferences(
            store, encoder=encoder, cache_dir=settings.reference_cache_dir, size=20, seed=1
        ),
        find_pii=lambda text: 0,
    )
    now = datetime.now(UTC)
    window = [
        GenerationObservation(
            f"r{i}", texts[i], "I'm sorry, but I can't" if i < 10 else labels[i], "stop", 5, 2, 90.0, 30.0, now
        )
        for i in range(40)
    ]
    report = service.build_generation_report(WindowKey("bot", 1), window)
    summary = report.summary
    assert summary["kind"] == "generation" and summary["reference"]["size"] == 20  # the validation split
    assert summary["reference"]["output_format"] == {"labels": intents, "json_schema": None}
    assert summary["signals"]["refusal_share"]["score"] == 0.25 and summary["signals"]["refusal_share"]["breached"]
    assert report.decision.action.value == "request" and report.decision.kind == "quality"
    assert report.policy_state is not None and report.policy_state.requests == 1
    written = json.loads((Path(report.html_uri).parent / "summary.json").read_text())
    assert set(written["signals"]) >= {"prompt_embedding", "prompt_oov_share", "refusal_share", "ttft_p95_ms"}
    assert "refusal_share" in Path(report.html_uri).read_text()
    # Built once: the second report of the version reads the cached reference.
    assert (settings.reference_cache_dir / "generations" / "bot" / "1" / "reference.json").exists()
