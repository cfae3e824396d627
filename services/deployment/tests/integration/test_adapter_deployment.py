"""Adapter versions (model kind ``causal_lm``) deployed by the real service, on the real broker and
the real tritonserver: an approved version goes live as a LoRA adapter on the causal-LM model
(written and loaded once), a second one canaries on the same base without reloading it and is
promoted on its per-adapter counters, the replaced adapter's folder is removed while the base keeps
serving, and a version trained on other base weights is rolled back with ``base_model_mismatch``;
after Triton restarts, the reconciler loads the base back and the champion's adapter serves again.

The adapters are real PEFT LoRA adapters of SmolLM2 (``get_peft_model(...).save_pretrained``: LoRA's
B matrices start at zero, so they answer as the base does), published with the files the kernel
expects; their validation split is a real instructions snapshot (the smoke test's prompts)."""

from __future__ import annotations

import asyncio
import json
import shutil
import time
import uuid
from collections.abc import AsyncIterator
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
import tritonclient.grpc.aio as grpcclient
from aiokafka import AIOKafkaConsumer

from llmops_config import PlatformSettings
from llmops_config.kafka import kafka_client_options
from llmops_deployment.adapters.triton import TritonControl
from llmops_deployment.main import DeploymentRuntime
from llmops_deployment.settings import DeploymentSettings
from llmops_events import Envelope, KafkaRecord, decode
from llmops_events.topics import DEPLOYMENTS
from llmops_events.v1 import (
    Decision,
    DeploymentCanaryStarted,
    DeploymentPromoted,
    DeploymentRolledBack,
    EvaluationCompleted,
)
from llmops_messaging import EventPublisher, create_broker
from llmops_models import ModelRegistry, build_manifest, hash_folder, write_manifest
from llmops_models.kinds.causal_lm import serving as lm_serving
from llmops_serving import triton_name
from llmops_storage import ArtifactStore
from tests.causal_lm_data import instruction_rows, write_instructions_snapshot

pytestmark = pytest.mark.integration

POLICY = """\
causal_lm:
  min_requests: 3
  # Both adapters answer alike; on a shared two-core machine their timings jitter, so only a
  # large difference may roll the canary back here.
  max_ttft_ratio: 5.0
  ttft_slack_ms: 2000
  min_tokens_per_s_ratio: 0.1
"""
OTHER_WEIGHTS = "sha256:" + "0" * 64


def _build_adapter(folder: Path) -> str:
    """A LoRA adapter of the packaged SmolLM2 with the tokenizer and training config a trained
    artifact has; returns the base's weights hash."""
    from peft import LoraConfig, get_peft_model

    from llmops_models.kinds.causal_lm.network import base_model_hash, load_base_model, load_tokenizer

    base, base_folder = load_base_model("smollm2")
    config = LoraConfig(r=4, lora_alpha=8, target_modules=["q_proj", "v_proj"], task_type="CAUSAL_LM")
    get_peft_model(base, config).save_pretrained(str(folder / "adapter"))
    load_tokenizer(base_folder).save_pretrained(str(folder / "tokenizer"))
    weights = base_model_hash("smollm2")
    training_config = {"base_model": "smollm2", "base_model_weights_hash": weights, "max_length": 64}
    (folder / "training_config.json").write_text(json.dumps(training_config))
    (folder / "metrics.json").write_text("{}")
    return weights


def _publish(store: ArtifactStore, source: Path, model: str, version: int, dataset_id: str, weights: str) -> None:
    """``source`` as ``model``/``version`` of kind causal_lm, its adapter trained on ``weights``."""
    folder = source.parent / f"{model}-{version}"
    shutil.copytree(source, folder)
    training_config = json.loads((folder / "training_config.json").read_text())
    (folder / "training_config.json").write_text(json.dumps(training_config | {"base_model_weights_hash": weights}))
    lineage = {"request_id": f"r-{version}", "dataset_id": dataset_id, "base_model_weights_hash": weights}
    manifest = build_manifest(
        model_name=model,
        version=version,
        kind="causal_lm",
        files=hash_folder(folder),
        lineage=lineage,
        metrics={},
        created_at=datetime.now(UTC),
    )
    write_manifest(folder, manifest)
    ModelRegistry(store).publish(model, version, folder)


