"""The closed loops on the real stack, every service its own process (as `make up` runs them),
with tiny settings: records → snapshot → training → evaluation → deployment → gateway traffic
with feedback → drift → monitoring's retraining request → a new version serving traffic; every
event of the retraining chain present and correlated by ``correlationid``. Then the generative
loop on the same stack: user corrections → monitoring → SFT + DPO → gate → canary."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from llmops_cli.demo import DemoOptions, EventLog, run_demo
from llmops_cli.demo_generative import GenerativeDemoOptions, run_generative_demo
from llmops_config import PlatformSettings
from llmops_events.v1 import (
    DatasetSnapshotted,
    DeploymentCanaryStarted,
    DeploymentPromoted,
    DeploymentRequested,
    EvaluationCompleted,
    MonitoringDriftDetected,
    TrainingCompleted,
    TrainingReason,
    TrainingRequested,
    TrainingStarted,
)
from llmops_stack import repo_paths
from llmops_stack.jaeger import jaeger_binary
from tests.e2e.conftest import GENERATIVE_EPOCHS
from tests.jaeger_traces import RECORDS_TO_DEPLOYMENT, chain_trace, services_of

pytestmark = [pytest.mark.e2e, pytest.mark.timeout(2400)]

MODEL = "e2e-intents"


async def test_drift_leads_to_a_new_version_serving_traffic(running_stack: PlatformSettings) -> None:
    events = EventLog(running_stack)
    options = DemoOptions(model_name=MODEL, labels=4, per_label=30, epochs=2.0, data_dir=None, max_drift_windows=5)

    exit_code = await run_demo(running_stack, options, events=events)

    seen = [e for e in events.events if getattr(e.data, "model_name", None) == MODEL]
    assert exit_code == 0, _story(seen)
    retrain = next(
        e
        for e in seen
        if isinstance(e.data, TrainingRequested) and e.data.reason in (TrainingReason.DRIFT, TrainingReason.QUALITY)
    )
    assert retrain.data.requested_by == "monitoring" and retrain.data.evidence.get("report_uri")
    chain = [e for e in seen if e.correlationid == retrain.correlationid]
    kinds = {type(e.data) for e in chain}
    for expected in (
        MonitoringDriftDetected,
        TrainingRequested,
        TrainingStarted,
        TrainingCompleted,
        EvaluationCompleted,
        DeploymentRequested,
        DeploymentCanaryStarted,
        DeploymentPromoted,
    ):
        assert expected in kinds, f"{expected.__name__} missing from the chain: {_story(chain)}"
    new_version = next(e.data.model_version for e in chain if isinstance(e.data, TrainingCompleted))
    promoted = next(e.data for e in chain if isinstance(e.data, DeploymentPromoted))
    assert promoted.model_version == new_version >= 2
    assert Path(str(retrain.data.evidence["report_uri"]).removeprefix("file://")).exists()


# -- traces (#19): the first loop above is one trace in Jaeger, from the records to deployment ---------
async def test_a_records_way_to_deployment_is_one_trace_in_jaeger(running_stack: PlatformSettings) -> None:
    """After the drift test: ingestion's handling of the records, the snapshot their count set off,
    the training on it, its evaluation and the go-live of the approved version are one trace (each
    service its own process, linked by the events' ``traceparent``), found through Jaeger's HTTP
    query API. Skips when ``make setup`` could not build Jaeger (no Go)."""
    binary = jaeger_binary(repo_paths().root)
    if not binary.is_file():
        pytest.skip(f"{binary} is missing: `make setup` builds Jaeger when Go is installed")
    found, seen = await chain_trace(
        running_stack.jaeger_ui_url,
        RECORDS_TO_DEPLOYMENT,
        first_tags={"llmops.snapshot.trigger": "policy"},  # not the retraining chain's snapshot
        first_parent_service="llmops-ingestion",
        timeout_s=90,
    )
    assert found is not None, f"no trace runs through {RECORDS_TO_DEPLOYMENT} from the records; seen: {seen}"
    print(f"\ntrace {found['traceID']}: {len(found['spans'])} spans across {services_of(found)}")


GENERATIVE_MODEL = "e2e-assistant"


async def test_user_corrections_lead_to_a_new_adapter(running_stack: PlatformSettings) -> None:
    events = EventLog(running_stack)
    options = GenerativeDemoOptions(
        model_name=GENERATIVE_MODEL, data_dir=None, epochs=GENERATIVE_EPOCHS, max_shift_windows=4, shift_share=0.6
    )

    exit_code = await run_generative_demo(running_stack, options, events=events)

    seen = [e for e in events.events if getattr(e.data, "model_name", None) == GENERATIVE_MODEL]
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
