"""The generative loop on the real stack (every service its own process, tiny settings): instruction
examples → LoRA adapter → gate → live on Triton → answers streamed through the gateway and rated
through SubmitFeedback → shifted traffic corrected by users → monitoring's retraining request →
SFT + DPO on the fresh snapshot → gate → canary → the new adapter serving; every event of the
retraining chain correlated by ``correlationid``."""

from __future__ import annotations

from typing import Any

import pytest

from llmops_cli.demo import EventLog
from llmops_cli.demo_generative import GenerativeDemoOptions, run_generative_demo
from llmops_config import PlatformSettings
from llmops_events.v1 import (
    DatasetSnapshotted,
    DeploymentPromoted,
    EvaluationCompleted,
    MonitoringDriftDetected,
    TrainingCompleted,
    TrainingReason,
    TrainingRequested,
    TrainingStarted,
)

pytestmark = [pytest.mark.e2e, pytest.mark.timeout(2400)]

MODEL = "e2e-assistant"


async def test_user_corrections_lead_to_a_new_adapter(running_stack: PlatformSettings) -> None:
    events = EventLog(running_stack)
    options = GenerativeDemoOptions(model_name=MODEL, data_dir=None, epochs=4.0, max_shift_windows=4, shift_share=0.6)

    exit_code = await run_generative_demo(running_stack, options, events=events)

    seen = [e for e in events.events if getattr(e.data, "model_name", None) == MODEL]
    assert exit_code == 0, _story(seen)
    retrain = next(
        e
        for e in seen
        if isinstance(e.data, TrainingRequested) and e.data.reason in (TrainingReason.DRIFT, TrainingReason.QUALITY)
    )
    assert retrain.data.requested_by == "monitoring" and retrain.data.task.value == "causal-lm"
    chain = [e for e in seen if e.correlationid == retrain.correlationid]
    kinds = {type(e.data) for e in chain}
    for expected in (
        MonitoringDriftDetected,
        TrainingRequested,
        TrainingStarted,
        TrainingCompleted,
        EvaluationCompleted,
    ):
        assert expected in kinds, f"{expected.__name__} missing from the chain: {_story(chain)}"
    detection = next(e.data for e in chain if isinstance(e.data, MonitoringDriftDetected))
    assert {"thumbs_down_share", "corrected_share"} & set(detection.breached), detection.breached

    # The retraining learned from the users: its snapshot holds their corrections and preference pairs.
    started = next(e.data for e in chain if isinstance(e.data, TrainingStarted))
    snapshot = next(
        e.data
        for e in events.events
        if isinstance(e.data, DatasetSnapshotted) and e.data.dataset_id == started.dataset_id
    )
    completed = next(e.data for e in chain if isinstance(e.data, TrainingCompleted))
    assert completed.metrics.get("dpo_pairs", 0) >= 16, completed.metrics
    assert snapshot.row_count > 0
    evaluation = next(e.data for e in chain if isinstance(e.data, EvaluationCompleted))
    if evaluation.decision.value == "approved":
        promoted = [e.data for e in chain if isinstance(e.data, DeploymentPromoted)]
        assert promoted and promoted[0].model_version == completed.model_version, _story(chain)


def _story(events: list[Any]) -> str:
    return "\n".join(f"{e.type} {getattr(e.data, 'model_version', '')} corr={e.correlationid}" for e in events)
