"""The stack of the end-to-end tests: every service its own process, as `make up` runs them, with
tiny settings (small snapshots, windows and canaries) so each loop closes in minutes. One stack per
module, torn down after it, so that nothing it runs loads the machine during the rest of the tests."""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path

import pytest
import yaml

from llmops_cli import stack
from llmops_config import PlatformSettings
from llmops_stack import free_port

GENERATIVE_EPOCHS = 4.0
GENERATIVE_TRAINER = {"generation_eval_examples": 8, "dpo_max_pairs": 48}
POLICY = """min_examples: 5
min_accuracy: 0.5
max_accuracy_drop: 0.05
max_latency_p95_ms: 2000
causal_lm:
  min_examples: 5
  max_exact_match_drop: 0.05
  max_rouge_l_drop: 0.05
"""


@pytest.fixture(scope="module")
def running_stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[PlatformSettings]:
    var_dir = tmp_path_factory.mktemp("e2e-var")
    policies = tmp_path_factory.mktemp("e2e-policies")
    (policies / "default.yaml").write_text(POLICY)
    environment = {
        "LLMOPS_FINE_TUNING_DEFAULTS_FILE": str(_training_defaults(policies / "training-defaults.yaml")),
        "LLMOPS_KAFKA_BOOTSTRAP_SERVERS": f"127.0.0.1:{free_port()}",
        "LLMOPS_KAFKA_CONTROLLER_PORT": str(free_port()),
        # Secured as `make up` runs it (the test session's default is plaintext): the loop runs under the ACLs.
        "LLMOPS_KAFKA_SECURITY_PROTOCOL": "SASL_PLAINTEXT",
        "LLMOPS_TRITON_HTTP_PORT": str(free_port()),
        "LLMOPS_TRITON_GRPC_PORT": str(free_port()),
        "LLMOPS_TRITON_METRICS_PORT": str(free_port()),
        "LLMOPS_GATEWAY_PORT": str(free_port()),
        "LLMOPS_OPS_PORT": str(free_port()),
        "LLMOPS_VAR_DIR": str(var_dir),
        "LLMOPS_LOG_FORMAT": "text",
        "LLMOPS_GATEWAY_API_KEYS": "e2e-key",
        "LLMOPS_GATEWAY_DEFAULT_MODEL": "e2e-intents",
        "LLMOPS_INGESTION_SNAPSHOT_EVERY_N_LABELLED": "100",
        "LLMOPS_INGESTION_SNAPSHOT_EVERY_N_INSTRUCTIONS": "100",
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
    # Jaeger (started by the stack when `make setup` built it) on ports of its own, like the rest.
    for name in ("OTLP_GRPC", "OTLP_HTTP", "UI", "QUERY_GRPC"):
        environment[f"LLMOPS_JAEGER_{name}_PORT"] = str(free_port())
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


def _training_defaults(path: Path) -> Path:
    """The shipped training defaults with the generative demo's tiny epochs (4) for every causal-lm
    job, the retraining monitoring asks for included: a retrained adapter that trained a quarter
    as long as its champion would lose to it at the gate for that reason alone. The trainer's own
    checks are smaller too (validation exact match on 8 conversations, DPO on at most 48 pairs):
    the loop is what is tested here; its retraining took 290 s with the shipped 32 and 2,000, 214 s
    with these."""
    shipped = Path(__file__).resolve().parents[2] / "deploy" / "training" / "defaults.yaml"
    defaults = yaml.safe_load(shipped.read_text())
    causal_lm = defaults["tasks"]["causal-lm"]
    causal_lm["hyperparameters"]["epochs"] = GENERATIVE_EPOCHS
    causal_lm["trainer"].update(GENERATIVE_TRAINER)
    path.write_text(yaml.safe_dump(defaults))
    return path
