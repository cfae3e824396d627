"""The gateway's generation logs (``inference.logged`` with ``generation`` set) open windows of their
own, apart from classifications'; ratings and corrected answers join the generation they are about,
whichever arrives first; the prompt embedded while the window fills is the last user turn."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import UTC, datetime
from pathlib import Path

import numpy as np

from llmops_config import PlatformSettings
from llmops_events import Envelope
from llmops_events.v1 import ChatTurn, FeedbackSubmitted, Generation, InferenceLogged
from llmops_messaging import EventPublisher, ProcessedEvents
from llmops_monitoring.adapters.metrics import MonitoringMetrics
from llmops_monitoring.adapters.policy_state import PolicyStateStore
from llmops_monitoring.domain.policy import DriftPolicy
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
