"""The gateway's generation logs (``inference.logged`` with ``generation`` set) and feedback that
carries only a corrected answer are skipped by monitoring until generations are monitored (issue
16): no window opens, nothing is embedded or reported, and a classification still opens one."""

from __future__ import annotations

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

    def encode(self, texts: list[str]) -> np.ndarray:
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


async def test_generation_logs_open_no_window_and_classifications_still_do(tmp_path: Path) -> None:
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
        messages=[ChatTurn(role="user", content="my card has not arrived")],
        output="Cards arrive within 5 working days.",
        finish_reason="stop",
        prompt_tokens=20,
        completion_tokens=9,
    )
    await service.on_inference(_logged("gen-1", generation=generation))
    await service.on_feedback(
        Envelope.wrap(FeedbackSubmitted(request_id="gen-1", corrected_answer="Order a new card."), source="/test")
    )
    assert service._book.open_windows() == [] and encoder.texts == []

    await service.on_inference(_logged("cls-1", generation=None))
    assert [w.key.model_name for w in service._book.open_windows()] == ["banking"]
