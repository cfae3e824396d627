"""The generative loop on the real broker, both services in-process: an instructions snapshot of
40 BANKING-like conversations (customer message → intent name, the intents as the declared
labels), a ``causal-lm`` training request with tiny settings → ``training.completed`` (kind
causal_lm, the GGUF's hash in lineage) → ``evaluation.completed`` with a decision and a report
whose JSON and HTML show the generated answers next to the references."""

from __future__ import annotations

import asyncio
import html
import json
import uuid
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest
import torch
from aiokafka import AIOKafkaConsumer

from llmops_config import PlatformSettings
from llmops_config.kafka import kafka_client_options
from llmops_evaluation.main import EvaluationRuntime
from llmops_evaluation.settings import EvaluationSettings
from llmops_events import Envelope, KafkaRecord, decode
from llmops_events.topics import EVALUATIONS, TRAINING
from llmops_events.v1 import EvaluationCompleted, TrainingCompleted, TrainingFailed
from llmops_events.v1.training import Hyperparameters, TrainingTask
from llmops_fine_tuning.main import FineTuningRuntime
from llmops_fine_tuning.settings import FineTuningSettings
from llmops_fine_tuning.starter import request_training
from llmops_messaging import create_broker
from llmops_models.kinds.causal_lm.network import base_model_hash
from llmops_storage import ArtifactStore
from tests.causal_lm_data import LABELS, instruction_rows, write_instructions_snapshot

pytestmark = pytest.mark.integration

TINY = Hyperparameters(
    epochs=2, batch_size=8, max_length=64, lora_rank=4, target_modules=["q_proj", "v_proj"], learning_rate=5e-3
)
POLICY = """\
min_accuracy: 0.5
causal_lm:
  min_examples: 5
  min_format_validity: null
  max_prompt_leakage: 1.0
"""


class Loop:
    def __init__(self, platform: PlatformSettings, policy_dir: Path) -> None:
        self.platform = platform
        self.store = ArtifactStore(platform.resolved_artifact_store_uri)
        suffix = uuid.uuid4().hex[:8]
        self.training = FineTuningSettings(
            platform=platform,
            group_id=f"fine-tuning-lm-{suffix}",
            metrics_port=0,
            progress_interval_s=1,
            num_threads=1,  # one thread: steadier than two on a shared two-core machine
        )
        self.evaluation = EvaluationSettings(
            platform=platform,
            group_id=f"evaluation-lm-{suffix}",
            metrics_port=0,
            policy_dir=policy_dir,
            generation_max_new_tokens=16,
            generation_threads=1,
        )
        self.events: list[Envelope[Any]] = []

    async def read(self) -> None:
        consumer = AIOKafkaConsumer(
            TRAINING,
            EVALUATIONS,
            **kafka_client_options(self.platform, service="test").aiokafka(),
            auto_offset_reset="earliest",
            group_id=f"reader-{uuid.uuid4().hex}",
        )
        await consumer.start()
        try:
            while True:
                for records in (await consumer.getmany(timeout_ms=200)).values():
                    for m in records:
                        self.events.append(decode(KafkaRecord(m.key, m.value or b"", tuple(m.headers or ()))))
        finally:
            await consumer.stop()

    def of(self, kind: type, model: str) -> list[Any]:
        found = [e.data for e in self.events if isinstance(e.data, kind)]
        return [data for data in found if getattr(data, "model_name", None) == model]

    async def wait_for(self, kind: type, model: str, timeout: float) -> Any:
        async with asyncio.timeout(timeout):
            while not self.of(kind, model):
                failed = self.of(TrainingFailed, model)
                assert not failed, failed
                await asyncio.sleep(0.2)
        return self.of(kind, model)[0]


@pytest.fixture(scope="module")
async def loop(kafka_settings: PlatformSettings, tmp_path_factory: pytest.TempPathFactory) -> AsyncIterator[Loop]:
    threads = torch.get_num_threads()
    var_dir = tmp_path_factory.mktemp("causal-lm-loop")
    (var_dir / "policies").mkdir()
    (var_dir / "policies" / "default.yaml").write_text(POLICY)
    platform = kafka_settings.model_copy(update={"var_dir": var_dir, "artifact_store_uri": ""})
    harness = Loop(platform, var_dir / "policies")
    training, evaluation = FineTuningRuntime(harness.training), EvaluationRuntime(harness.evaluation)
    broker = create_broker(platform, service="causal-lm-test")
    await training.open()
    await evaluation.open()
    training.attach(broker)
    evaluation.attach(broker)
    await broker.start()
    reader = asyncio.get_running_loop().create_task(harness.read())
    try:
        yield harness
    finally:
        reader.cancel()
        await asyncio.gather(reader, return_exceptions=True)
        await broker.stop()
        await training.close()
        await evaluation.close()
        torch.set_num_threads(threads)


async def test_a_causal_lm_is_trained_then_judged_on_generated_answers(loop: Loop) -> None:
    dataset_id = f"chats-{uuid.uuid4().hex[:6]}"
    write_instructions_snapshot(loop.store, instruction_rows(10), dataset_id=dataset_id)
    model = f"intents-lm-{uuid.uuid4().hex[:6]}"
    await request_training(loop.training, model, None, hyperparameters=TINY, task=TrainingTask.CAUSAL_LM)

    completed: TrainingCompleted = await loop.wait_for(TrainingCompleted, model, timeout=300)
    assert completed.lineage["dataset_id"] == dataset_id and completed.lineage["task"] == "causal-lm"
    assert completed.lineage["base_model_weights_hash"] == base_model_hash("smollm2")
    manifest = loop.store.read_json(f"models/{model}/{completed.model_version}/manifest.json")
    assert manifest["kind"] == "causal_lm"

    decision: EvaluationCompleted = await loop.wait_for(EvaluationCompleted, model, timeout=300)
    assert decision.decision.value in {"approved", "rejected"} and decision.model_version == completed.model_version
    assert all(reason.rule and reason.message for reason in decision.reasons)
    metrics = decision.candidate_metrics
    assert metrics["examples"] == 8 and metrics["probes"] == 8
    assert {"exact_match", "rouge_l", "chrf", "format_validity", "pii_leakage", "prompt_leakage"} <= set(metrics)
    assert {"ttft_ms_p95", "tokens_per_s", "output_tokens_mean"} <= set(metrics)

    report = Path(decision.report_uri or "")
    document = json.loads((report.parent / "report.json").read_text())
    assert len(document["examples"]) == 8 and document["summary"]["decision"] == decision.decision.value
    assert all(example["reference"] in LABELS for example in document["examples"])
    page = report.read_text()
    assert "<html" in page.lower() and 'id="generated-examples"' in page
    assert all(html.escape(e["answer"]) in page and html.escape(e["prompt"]) in page for e in document["examples"])
    print(
        f"\ntraining {completed.metrics['train_examples_per_second']:.2f} examples/s; evaluation "
        f"{metrics['throughput_tokens_per_s']:.1f} tokens/s aggregate, exact match {metrics['exact_match']:.2f}, "
        f"decision {decision.decision.value} {[r.rule for r in decision.reasons]}"
    )