class Harness:
    def __init__(self, platform: PlatformSettings, model: str, policy_file: Path) -> None:
        self.platform = platform
        self.model = model
        self.settings = DeploymentSettings(
            platform=platform,
            group_id=f"deployment-{uuid.uuid4().hex[:8]}",
            model_names=[model],
            metrics_port=0,
            check_interval_s=0.5,
            reconcile_interval_s=1.0,
            retire_grace_s=0.5,
            canary_max_seconds=300,
            canary_policy_file=policy_file,
            # A causal-LM model of this test's own: other tests may load the default one.
            causal_lm_model=f"lm_{uuid.uuid4().hex[:8]}",
            causal_lm_max_running=4,
            causal_lm_max_new_tokens=64,
            torch_threads=1,  # one thread: steadier than two on a shared two-core machine
            smoke_generations=2,
            smoke_max_tokens=4,
        )
        self.events: list[Envelope[Any]] = []
        self.weights = ""
        """The hash of the base weights the adapters were built on."""
        self.runtime: DeploymentRuntime | None = None
        self.broker: Any = None

    async def start(self) -> None:
        self.runtime = DeploymentRuntime(self.settings)
        self.broker = create_broker(self.platform, service="deployment-test")
        await self.runtime.open()
        self.runtime.attach(self.broker)
        await self.broker.start()
        await self.runtime.begin()

    async def stop(self) -> None:
        assert self.runtime is not None
        await self.broker.stop()
        await self.runtime.close()

    async def read(self) -> None:
        consumer = AIOKafkaConsumer(
            DEPLOYMENTS,
            **kafka_client_options(self.platform, service="test").aiokafka(),
            auto_offset_reset="earliest",
            group_id=f"reader-{uuid.uuid4().hex}",
        )
        await consumer.start()
        try:
            while True:
                for records in (await consumer.getmany(timeout_ms=200)).values():
                    for m in records:
                        envelope = decode(KafkaRecord(m.key, m.value or b"", tuple(m.headers or ())))
                        if getattr(envelope.data, "model_name", None) == self.model:
                            self.events.append(envelope)
        finally:
            await consumer.stop()

    def found(self, kind: type, version: int) -> list[Any]:
        return [
            e.data
            for e in self.events
            if isinstance(e.data, kind) and getattr(e.data, "model_version", None) == version
        ]

    async def wait_for(self, kind: type, version: int, timeout: float = 300) -> Any:
        async with asyncio.timeout(timeout):
            while not (found := self.found(kind, version)):
                rolled_back = self.found(DeploymentRolledBack, version)
                assert kind is DeploymentRolledBack or not rolled_back, rolled_back[0].reason
                await asyncio.sleep(0.2)
        return found[0]

    async def approve(self, version: int) -> None:
        async with EventPublisher(self.platform, service="test") as publisher:
            await publisher.publish(
                EvaluationCompleted(
                    model_name=self.model,
                    model_version=version,
                    candidate_artifact_uri="unused",
                    decision=Decision.APPROVED,
                ),
            )


@dataclass(frozen=True)
class Source:
    """One adapter artifact folder (not yet published), its base's weights hash and the
    instructions snapshot its versions name as their dataset."""

    folder: Path
    weights: str
    dataset_id: str


@pytest.fixture(scope="module")
async def source(kafka_settings: PlatformSettings, tmp_path_factory: pytest.TempPathFactory) -> Source:
    store = ArtifactStore(kafka_settings.resolved_artifact_store_uri)
    dataset_id = f"chats-{uuid.uuid4().hex[:6]}"
    write_instructions_snapshot(store, instruction_rows(5), dataset_id=dataset_id)
    folder = tmp_path_factory.mktemp("adapters") / "adapter-source"
    weights = await asyncio.to_thread(_build_adapter, folder)
    (folder.parent / "canary.yaml").write_text(POLICY)
    return Source(folder, weights, dataset_id)


