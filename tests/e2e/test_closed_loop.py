"""The closed loop on the real stack, every service its own process (as `make up` runs them),
with tiny settings: records → snapshot → training → evaluation → deployment → gateway traffic
with feedback → drift → monitoring's retraining request → a new version serving traffic; every
event of the retraining chain present and correlated by ``correlationid``."""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from llmops_cli import stack
from llmops_cli.demo import DemoOptions, EventLog, run_demo
from llmops_config import PlatformSettings
from llmops_events.v1 import (
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
from llmops_stack import free_port

pytestmark = [pytest.mark.e2e, pytest.mark.timeout(2400)]

MODEL = "e2e-intents"
POLICY = """min_examples: 5
min_accuracy: 0.5
max_accuracy_drop: 0.05
max_latency_p95_ms: 2000
"""


@pytest.fixture(scope="module")
def running_stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[PlatformSettings]:
    var_dir = tmp_path_factory.mktemp("e2e-var")
    policies = tmp_path_factory.mktemp("e2e-policies")
    (policies / "default.yaml").write_text(POLICY)
    environment = {
        "LLMOPS_KAFKA_BOOTSTRAP_SERVERS": f"127.0.0.1:{free_port()}",
        "LLMOPS_KAFKA_CONTROLLER_PORT": str(free_port()),
        "LLMOPS_TRITON_HTTP_PORT": str(free_port()),
        "LLMOPS_TRITON_GRPC_PORT": str(free_port()),
        "LLMOPS_TRITON_METRICS_PORT": str(free_port()),
        "LLMOPS_GATEWAY_PORT": str(free_port()),
        "LLMOPS_OPS_PORT": str(free_port()),
        "LLMOPS_VAR_DIR": str(var_dir),
        "LLMOPS_LOG_FORMAT": "text",
        "LLMOPS_GATEWAY_API_KEYS": "e2e-key",
        "LLMOPS_GATEWAY_DEFAULT_MODEL": MODEL,
        # Tiny settings: small snapshots, windows and canaries, so the loop closes in minutes.
        "LLMOPS_INGESTION_SNAPSHOT_EVERY_N_LABELLED": "100",
        "LLMOPS_EVALUATION_POLICY_DIR": str(policies),
        "LLMOPS_EVALUATION_LATENCY_EXAMPLES": "10",
        "LLMOPS_MONITORING_WINDOW_SIZE": "200",
        "LLMOPS_DEPLOYMENT_CANARY_MIN_REQUESTS": "20",
        "LLMOPS_DEPLOYMENT_CANARY_TRAFFIC_SHARE": "0.5",
        "LLMOPS_DEPLOYMENT_WARMUP_REQUESTS": "1",
        "LLMOPS_FINE_TUNING_PROGRESS_INTERVAL_S": "10",
    }
    for name in ("ingestion", "fine_tuning", "evaluation", "deployment", "gateway", "monitoring"):
        environment[f"LLMOPS_{name.upper()}_METRICS_PORT"] = str(free_port())
    saved = {name: os.environ.get(name) for name in environment}
    os.environ.update(environment)  # the services are child processes: they read the environment
    settings = PlatformSettings()
    try:
        stack.up(settings)
        yield settings
    finally:
        stack.down(settings)
        for name, value in saved.items():
            if value is None:
                os.environ.pop(name, None)
            else:
                os.environ[name] = value


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


def _story(events: list[Any]) -> str:
    return "\n".join(f"{e.type} {getattr(e.data, 'model_version', '')} corr={e.correlationid}" for e in events)