@pytest.fixture(scope="module")
async def harness(
    triton_settings: PlatformSettings, kafka_settings: PlatformSettings, source: Source
) -> AsyncIterator[Harness]:
    model = f"bot-{uuid.uuid4().hex[:6]}"
    store = ArtifactStore(kafka_settings.resolved_artifact_store_uri)
    for version, trained_on in ((1, source.weights), (2, source.weights), (3, OTHER_WEIGHTS)):
        _publish(store, source.folder, model, version, source.dataset_id, trained_on)
    h = Harness(kafka_settings, model, source.folder.parent / "canary.yaml")
    h.weights = source.weights
    reader = asyncio.get_running_loop().create_task(h.read())
    await h.start()
    try:
        yield h
    finally:
        if h.runtime is not None:
            await h.stop()
        reader.cancel()
        await asyncio.gather(reader, return_exceptions=True)
        client = grpcclient.InferenceServerClient(h.platform.triton_grpc_url)
        try:  # the session's Triton is shared: leave no base model of ours loaded
            await client.unload_model(h.settings.causal_lm_model)
        finally:
            await client.close()


async def _generate(triton: TritonControl, harness: Harness, version: int, count: int) -> None:
    adapter = triton_name(harness.model, version)
    for i in range(count):
        inputs = lm_serving.generation_inputs(
            [{"role": "user", "content": f"Where is my new card? ({i})"}], adapter=adapter, max_tokens=4
        )
        answer = await triton.generate(harness.settings.causal_lm_model, inputs, timeout_s=120)
        assert answer.finish_reason in {"stop", "length"} and not answer.error, answer


async def _requests_served(triton: TritonControl, adapter: str) -> float:
    counts = await triton.generation_counts(adapter)
    assert counts is not None
    return counts[0]


async def test_adapters_go_live_on_one_base_that_is_never_reloaded(harness: Harness) -> None:
    platform, base = harness.platform, harness.settings.causal_lm_model
    client = grpcclient.InferenceServerClient(platform.triton_grpc_url)
    triton = TritonControl(platform.triton_grpc_url, platform.triton_metrics_url)
    v1, v2 = triton_name(harness.model, 1), triton_name(harness.model, 2)
    began = time.monotonic()
    try:
        await harness.approve(1)
        promoted = await harness.wait_for(DeploymentPromoted, 1)
        first_s = time.monotonic() - began
        assert promoted.kind == "causal_lm" and promoted.previous_version is None
        assert await client.is_model_ready(base)
        assert not await client.is_model_ready(v1), "a version of an adapter is no Triton model of its own"
        adapters_dir = harness.settings.adapters_dir
        assert (adapters_dir / v1 / "adapter_config.json").is_file()
        parameters = (await client.get_model_config(base, as_json=True))["config"]["parameters"]
        assert parameters[lm_serving.ADAPTERS_DIR_PARAMETER]["string_value"] == str(adapters_dir)
        assert parameters[lm_serving.BASE_MODEL_HASH_PARAMETER]["string_value"] == harness.weights

        await _generate(triton, harness, 1, 2)
        served_v1 = await _requests_served(triton, v1)
        assert served_v1 >= 2 + harness.settings.smoke_generations

        began = time.monotonic()
        await harness.approve(2)
        canary = await harness.wait_for(DeploymentCanaryStarted, 2)
        second_s = time.monotonic() - began
        assert canary.kind == "causal_lm" and canary.champion_version == 1
        assert (adapters_dir / v2 / "adapter_config.json").is_file()
        # Reloading the base would have started its counters again from zero: v1's stand.
        assert await _requests_served(triton, v1) == served_v1
        assert await _requests_served(triton, v2) == harness.settings.smoke_generations

        # Champion and canary alike (the champion first: the canary's last request may promote it,
        # and the champion's adapter is gone once retired).
        for _ in range(harness.settings.generation_canary_policy.min_requests):
            await _generate(triton, harness, 1, 1)
            await _generate(triton, harness, 2, 1)
        promoted = await harness.wait_for(DeploymentPromoted, 2, timeout=120)
        assert promoted.kind == "causal_lm" and promoted.previous_version == 1
        assert "healthy over" in promoted.reason and "mean output" in promoted.reason

        async with asyncio.timeout(30):  # the replaced adapter's folder goes; the base stays
            while (adapters_dir / v1).exists():
                await asyncio.sleep(0.2)
        assert await client.is_model_ready(base)
        assert await _requests_served(triton, v1) >= served_v1, "never reloaded"
        await _generate(triton, harness, 2, 1)
        print(f"\nfirst adapter live (base written and loaded) in {first_s:.1f} s; second adapter in {second_s:.1f} s")
    finally:
        await client.close()
        await triton.close()


async def test_an_adapter_trained_on_other_base_weights_is_rolled_back(harness: Harness) -> None:
    await harness.wait_for(DeploymentPromoted, 2)
    await harness.approve(3)
    rolled_back = await harness.wait_for(DeploymentRolledBack, 3)
    assert rolled_back.kind == "causal_lm" and rolled_back.restored_version == 2
    assert rolled_back.reason.startswith("base_model_mismatch: trained on base model 'smollm2' with weights sha256:000")
    assert not (harness.settings.adapters_dir / triton_name(harness.model, 3)).exists()
    assert harness.runtime is not None and harness.runtime.service is not None
    assert harness.runtime.service.state(harness.model).champion_version == 2


async def test_after_triton_restarts_the_base_is_loaded_again_and_the_adapter_serves(
    kafka_settings: PlatformSettings, source: Source, tmp_path: Path
) -> None:
    """A Triton of the test's own, stopped and started again under the running service (explicit
    mode starts with nothing loaded): the reconciler loads the base back once, and the champion's
    adapter, still in its folder, answers again."""
    from llmops_stack import NullProgress, TritonComponent, TritonServer, free_port, repo_paths

    platform = kafka_settings.model_copy(
        update={
            "var_dir": tmp_path,
            "artifact_store_uri": kafka_settings.resolved_artifact_store_uri,
            "triton_http_port": free_port(),
            "triton_grpc_port": free_port(),
            "triton_metrics_port": free_port(),
            "ops_port": free_port(),
        }
    )
    paths = repo_paths()
    server = TritonComponent(TritonServer(platform, paths.triton_venv, paths.triton_backend_dir))
    model = f"restart-{uuid.uuid4().hex[:6]}"
    _publish(
        ArtifactStore(platform.resolved_artifact_store_uri), source.folder, model, 1, source.dataset_id, source.weights
    )
    await asyncio.to_thread(server.ensure_up, NullProgress())
    harness = Harness(platform, model, source.folder.parent / "canary.yaml")
    reader = asyncio.get_running_loop().create_task(harness.read())
    await harness.start()
    triton: TritonControl | None = None
    try:
        await harness.approve(1)
        await harness.wait_for(DeploymentPromoted, 1)
        await asyncio.to_thread(server.stop)
        await asyncio.to_thread(server.ensure_up, NullProgress())
        triton = TritonControl(platform.triton_grpc_url, platform.triton_metrics_url)
        async with asyncio.timeout(180):
            while not await triton.is_ready(harness.settings.causal_lm_model):
                await asyncio.sleep(0.5)
        assert (harness.settings.adapters_dir / triton_name(model, 1) / "adapter_config.json").is_file()
        await _generate(triton, harness, 1, 1)
        assert not harness.found(DeploymentRolledBack, 1)
    finally:
        if triton is not None:
            await triton.close()
        await harness.stop()
        reader.cancel()
        await asyncio.gather(reader, return_exceptions=True)
        await asyncio.to_thread(server.stop)
